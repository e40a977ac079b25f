"""A toy algorithm: a naive direct convolution, known only to the tests.

It shows what adding an algorithm takes: this module, whose ``ALGORITHM``
says which problems it runs, how it plans and how it runs, plus one
``numbaconv.algorithms.register(ALGORITHM)``.  It reads the layout as data
(``x_axes``, ``w_axes``, ``from_nchw``), never by name.
"""

import numpy as np

from numbaconv import _activation
from numbaconv.algorithms import Algorithm


def unsupported(problem):
    mode = problem.geometry.padding_mode
    return None if mode == "zeros" else f"needs padding_mode='zeros', got {mode!r}"


def plan(problem):
    return problem.plan("toy_direct")


def run(plan, x, w, bias, out, panels=None, act=0):
    """out[n, o, p, q] = sum of x[n, c, h, col] * w[o, c, i, j] over the taps inside x."""
    g, layout = plan.geometry, plan.layout
    xn, wn = x.transpose(layout.x_axes), w.transpose(layout.w_axes)  # NCHW, OIHW views
    (sh, sw), (dh, dw), (top, _, left, _) = g.stride, g.dilation, g.pads
    y = np.zeros((g.n, g.o, g.p, g.q))
    for o in range(g.o):
        c0 = (o // g.og) * g.cg
        for p in range(g.p):
            for i in range(g.kh):
                h = p * sh - top + i * dh
                if not 0 <= h < g.h:
                    continue
                for q in range(g.q):
                    for j in range(g.kw):
                        col = q * sw - left + j * dw
                        if 0 <= col < g.w:
                            y[:, o, p, q] += xn[:, c0:c0 + g.cg, h, col] @ wn[o, :, i, j]
    if bias is not None:
        y += bias[None, :, None, None]
    _activation.apply(y, act)
    out[...] = y.transpose(layout.from_nchw)


ALGORITHM = Algorithm("toy_direct", plan=plan, run=run, unsupported=unsupported,
                      describe=lambda plan: "none")
