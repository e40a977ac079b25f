"""A suite's layer shapes back to back (ResNet-50's 12 by default), like a network's pass.

Per-layer benchmarks repeat one layer; a network alternates layers, so
each one starts after a different kernel (and, for BLAS layers, with
OpenBLAS's threads still spinning).  This times that sequence.

    LAY=NCHW python benchmarks/network_sequence.py auto 1 8
    LAY=NHWC python benchmarks/network_sequence.py auto,packed 1 8

A rule (first argument) is ``auto`` (the dispatcher), ``packed`` (the
dispatcher, with every weight packed once beforehand by ``pack_weight``, as
for inference), ``im2col`` (im2col_gemm on every layer that is not 1x1),
``indirect`` (indirect_gemm on every layer), ``blas1x1`` (the dispatcher,
but OpenBLAS's gemm_1x1 on the 1x1 layers: two thread pools, as before
pointwise_gemm), ``narrowim2col`` (the dispatcher, but ``im2col_gemm``
on the narrow layers below ``INDIRECT_MIN_FLOPS`` that it gives to
``indirect_gemm``, as before ``NARROW_MIN_FLOPS``), ``serialdw`` (the
dispatcher, but depthwise kernels as small as
``config.serial_kernel_bytes`` on the calling thread, beside OpenBLAS's
spinning threads, as before they stopped them) or
``onnxruntime`` (one ONNX Runtime session holding the suite's ``Conv``
nodes, run once per pass with 2 intra-op threads: its network, NCHW
whatever LAY says, and no per-layer times).  ``SUITE`` names the suite
(default resnet50; mobilenet_v2 for depthwise layers).  Several rules,
comma-separated, take turns pass by pass in the one process, so that the
drift of this shared machine hits each alike; the last line gives each
rule's median over the first's.  The other arguments are batch sizes;
``PASSES`` sets the passes per rule (default 11 at batch 1, else 5).
Prints the median pass and each layer's median, in ms.  To compare two
commits, run it alternately in fresh processes with ``PYTHONPATH`` set to
each checkout.

Beside other rules, ONNX Runtime's threads must not spin (they would take
the cores from the next rule's pass), which slows it; for its own speed,
give it alone and alternate processes:

    for i in 1 2 3; do python benchmarks/network_sequence.py onnxruntime 1
                       python benchmarks/network_sequence.py auto 1; done
"""

import os
import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv._execute import serial_below
from numbaconv.algorithms import direct_depthwise
from numbaconv.algorithms.indirect_gemm import INDIRECT_MIN_FLOPS
from numbaconv.bench import load_suite

NUMBA_ONLY = direct_depthwise.numba_only


def algorithm(rule: str, layer, small: bool = False) -> str:
    """``small``: the dispatcher gives this layer to indirect_gemm below INDIRECT_MIN_FLOPS."""
    if rule == "narrowim2col" and small:
        return "im2col_gemm"
    if rule == "indirect":
        return "indirect_gemm"
    if rule == "blas1x1" and layer.kernel == 1:
        return "gemm_1x1"
    if rule == "im2col" and layer.kernel > 1:
        return "im2col_gemm"
    return "auto"


def onnxruntime_pass(data, layout: str, spin: bool):
    """A function running the layers as one ONNX Runtime session (NCHW), once."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    nodes, inputs, outputs, weights, feed = [], [], [], [], {}
    for i, (layer, x, w, *_) in enumerate(data):
        if layout == "NHWC":
            x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w.transpose(3, 2, 0, 1)
        k, s, p = layer.kernel, layer.stride, layer.padding
        nodes.append(helper.make_node("Conv", [f"x{i}", f"w{i}"], [f"y{i}"], kernel_shape=[k, k],
                                      strides=[s, s], pads=[p] * 4, group=layer.groups))
        inputs.append(helper.make_tensor_value_info(f"x{i}", onnx.TensorProto.FLOAT, x.shape))
        outputs.append(helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None))
        weights.append(numpy_helper.from_array(np.ascontiguousarray(w), f"w{i}"))
        feed[f"x{i}"] = x
    graph = helper.make_graph(nodes, "layers", inputs, outputs, initializer=weights)
    model = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Beside other rules, its idle threads would spin on into their passes
    # (numbaconv's took 1.5-3x as long), so then they sleep; that costs ONNX
    # Runtime a fifth or more, so alone (the only rule) it spins as usual.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def main(rules: list[str], batches: list[int], layout: str, suite: str) -> None:
    rng = np.random.default_rng(0)
    for n in batches:
        data = []
        for layer in load_suite(suite):
            xs, ws = layer.shapes(n, layout)
            w = rng.random(ws, np.float32)
            packed = numbaconv.pack_weight(w, layer.groups, layout=layout)
            x = rng.random(xs, np.float32)
            plan = numbaconv.explain(x, w, layout=layout, **layer.conv_kwargs())
            small = plan.algorithm == "indirect_gemm" and plan.flops < INDIRECT_MIN_FLOPS
            data.append((layer, x, w, packed, small))
        per = {rule: [[] for _ in data] for rule in rules}
        passes = {rule: [] for rule in rules}

        peer = (onnxruntime_pass(data, layout, spin=rules == ["onnxruntime"])
                if "onnxruntime" in rules else None)

        def forward(rule, data=data, per=per, passes=passes, peer=peer):
            t0 = time.perf_counter()
            if rule == "onnxruntime":
                peer()
                passes[rule].append(time.perf_counter() - t0)
                return
            direct_depthwise.numba_only = (lambda: serial_below) if rule == "serialdw" else (
                NUMBA_ONLY)
            for i, (layer, x, w, packed, small) in enumerate(data):
                t = time.perf_counter()
                numbaconv.conv2d_with(x, packed if rule == "packed" else w,
                                      algorithm=algorithm(rule, layer, small), layout=layout,
                                      **layer.conv_kwargs())
                per[rule][i].append(time.perf_counter() - t)
            passes[rule].append(time.perf_counter() - t0)

        for rule in rules:  # warm-up
            forward(rule)
            forward(rule)
            passes[rule].clear()
            for p in per[rule]:
                p.clear()
        for _ in range(int(os.environ.get("PASSES", 11 if n == 1 else 5))):
            for rule in rules:
                forward(rule)
        medians = {rule: statistics.median(passes[rule]) for rule in rules}
        for rule in rules:
            layers = " ".join(f"{statistics.median(p) * 1e3:.2f}" for p in per[rule] if p)
            print(f"{rule} {layout} N {n} {medians[rule] * 1e3:.1f} ms   {layers}", flush=True)
        if len(rules) > 1:
            ratios = ", ".join(f"{r} {medians[r] / medians[rules[0]]:.3f}" for r in rules[1:])
            print(f"  over {rules[0]}: {ratios}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), [int(a) for a in sys.argv[2:]] or [1, 8],
         os.environ.get("LAY", "NCHW"), os.environ.get("SUITE", "resnet50"))
