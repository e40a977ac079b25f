"""Weights packed once for many calls: ``pack_weight`` and ``PackedWeight``.

``indirect_gemm`` multiplies the input by the weight cut into panels of NR
output channels, each panel row NR values (``kernels.packing.pack_panels``).
Per call it builds those panels itself, and on a deep layer at batch 1 that
is a large share of the call: ResNet-50's 7x7x512 3x3 layer (a 9.4 MB weight)
took 3.5 ms packing per call against 2.2 ms with the panels made beforehand
(docs/design/decisions.md, "Packed weights are explicit").  For inference
the weight does not change between calls, so it can be packed once, as ONNX
Runtime does when it creates a session; this module is that step.

A ``PackedWeight`` holds a private, read-only copy of the weight next to its
panels, so a later in-place change to the caller's array cannot leave the
two out of step; ``np.asarray(packed)`` gives that copy back, so every
function that takes a weight also takes a ``PackedWeight``, and ``conv2d``
uses the panels wherever its plan is ``indirect_gemm`` in the weight's dtype.
Where its plan is ``winograd``, the weight's transform is made on the first
call and kept in the ``PackedWeight`` too (``derived``).
"""

from __future__ import annotations

import numpy as np

from . import _args, kernels, machine
from .algorithms.indirect_gemm import panel_shape, panel_strides

__all__ = ["PackedWeight", "pack_weight"]


class PackedWeight:
    """A conv2d weight and its ``indirect_gemm`` panels, made by :func:`pack_weight`.

    Read-only: its attributes cannot be reassigned and its arrays cannot be
    written, so the panels always match the weight.  Pickling packs again.

    Attributes
    ----------
    weight : numpy.ndarray
        A read-only copy of the weight (OIHW or HWIO, as packed).
    layout : str
        ``"NCHW"`` (OIHW weight) or ``"NHWC"`` (HWIO weight).
    groups : int
        The groups it was packed for; conv2d must be called with the same.
    """

    __slots__ = ("_weight", "_layout", "_groups", "_panels", "_isa", "_derived")

    def __init__(self, *args, _made_by_pack_weight=None):
        if _made_by_pack_weight is not _TOKEN:
            raise TypeError("PackedWeight: make one with numbaconv.pack_weight(weight, groups, "
                            "layout=...), not directly")
        weight, layout, groups, panels, isa = args
        object.__setattr__(self, "_weight", weight)
        object.__setattr__(self, "_layout", layout)
        object.__setattr__(self, "_groups", groups)
        object.__setattr__(self, "_panels", panels)  # (groups, panels, K, NR); None: depthwise
        object.__setattr__(self, "_isa", isa)  # the ISA variant whose NR cut the panels
        object.__setattr__(self, "_derived", {})  # other algorithms' forms, made on first use

    def __setattr__(self, name, value):
        raise AttributeError(f"PackedWeight is read-only; pack the new weight with "
                             f"pack_weight instead of setting {name!r}")

    def __reduce__(self):
        return (_repack, (self._weight, self._groups, self._layout.name))

    @property
    def weight(self) -> np.ndarray:
        return self._weight

    @property
    def layout(self) -> str:
        return self._layout.name

    @property
    def groups(self) -> int:
        return self._groups

    @property
    def isa(self) -> str:
        """The ISA variant whose register tile cut the panels (``numbaconv.machine``)."""
        return self._isa

    @property
    def shape(self) -> tuple[int, ...]:
        return self._weight.shape

    @property
    def dtype(self) -> np.dtype:
        return self._weight.dtype

    @property
    def nbytes(self) -> int:
        """Memory held: the weight's copy, its panels and the forms made so far."""
        return (self._weight.nbytes + (0 if self._panels is None else self._panels.nbytes)
                + sum(a.nbytes for a in list(self._derived.values())))

    def derived(self, key: tuple, make) -> np.ndarray:
        """``make()``, made once per ``key`` and kept: another algorithm's form of the weight.

        Winograd's transformed weight (4x the weight for F(4x4)) is one; it is
        made on the first call that needs it.  Read-only, like the panels.
        """
        value = self._derived.get(key)
        if value is None:
            value = make()
            value.flags.writeable = False
            value = self._derived.setdefault(key, value)  # two threads: one wins
        return value

    def __array__(self, dtype=None, copy=None):
        if dtype is None or np.dtype(dtype) == self.dtype:
            return self._weight.copy() if copy else self._weight
        if copy is False:  # NumPy 2's protocol: a cast is a copy
            raise ValueError(f"PackedWeight: a {np.dtype(dtype)} array of this {self.dtype} "
                             "weight needs a copy, and copy=False was given")
        return self._weight.astype(dtype)

    def __repr__(self) -> str:
        return (f"PackedWeight(shape={self.shape}, dtype={self.dtype}, layout={self.layout!r}, "
                f"groups={self.groups})")

    def panels_for(self, layout, groups, dtype: np.dtype) -> np.ndarray | None:
        """The panels for a conv2d call with these arguments, or None if they do not apply.

        A layout or groups that differ from the packing is the caller's
        mistake (the panels' order depends on both), so it raises; another
        compute dtype (a float64 input with a float32 weight), or panels cut
        for another ISA variant's register tile, just cannot be used, and the
        call runs from the weight as usual.
        """
        layout = _args.layout_of(layout)
        if layout != self._layout:
            raise ValueError(f"layout: the weight was packed for layout {self.layout!r}, got "
                             f"{layout.name!r}; pack it again with pack_weight(..., layout="
                             f"{layout.name!r})")
        groups = _args.groups_of(groups)
        if groups != self.groups:
            raise ValueError(f"groups: the weight was packed for groups={self.groups}, got "
                             f"groups={groups}")
        usable = np.dtype(dtype) == self.dtype and self._isa == machine.variant()
        return self._panels if usable else None


def pack_weight(weight, groups=1, *, layout="NCHW") -> PackedWeight:
    """Pack a conv2d weight once, for many calls with it (inference).

    Pass the result to :func:`conv2d` (or ``conv2d_with``, ``explain``) in
    place of the weight, with the same ``layout`` and ``groups``.  Where
    conv2d's plan is ``indirect_gemm``, it then reads the ready panels
    instead of building them on every call, and the dispatcher also picks
    ``indirect_gemm`` for deep layers (K > 2304) that would otherwise take
    ``im2col_gemm``: ResNet-50's 7x7x512 3x3 layer then took 0.66x (batch 1)
    and 0.82x (batch 8) of im2col_gemm's time (docs/performance.md).

    The weight is copied: changing the original afterwards does not change
    the packed one.  Memory: about twice the weight (the copy and panels
    padded to a whole register tile's NR output channels per group).

    Parameters
    ----------
    weight : array_like
        ``(O, C/groups, KH, KW)`` for ``layout="NCHW"``, ``(KH, KW, C/groups, O)``
        for ``"NHWC"``; float32 or float64.
    groups : int
        The ``groups`` of the convolutions it will be used in.
    layout : {"NCHW", "NHWC"}

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 64, 28, 28), dtype=np.float32)
    >>> w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    >>> packed = numbaconv.pack_weight(w)
    >>> packed
    PackedWeight(shape=(64, 64, 3, 3), dtype=float32, layout='NCHW', groups=1)
    >>> y = numbaconv.conv2d(x, packed, padding=1)
    >>> bool(np.allclose(y, numbaconv.conv2d(x, w, padding=1), atol=1e-4))
    True
    """
    layout = _args.layout_of(layout)
    w = _args.as_float_array(weight, "weight")
    _args.ensure_ndim(w, "weight", (4,), f"in {layout.weight_name} order")
    groups = _args.groups_of(groups)
    o, ci, kh, kw = layout.w_dims(w.shape)
    if min(o, ci, kh, kw) < 1:
        raise ValueError(f"weight: expected every dimension >= 1, got shape {w.shape}")
    if o % groups:
        raise ValueError(f"groups: output channels {o} are not divisible by groups={groups}")
    w = np.array(w, dtype=_args.native(w.dtype), order="C")  # a private copy
    w.flags.writeable = False
    panels = None
    isa = machine.variant()
    if not (ci == 1 and groups > 1):  # depthwise runs direct_depthwise: no panels
        k = ci * kh * kw
        panels = np.empty(panel_shape(groups, o // groups, k, w.dtype, isa), w.dtype)
        w_k, w_o = panel_strides(layout, o, k)
        kernels.get("pack_panels", "ANY", w.dtype.name, isa)(w.reshape(-1), w_k, w_o, panels)
        panels.flags.writeable = False
    return PackedWeight(w, layout, groups, panels, isa, _made_by_pack_weight=_TOKEN)


_TOKEN = object()  # only pack_weight makes a PackedWeight: its panels match its weight


def _repack(weight: np.ndarray, groups: int, layout: str) -> PackedWeight:
    """Unpickling: pack the weight again (the panels depend on this machine's NR)."""
    return pack_weight(weight, groups, layout=layout)
