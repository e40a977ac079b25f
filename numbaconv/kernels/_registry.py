"""Kernels declare their Numba signature where they are defined: ``@kernel(kind, layout, ...)``.

Argument kinds, in order: ``"tile"`` the register tile
(``machine.RegisterTile``; the kernel is then compiled per ISA variant),
``"x_in"``/``"x_out"`` activations (4-d), ``"c1_*"``/``"c2_*"`` flat or 2-d
buffers, ``"i"`` int64 scalars, ``"t1"``/``"t2"`` int64 index tables.
Inputs (``*_in``, tables) are typed read-only, so that a caller's read-only
array is accepted without a copy.  ``_factory`` compiles them on first use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelSpec:
    pyfunc: object
    args: tuple
    disk_cache: bool

    @property
    def takes_tile(self) -> bool:
        return bool(self.args) and self.args[0] == "tile"


KERNELS: dict[tuple[str, str], KernelSpec] = {}


def kernel(kind: str, layout: str, *args: str, disk_cache: bool = True):
    """Register the decorated function as the (kind, layout) kernel with these argument kinds.

    ``layout`` is ``"NCHW"``, ``"NHWC"``, or ``"ANY"`` for a kernel that takes
    its layout as data.  ``disk_cache=False`` keeps it out of Numba's disk cache.
    """

    def register(pyfunc):
        KERNELS[kind, layout] = KernelSpec(pyfunc, args, disk_cache)
        return pyfunc

    return register
