"""Hostile arguments to every public function: a clear error or the right result.

Hypothesis replaces one or two arguments of a valid call with a value from
HOSTILE (None, strings, nan/inf, bools, huge and negative ints, NumPy scalars
and 0-d arrays, wrong-length and nested tuples, arrays of every unsupported
dtype, empty and ragged arrays, other layouts' packed weights...).  Each call must

* raise ValueError or TypeError whose one-line message starts with the name
  of one of the function's arguments, or MemoryError naming the size; or
* return what the same call gives with the value in its plain form (a NumPy
  integer as an int, an array-like as a contiguous ndarray): the forms a
  user may pass must not change the answer;

and never change an input array.  Anything else (IndexError, OverflowError,
ZeroDivisionError, a Numba typing error) fails.  Sizes that would not fit in
memory run in a subprocess (``test_sizes_that_do_not_fit_fail_fast``), so
that a crash fails the test instead of the run.
"""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from checks import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv import _args

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)
W = RNG.standard_normal((6, 4, 3, 3)).astype(np.float32)
B = RNG.standard_normal(6).astype(np.float32)
G = RNG.standard_normal((2, 6, 8, 8)).astype(np.float32)
XT = RNG.standard_normal((2, 6, 5, 5)).astype(np.float32)
COLS = numbaconv.im2col(X, 3, padding=1)
X1, W1 = X[:, :, 0], W[:, :, 0]  # 1-d: (N, C, W), (O, I, K)
X3 = RNG.standard_normal((2, 4, 3, 5, 5)).astype(np.float32)
W3 = RNG.standard_normal((6, 4, 2, 3, 3)).astype(np.float32)


class _Odd:
    def __repr__(self):
        return "<odd object>"


SCALARS = [
    None, "", "1", "same", "valid", "NCHW", "NHWC", "nhwc", "zeros", b"1", 1.5, 0.0, math.nan,
    math.inf, -math.inf, 1j, True, False, 0, 1, 2, -1, -(2**40), 2**31, 2**40, 2**63, 2**64,
    np.int64(2), np.int32(1),
    np.uint8(1), np.uint64(2**63), np.float64(1.0), np.bool_(True), np.array(1), np.array(1.0),
    np.array([1, 1]), np.array([2, 1], np.int8), np.array([1.0, 1.0]), np.array([[1]]), (), (1,),
    (1, 1, 1), ((1, 1),), ((1, 1), (1,)), ((1, 1), (1, 1), (1, 1)), (((1, 1), (1, 1)), 1),
    [[1, 2], [3, 4]], (None, None), ("a", 1), (1.0, 1), (np.int64(1), np.int64(2)), (2**40, 1),
    (1, -1), (True, 1), [1, 1], range(2), _Odd(), {}, {"a": 1}, np.float32, "float16",
]
ARRAYS = [
    np.zeros((0, 4, 8, 8), np.float32), np.zeros((2, 0, 8, 8), np.float32),
    np.zeros((2, 4, 0, 8), np.float32), np.zeros((2, 4, 8, 0), np.float32),
    X.astype(np.float16), X.astype(np.int32), X.astype(bool), X.astype(np.complex64),
    X.astype(object), X.astype(np.longdouble), [[[[1.0, 2.0], [3.0]]]], np.zeros(()), 1.0,
    X.tolist(), np.broadcast_to(np.float32(1), X.shape), X[:, :, ::2], X.astype(">f4"),
    X.transpose(0, 1, 3, 2), np.zeros((2, 4, 1, 1), np.float32), np.zeros((6, 4, 9, 9)),
    np.zeros((6, 4, 3, 3, 1), np.float32), B[None], np.full(X.shape, np.nan, np.float32),
    np.full(X.shape, np.inf), np.ma.array(X), X[0], W[:, :2], G.astype(np.float64),
]
PACKED = [numbaconv.pack_weight(W), numbaconv.pack_weight(W.astype(np.float64)),
          numbaconv.pack_weight(RNG.standard_normal((6, 2, 3, 3)).astype(np.float32), groups=2),
          numbaconv.pack_weight(np.ascontiguousarray(W.transpose(2, 3, 1, 0)), layout="NHWC")]
if torch is not None:  # CPU tensors are array-likes: accepted as their NumPy view
    ARRAYS += [torch.from_numpy(X.copy()), torch.ones(6, 4, 3, 3, dtype=torch.float64),
               torch.ones(2, 4, 8, 8, requires_grad=True),  # refused: detach() it first
               torch.ones(2, 4, 8, 8, dtype=torch.bfloat16)]
HOSTILE = SCALARS + ARRAYS + PACKED

CALLS = {
    "conv2d": (numbaconv.conv2d, dict(x=X, weight=W, bias=B, stride=1, padding=1, dilation=1,
                                      groups=1, layout="NCHW", padding_mode="zeros",
                                      activation="relu")),
    "conv2d_with": (numbaconv.conv2d_with, dict(x=X, weight=W, bias=B, stride=2, padding="same",
                                                dilation=1, groups=1, layout="NCHW",
                                                padding_mode="reflect", activation="silu",
                                                algorithm="auto")),
    "explain": (numbaconv.explain, dict(x=X, weight=W, bias=B, stride=1, padding=1, dilation=2,
                                        groups=1, layout="NCHW", padding_mode="zeros",
                                        dtype=None, algorithm="auto")),
    "im2col": (numbaconv.im2col, dict(x=X, kernel_size=3, stride=1, padding=1, dilation=1,
                                      layout="NCHW", padding_mode="zeros")),
    "col2im": (numbaconv.col2im, dict(cols=COLS, output_size=(8, 8), kernel_size=3, stride=1,
                                      padding=1, dilation=1, layout="NCHW")),
    "conv2d_backward": (numbaconv.conv2d_backward, dict(
        grad_out=G, x=X, weight=W, stride=1, padding=1, dilation=1, groups=1, layout="NCHW",
        padding_mode="zeros", needs=(True, True, True))),
    "conv2d_grad_input": (numbaconv.conv2d_grad_input, dict(
        input_size=X.shape, weight=W, grad_out=G, stride=1, padding=1, dilation=1, groups=1,
        layout="NCHW", padding_mode="zeros")),
    "conv2d_grad_weight": (numbaconv.conv2d_grad_weight, dict(
        x=X, weight_size=W.shape, grad_out=G, stride=1, padding=1, dilation=1, groups=1,
        layout="NCHW", padding_mode="zeros")),
    "conv_transpose2d": (numbaconv.conv_transpose2d, dict(
        x=XT, weight=W[:, :4].copy(), bias=B[:4].copy(), stride=2, padding=1, output_padding=1,
        groups=1, dilation=1, layout="NCHW", output_size=None)),
    "pack_weight": (numbaconv.pack_weight, dict(weight=W, groups=1, layout="NCHW")),
    "Conv2d": (lambda **kw: numbaconv.Conv2d(**kw).forward(X), dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=1, padding=1, dilation=1, groups=1,
        bias=True, padding_mode="zeros", layout="NCHW", activation="relu6", dtype=np.float32,
        rng=0)),
    "ConvTranspose2d": (lambda **kw: numbaconv.ConvTranspose2d(**kw).forward(XT[:, :4]), dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=0,
        groups=1, bias=True, dilation=1, padding_mode="zeros", layout="NCHW",
        dtype=np.float32, rng=0)),
    "Conv2d.forward": (lambda x: numbaconv.Conv2d(4, 6, 3, padding=1, rng=0).forward(x),
                       dict(x=X)),
    "conv1d": (numbaconv.conv1d, dict(x=X1, weight=W1, bias=B, stride=2, padding="same",
                                      dilation=1, groups=1, layout="NCW",
                                      padding_mode="reflect", activation="relu")),
    "conv3d": (numbaconv.conv3d, dict(x=X3, weight=W3, bias=B, stride=(1, 2, 1), padding=1,
                                      dilation=1, groups=1, layout="NCDHW",
                                      padding_mode="circular", activation="relu6")),
    "conv1d_backward": (numbaconv.conv1d_backward, dict(
        grad_out=G[:, :, 0], x=X1, weight=W1, stride=1, padding=1, dilation=1, groups=1,
        layout="NCW", padding_mode="zeros", needs=(True, True, True))),
    "conv3d_backward": (numbaconv.conv3d_backward, dict(
        grad_out=numbaconv.conv3d(X3, W3, padding=1), x=X3, weight=W3, stride=1, padding=1,
        dilation=1, groups=1, layout="NCDHW", padding_mode="zeros", needs=(True, True, True))),
    "conv_transpose1d": (numbaconv.conv_transpose1d, dict(
        x=XT[:, :4, 0], weight=W1[:4].copy(), bias=B, stride=2, padding=1, output_padding=1,
        groups=1, dilation=1, layout="NCW", output_size=None)),
    "conv_transpose3d": (numbaconv.conv_transpose3d, dict(
        x=X3, weight=W3[:4].copy(), bias=B, stride=2, padding="same", output_padding=0,
        groups=1, dilation=1, layout="NCDHW", output_size=None)),
    "Conv1d": (lambda **kw: numbaconv.Conv1d(**kw).forward(X1), dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=1, padding=1, dilation=1, groups=1,
        bias=True, padding_mode="zeros", layout="NCW", activation="silu", dtype=np.float32,
        rng=0)),
    "Conv3d": (lambda **kw: numbaconv.Conv3d(**kw).forward(X3), dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=1, padding=1, dilation=1, groups=1,
        bias=True, padding_mode="zeros", layout="NCDHW", activation="relu", dtype=np.float32,
        rng=0)),
    "ConvTranspose1d": (lambda **kw: numbaconv.ConvTranspose1d(**kw).forward(X1), dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=0,
        groups=1, bias=True, dilation=1, padding_mode="zeros", layout="NCW",
        dtype=np.float32, rng=0)),
    "ConvTranspose3d": (lambda **kw: numbaconv.ConvTranspose3d(**kw).forward(X3), dict(
        in_channels=4, out_channels=6, kernel_size=2, stride=2, padding=0, output_padding=0,
        groups=1, bias=True, dilation=1, padding_mode="zeros", layout="NCDHW",
        dtype=np.float32, rng=0)),
    "threads": (lambda n: _in_threads(n), dict(n=1)),
    "set_num_threads": (lambda n: _set_and_restore(n), dict(n=1)),
}


def _in_threads(n):
    with numbaconv.threads(n):
        pass


def _set_and_restore(n):
    before = numbaconv.get_num_threads()
    try:
        numbaconv.set_num_threads(n)
    finally:
        numbaconv.set_num_threads(before)


def names_of(function: str) -> set[str]:
    """The argument names an error of this call may begin with."""
    call, base = CALLS[function]
    names = set(base)
    if function.startswith(("Conv1d", "Conv2d", "Conv3d", "ConvTranspose")):
        names |= {"weight", "bias", "x", "kernel_size"}
    return names


ARRAY_ARGUMENTS = {"x", "weight", "bias", "grad_out", "cols"}


def plain(value, name: str):
    """The plain form of a value that means the same, or the value itself."""
    if name in ARRAY_ARGUMENTS and (isinstance(value, list | np.ndarray) or torch is not None
                                    and isinstance(value, torch.Tensor)):
        arr = np.asarray(value)
        return np.array(arr, dtype=arr.dtype.newbyteorder("="))  # contiguous, native
    if isinstance(value, np.integer) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        return tuple(int(v) for v in value)
    if isinstance(value, tuple | list | range):
        return tuple(plain(v, name) for v in value)
    return value


def snapshot(kwargs):
    return {k: np.array(v, copy=True) for k, v in kwargs.items() if isinstance(v, np.ndarray)}


def check_result(got, expected):
    if isinstance(got, tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            check_result(g, e)
    elif isinstance(got, np.ndarray):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    elif isinstance(got, numbaconv.PackedWeight):
        assert (got.layout, got.groups, got.dtype, got.shape) == (
            expected.layout, expected.groups, expected.dtype, expected.shape)


def call_and_judge(function: str, replaced: dict):
    call, base = CALLS[function]
    kwargs = {**base, **replaced}
    before = snapshot(kwargs)
    try:
        got = call(**kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        assert "\n" not in message, message
        named = set(message.split(":", 1)[0].split(", "))
        assert named <= names_of(function), f"{type(err).__name__} names no argument: {message}"
        return "refused"
    except MemoryError as err:
        assert "GiB" in str(err) and "memory" in str(err), str(err)
        return "too big"
    finally:
        for k, v in before.items():  # inputs untouched, even on error
            np.testing.assert_array_equal(kwargs[k], v, err_msg=f"{k} was modified")
    plain_kwargs = {**base, **{k: plain(v, k) for k, v in replaced.items()}}
    if any(plain_kwargs[k] is not v for k, v in replaced.items()):
        check_result(got, call(**plain_kwargs))
    return "accepted"


@settings(max_examples=int(os.environ.get("NUMBACONV_FUZZ_EXAMPLES", "600")), deadline=None)
@given(data=st.data())
def test_hostile_arguments_get_a_clear_error_or_the_right_result(data):
    function = data.draw(st.sampled_from(sorted(CALLS)))
    names = data.draw(st.lists(st.sampled_from(sorted(CALLS[function][1])), min_size=1,
                               max_size=2, unique=True))
    replaced = {name: data.draw(st.sampled_from(HOSTILE), label=name) for name in names}
    call_and_judge(function, replaced)


@pytest.mark.parametrize("function", sorted(CALLS))
def test_every_argument_against_every_hostile_value(function):
    # The exhaustive single-argument sweep behind the random pairs above.
    outcomes = {"refused": 0, "too big": 0, "accepted": 0}
    for name in CALLS[function][1]:
        for value in HOSTILE:
            outcomes[call_and_judge(function, {name: value})] += 1
    assert outcomes["refused"] > 0 and outcomes["accepted"] > 0, outcomes


def test_the_fuzzed_functions_are_the_public_ones():
    public = {n for n in numbaconv.__all__ if callable(getattr(numbaconv, n))}
    no_arguments = {"cache_clear", "cache_info", "release_workspace", "get_num_threads"}
    classes = {"CacheInfo", "Plan", "PackedWeight"}  # made by numbaconv, not by users
    assert public - no_arguments - classes == {n.split(".")[0] for n in CALLS}


HUGE = textwrap.dedent("""
    import resource, numpy as np, numbaconv
    # A cap on the address space: an allocation our checks missed fails here
    # as NumPy's MemoryError, not as the OS killing the machine's processes.
    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
    x = np.ones((1, 2, 8, 8), np.float32)
    w = np.ones((2, 2, 3, 3), np.float32)
    view = np.broadcast_to(np.float32(1), (64, 256, 2**12, 2**12))  # 1 TiB, costs nothing
    cases = {
        "padding 10**9": lambda: numbaconv.conv2d(x, w, padding=10**9),
        "output 100+ GB": lambda: numbaconv.conv2d(view[:1, :1], np.ones((4096, 1, 1, 1),
                                                                       np.float32)),
        "dilation 10**6": lambda: numbaconv.conv2d(x, w, dilation=10**6),
        # Only the centre tap reaches the image: the 1x1 convolution by it.
        "dilation 10**6 padded": lambda: bool(np.allclose(
            numbaconv.conv2d(x, w, dilation=10**6, padding=10**6),
            numbaconv.conv2d(x, w[:, :, 1:2, 1:2]))),
        "input 1 TiB view": lambda: numbaconv.conv2d(view, np.ones((1, 256, 1, 1), np.float32)),
        "stride 2**31 - 1": lambda: numbaconv.conv2d(x, w, stride=2**31 - 1).shape,
        "padding 2**31": lambda: numbaconv.conv2d(x, w, padding=2**31),
        "pads 2**30, stride 2**31 - 1": lambda: numbaconv.conv2d(
            x, w, padding=2**30, stride=2**31 - 1).shape,
        "im2col 1 TiB": lambda: numbaconv.im2col(view[:1], 7, padding=3),
        # 2**16 kernel rows x 2**16 output rows: (K, P) tables of 2**32 entries
        "kernel tables 2**32": lambda: numbaconv.conv2d(
            x[:, :1, :1, :1], np.ones((1, 1, 2**16, 1), np.float32), padding=(2**16, 0)),
        "col2im 1 TiB": lambda: numbaconv.col2im(np.ones((1, 9, 1)), (2**20, 2**20), 3),
        "grad_input 1 TiB": lambda: numbaconv.conv2d_grad_input(
            (64, 256, 2**12, 2**12), w[:, :1].repeat(256, 1), np.ones((64, 2, 1, 1)), stride=2**12),
        "layer 2**40 weights": lambda: numbaconv.Conv2d(2**20, 2**20, 1),
        "transpose 1 TiB": lambda: numbaconv.conv_transpose2d(
            np.ones((1, 2, 2**10, 2**10)), np.ones((2, 2**10, 2, 2)), stride=2**10),
    }
    for name, case in cases.items():
        try:
            out = case()
            print(name, "|", "ok", out if isinstance(out, tuple | bool) else type(out).__name__)
        except (MemoryError, ValueError, TypeError) as err:
            print(name, "|", type(err).__name__, str(err))
""")


def test_sizes_that_do_not_fit_fail_fast():
    proc = subprocess.run([sys.executable, "-c", HUGE], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(line.split(" | ", 1) for line in proc.stdout.splitlines())
    for name in ("padding 10**9", "output 100+ GB", "input 1 TiB view", "im2col 1 TiB",
                 "kernel tables 2**32",
                 "col2im 1 TiB", "grad_input 1 TiB", "layer 2**40 weights", "transpose 1 TiB"):
        assert results[name].startswith("MemoryError"), (name, results[name])
        assert "GiB" in results[name] and "Unable to allocate" not in results[name], results[name]
    assert results["dilation 10**6"].startswith("ValueError weight: dilated kernel")
    assert results["padding 2**31"].startswith("ValueError padding: expected values <=")
    assert results["dilation 10**6 padded"] == "ok True"
    assert results["stride 2**31 - 1"] == "ok (1, 2, 1, 1)"
    # A 2x2 output, but the index tables span the padded axes: refused, saying so.
    assert results["pads 2**30, stride 2**31 - 1"].startswith("MemoryError"), results


PAST_2_31 = textwrap.dedent("""
    import numpy as np, numbaconv
    # 2 x (2**31 + 2**22) elements, 16 GiB, left as untouched zero pages (no
    # memory used): a 32-bit index anywhere would wrap and misread.
    h, w = 2**16, 2**15 + 64
    for layout in ("NCHW", "NHWC"):
        x = np.zeros((1, 2, h, w) if layout == "NCHW" else (1, h, w, 2), np.float32)
        plane = x[0, 1] if layout == "NCHW" else x[0, :, :, 1]
        plane[h - 64, w - 256] = 3.0  # past element 2**31 of the plane
        dense = np.full((1, 2, 3, 3) if layout == "NCHW" else (3, 3, 2, 1), 2.0, np.float32)
        depthwise = np.full((2, 1, 3, 3) if layout == "NCHW" else (3, 3, 1, 2), 2.0,
                            np.float32)
        # auto: direct_depthwise in NHWC; in NCHW its padded planes would not fit
        for weight, groups, algorithms in ((dense, 1, ("im2col_gemm", "indirect_gemm")),
                                           (depthwise, 2, ("auto",))):
            for algorithm in algorithms:
                y = numbaconv.conv2d_with(x, weight, stride=64, padding=1, groups=groups,
                                          layout=layout, algorithm=algorithm)
                # output (p, q) is centred on input (64p - 1, 64q - 1): only the
                # one whose window holds the 3.0 is non-zero
                print(layout, algorithm, float(y.sum()), int(np.count_nonzero(y)))
""")


@pytest.mark.skipif((_args.physical_memory() or 0) < 20 * 2**30,
                    reason="check_fits refuses a 16 GiB input on a machine of less memory")
def test_index_arithmetic_past_2_31_elements():
    proc = subprocess.run([sys.executable, "-c", PAST_2_31], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")[:-1]
    assert len(lines) == 6, proc.stdout
    for line in lines:
        layout, algorithm, total, nonzero = line.split()
        assert (float(total), int(nonzero)) == (6.0, 1), line
