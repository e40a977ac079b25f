"""The plain-NumPy baseline and the peers: the libraries numbaconv is timed against.

``PEERS`` is the one registry of them: a :class:`Peer` record per peer
(its setup, the modules it needs, whether it runs only when named, its
plot colour).  The command line (``--compare``), the isolated worker, the
plot, the pytest-benchmark suite under ``benchmarks/`` and the peer tests
(``tests/test_peers.py``) all read it, so a peer added here is checked
against the reference at once.

A setup is ``setup(layer, x, w, layout, threads=None)``: it returns a
zero-argument callable that computes the convolution and returns a NumPy
array, or raises :class:`PeerUnsupported` for a problem it cannot run.
``threads=None`` means numbaconv's current count (the row's, in
``bench_one``); the isolated worker, which has no Numba, passes the row's
count.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import sys
from collections.abc import Callable

import numpy as np

from .._args import layout_of
from .suites import Layer


class PeerUnsupported(NotImplementedError):
    """A peer cannot run this problem (e.g. ONNX Runtime's CPU Conv has no float64)."""


def _error_text(err: BaseException) -> str:
    """A peer's failure as its row reports it."""
    return f"{type(err).__name__}: {err}"


def numpy_conv2d(x, w, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """The tutorial recipe: np.pad, one strided-slice copy per tap, then ``@``.

    The plain-NumPy baseline of ``numbaconv bench`` (``--compare numpy``).

    Examples
    --------
    >>> import numpy as np
    >>> from numbaconv.bench import numpy_conv2d
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> numpy_conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[10., 18.],
           [42., 50.]])
    """
    s, p, d = stride, padding, dilation
    lay = layout_of(layout)
    n, c, h, wd = lay.x_dims(x.shape)
    o, cg, k, _ = lay.w_dims(w.shape)
    pads = [(0, 0)] * 4
    for axis in lay.spatial_axes:
        pads[axis] = (p, p)
    xp = np.pad(x, pads)
    ph = (h + 2 * p - d * (k - 1) - 1) // s + 1
    pw = (wd + 2 * p - d * (k - 1) - 1) // s + 1
    g, og = groups, o // groups
    if not lay.channels_last:
        cols = np.empty((n, c, k, k, ph, pw), x.dtype)
        for i in range(k):
            for j in range(k):
                cols[:, :, i, j] = xp[:, :, i * d : i * d + s * ph : s, j * d : j * d + s * pw : s]
        out = w.reshape(g, og, cg * k * k) @ cols.reshape(n, g, cg * k * k, ph * pw)
        return out.reshape(n, o, ph, pw)
    cols = np.empty((n, ph, pw, k, k, c), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j] = xp[:, i * d : i * d + s * ph : s, j * d : j * d + s * pw : s]
    a = cols.reshape(n * ph * pw, k * k, g, cg).transpose(2, 0, 1, 3).reshape(g, -1, k * k * cg)
    b = w.reshape(k * k, cg, g, og).transpose(2, 0, 1, 3).reshape(g, k * k * cg, og)
    return (a @ b).transpose(1, 0, 2).reshape(n, ph, pw, o)


def _peer_threads(threads: int | None) -> int:
    """The thread count a peer runs with: ``threads``, or else numbaconv's current count."""
    if threads is not None:
        return threads
    from .. import _threads

    return _threads.get_num_threads()


def _numpy_peer(layer: Layer, x, w, layout: str, threads: int | None = None):
    # BLAS threads are set around the whole row (threadpoolctl), not here.
    if layer.rank != 2:
        raise PeerUnsupported("numpy: the plain-NumPy baseline is 2-d only")
    kw = layer.conv_kwargs()
    return lambda: numpy_conv2d(x, w, layout=layout, **kw)


def _torch_peer(layer: Layer, x, w, layout: str, threads: int | None = None):
    """torch.nn.functional.conv1d/2d/3d; channels-last runs in torch's channels_last format.

    2-d and 3-d channels-last inputs are torch's ``channels_last`` /
    ``channels_last_3d`` memory formats (the NHWC buffer seen as NCHW);
    torch has no such format in 1-d, so an NWC input is passed as a
    permuted (strided) view, which torch copies.  Uses the row's thread
    count (``torch.set_num_threads``).
    """
    import torch

    torch.set_num_threads(_peer_threads(threads))
    kw = layer.conv_kwargs()
    lay = layer.layout(layout)
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
            3: torch.nn.functional.conv3d}[layer.rank]
    r = layer.rank
    if not lay.channels_last:
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    else:  # the channels-last buffer, seen as channels first
        xt = torch.from_numpy(x).movedim(-1, 1)
        wt = torch.from_numpy(np.ascontiguousarray(
            w.transpose((r + 1, r) + tuple(range(r)))))
        if r > 1:
            fmt = torch.channels_last if r == 2 else torch.channels_last_3d
            wt = wt.contiguous(memory_format=fmt)

    def call():
        with torch.no_grad():
            y = conv(xt, wt, **kw)
        return y.numpy() if not lay.channels_last else y.movedim(1, -1).numpy()

    return call


def _onnxruntime_peer(layer: Layer, x, w, layout: str, threads: int | None = None, *,
                      nchwc: bool = True):
    """A one-node ONNX ``Conv`` model run by an ONNX Runtime CPU session.

    The model is built with the ``onnx`` helper API, the weight stored in it
    as an initializer (as in a deployed model).  The session runs with
    ``intra_op_num_threads`` = the row's thread count and
    ``inter_op_num_threads = 1``.  ONNX ``Conv`` is NCHW/OIHW only, so for
    NHWC the timed call includes transposing the input to NCHW and the
    output back to NHWC (the weight is transposed once, outside the timing).
    ONNX Runtime's CPU ``Conv`` has no float64 kernel: float64 rows raise
    :class:`PeerUnsupported` and are reported as n/a.

    With its default optimisations (``nchwc=True``, peer ``onnxruntime``), on
    a CPU with AVX2 or better, ONNX Runtime rewrites the node as a direct
    convolution on channel-blocked data (its ``NchwcTransformer``: the
    weight reordered once, when the session is made; the input reordered
    to NCHW8c and the output back inside each call).  ``nchwc=False``
    (peer ``onnxruntime_gemm``) turns that one optimizer off, which leaves
    its plain ``Conv``: im2col and MLAS's SGEMM, the same algorithm family
    as numbaconv's, for telling the algorithm's share of a gap from the
    implementation's.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    if x.dtype != np.float32:
        raise PeerUnsupported(f"onnxruntime: Conv has no CPU kernel for {x.dtype}")
    lay, r = layer.layout(layout), layer.rank
    if lay.channels_last:  # to (O, I, *K): a view
        w = w.transpose((r + 1, r) + tuple(range(r)))
    k, s, p, d = layer.kernel, layer.stride, layer.padding, layer.dilation
    n, c, sizes = lay.x_dims(x.shape)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k] * r, strides=[s] * r,
                            pads=[p] * (2 * r), dilations=[d] * r, group=layer.groups)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, c, *sizes])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w), "w")])
    # Opset 13 with the IR version it came with, so that older runtimes load it too.
    model = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = _peer_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=[] if nchwc else ["NchwcTransformer"])
    if not lay.channels_last:
        return lambda: session.run(None, {"x": x})[0]

    def call():
        y = session.run(None, {"x": np.ascontiguousarray(np.moveaxis(x, -1, 1))})[0]
        return np.ascontiguousarray(np.moveaxis(y, 1, -1))

    return call


def _jax_peer(layer: Layer, x, w, layout: str, threads: int | None = None):
    """``jax.lax.conv_general_dilated``, jitted, on the CPU backend.

    ``dimension_numbers`` is ``("NCHW", "OIHW", "NCHW")`` or
    ``("NHWC", "HWIO", "NHWC")``, so both layouts are native.  Inputs are
    placed on the device once; each timed call runs the compiled function
    and waits for it (``block_until_ready``).  float64 runs inside
    ``jax.enable_x64``.  XLA sizes its CPU thread pool once, when JAX starts,
    so ``--threads`` does not apply to this peer: it uses every core (set
    ``XLA_FLAGS`` before the run to change that).
    """
    import jax

    s, p, d, r = layer.stride, layer.padding, layer.dilation, layer.rank
    lay = layer.layout(layout)
    dims = (lay.name, lay.weight_name, lay.name)
    fn = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, window_strides=(s,) * r, padding=[(p, p)] * r, rhs_dilation=(d,) * r,
        dimension_numbers=dims, feature_group_count=layer.groups))
    x64 = x.dtype == np.float64
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is None:  # pragma: no cover - jax < 0.6
        from jax.experimental import enable_x64
    with enable_x64(x64):
        xa, wa = jax.device_put(x), jax.device_put(w)

    def call():
        with enable_x64(x64):
            return np.asarray(fn(xa, wa).block_until_ready())

    return call


@dataclasses.dataclass(frozen=True)
class Peer:
    """One peer: how to set it up, what it needs, and how the sweep treats it.

    Calling a peer calls its setup: ``PEERS["numpy"](layer, x, w, layout)``.

    Examples
    --------
    >>> from numbaconv.bench import PEERS
    >>> PEERS["onnxruntime"].modules, PEERS["onnxruntime_gemm"].asked_only
    (('onnxruntime', 'onnx'), True)
    """

    name: str
    # setup(layer, x, w, layout, threads=None) -> a zero-argument callable (module docstring)
    setup: Callable
    modules: tuple[str, ...]  # all of them must be importable for the peer to run
    # Timed only when ``--compare`` names it: a diagnostic, not what a user
    # of that library gets by default.
    asked_only: bool = False
    colour: str | None = None  # its bars in the plot
    # It computes on BLAS's threads (NumPy's ``@``), which the isolated
    # worker limits to the row's count around each row; the other peers
    # set their own threads.
    blas_threads: bool = False

    def __call__(self, *args, **kwargs):
        return self.setup(*args, **kwargs)

    def installed(self) -> bool:
        """Whether every module it needs can be imported (found, not imported)."""
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


PEERS: dict[str, Peer] = {peer.name: peer for peer in (
    Peer("numpy", _numpy_peer, ("numpy",), colour="#7f7f7f", blas_threads=True),
    Peer("torch", _torch_peer, ("torch",), colour="#ff7f0e"),
    Peer("onnxruntime", _onnxruntime_peer, ("onnxruntime", "onnx"), colour="#2ca02c"),
    Peer("jax", _jax_peer, ("jax", "jaxlib"), colour="#9467bd"),
    Peer("onnxruntime_gemm", functools.partial(_onnxruntime_peer, nchwc=False),
         ("onnxruntime", "onnx"), asked_only=True, colour="#98df8a"),
)}


def available_peers() -> list[str]:
    """The peers whose modules are installed, in ``PEERS`` order.

    Examples
    --------
    >>> from numbaconv.bench import available_peers
    >>> available_peers()[0]
    'numpy'
    """
    return [name for name, peer in PEERS.items() if peer.installed()]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def choose_peers(compare: list[str] | None,
                 note: Callable[[str], None] = _stderr) -> list[str]:
    """The peers a sweep times: those ``--compare`` names, or by default the installed ones.

    By default (``compare`` None) every installed peer but the asked-only
    ones.  A named peer that is not installed is left out with a note
    (``note(text)``, by default to stderr); a name twice counts once.

    Raises
    ------
    ValueError
        An unknown name; the message starts with ``--compare:``.

    Examples
    --------
    >>> from numbaconv.bench import choose_peers
    >>> choose_peers(["numpy", "numpy"])
    ['numpy']
    >>> "onnxruntime_gemm" in choose_peers(None)
    False
    """
    installed = available_peers()
    if compare is None:
        return [name for name in installed if not PEERS[name].asked_only]
    chosen = []
    for name in compare:
        if name not in PEERS:
            raise ValueError(f"--compare: unknown peer {name!r}; known: {', '.join(PEERS)}")
        if name not in installed:
            note(f"note: --compare {name}: {name} is not installed; going on without it")
        elif name not in chosen:
            chosen.append(name)
    return chosen
