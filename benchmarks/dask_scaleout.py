"""numbaconv.dask on a LocalCluster: time, throughput and peak memory per worker.

    python benchmarks/dask_scaleout.py [--size 16384] [--batch 2048] [--only image|batch]

Two workloads, each on a fresh cluster per configuration (so each worker's
peak RSS, ru_maxrss, is that run's), input generated or persisted on the
workers first and not timed:

- image: a 3-channel SIZE x SIZE image in HWC order, float32, generated
  chunk by chunk inside the graph (timed too: uniform random numbers, a
  small part), through one 3 -> 64 3x3 convolution ("same"), and through a
  3-layer stack (3 -> 16 -> 16 -> 16, 3x3, "same"), chunks of 1024 x 1024
  pixels.  The result is reduced to a mean per channel, so it never has to
  fit anywhere.  The point: memory per worker is bounded by the chunk, not
  the image.
- batch: BATCH ImageNet images (3 x 224 x 224, NCHW), persisted in the
  workers' memory first, through ResNet-50's stem (64 filters, 7x7,
  stride 2, padding 3), 32 images a chunk, reduced to a sum per image and
  channel; against the same in one process with 2 threads (a fresh process,
  its peak RSS too), as one call on the whole batch and as a loop over
  32-image chunks.

Configurations: workers x threads per worker = 1x1, 2x1 and 1x2.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import platform
import resource
import time

import numpy as np


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm():
    """Load the kernels on a worker (from the disk cache), outside the timing."""
    import numbaconv

    for layout, x, w in (("NHWC", (1, 34, 34, 16), (3, 3, 16, 16)),
                         ("NCHW", (2, 3, 40, 40), (64, 3, 7, 7))):
        numbaconv.conv2d(np.ones(x, np.float32), np.ones(w, np.float32), layout=layout,
                         padding=1)
    return _peak_rss()


def _image_graph(x, layers):
    import numbaconv.dask

    rng = np.random.default_rng(0)
    y = x
    for c_in, c_out in layers:
        w = (rng.standard_normal((3, 3, c_in, c_out)) / np.sqrt(9 * c_in)).astype(np.float32)
        y = numbaconv.dask.conv2d(y, w, padding="same", layout="NHWC")
    return y.mean(axis=(0, 1, 2))


def _stem_weight():
    return (np.random.default_rng(1).standard_normal((64, 3, 7, 7)) / 12).astype(np.float32)


def _batch_graph(x):
    import numbaconv.dask

    return numbaconv.dask.conv2d(x, _stem_weight(), stride=2, padding=3).sum(axis=(2, 3))


def on_cluster(workload: str, workers: int, threads: int, args) -> dict:
    import dask.array as da
    import distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads,
                                  processes=True, dashboard_address=":0", silence_logs=50,
                                  memory_limit=0) as cluster, distributed.Client(cluster) as client:
        baseline = max(client.run(_warm).values())
        rng = da.random.default_rng(0)
        if workload == "batch":
            x = rng.standard_normal((args.batch, 3, 224, 224), chunks=(32, 3, 224, 224),
                                    dtype=np.float32)
            cases = {"resnet50 stem": lambda x: _batch_graph(x)}
        else:
            x = rng.random((1, args.size, args.size, 3), chunks=(1, 1024, 1024, 3),
                           dtype=np.float32)
            cases = {"3 -> 64": lambda x: _image_graph(x, [(3, 64)]),
                     "3-layer stack": lambda x: _image_graph(x, [(3, 16), (16, 16), (16, 16)])}
        if workload == "batch":  # in the workers' memory first, as a data set would be
            x = client.persist(x)
            distributed.wait(x)
        rows = []
        for case, graph in cases.items():
            start = time.perf_counter()
            client.compute(graph(x)).result()
            seconds = time.perf_counter() - start
            peaks = client.run(_peak_rss).values()
            rows.append(dict(workload=workload, case=case, where=f"{workers}x{threads} dask",
                             seconds=seconds, peak_worker_gib=max(peaks) / 2**30,
                             baseline_worker_gib=baseline / 2**30))
        return rows


def _single_process(batch: int, chunk: int | None) -> dict:
    """One call on the whole batch, or (``chunk``) a loop over chunks of that many images."""
    import numbaconv

    _warm()
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    w = _stem_weight()
    start = time.perf_counter()
    for i in range(0, batch, chunk or batch):
        numbaconv.conv2d(x[i:i + (chunk or batch)], w, stride=2, padding=3).sum(axis=(2, 3))
    return dict(seconds=time.perf_counter() - start, peak=_peak_rss(),
                threads=numbaconv.get_num_threads())


def single_process(args) -> list[dict]:
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for chunk in (None, 32):
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            r = pool.submit(_single_process, args.batch, chunk).result()
        rows.append(dict(workload="batch", case="resnet50 stem",
                         where=f"1 proc {r['threads']} thr" + (f", by {chunk}" if chunk else ""),
                         seconds=r["seconds"], peak_worker_gib=r["peak"] / 2**30,
                         baseline_worker_gib=float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--only", choices=["image", "batch"])
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    from numbaconv import machine

    print(f"# {platform.processor() or platform.machine()}, {machine.describe()}")
    rows = []
    for workload in ("batch", "image"):
        if args.only not in (None, workload):
            continue
        if workload == "batch":
            rows += single_process(args)
        for workers, threads in ((1, 1), (2, 1), (1, 2)):
            rows += on_cluster(workload, workers, threads, args)
    items = {"batch": args.batch, "image": args.size ** 2}
    print(f"{'workload':8} {'case':14} {'where':20} {'seconds':>8} {'per s':>10} "
          f"{'peak/worker':>11} {'idle/worker':>11}")
    for r in rows:
        unit = "img" if r["workload"] == "batch" else "Mpx"
        rate = items[r["workload"]] / r["seconds"] / (1 if unit == "img" else 1e6)
        r["rate"] = rate
        print(f"{r['workload']:8} {r['case']:14} {r['where']:20} {r['seconds']:8.2f} "
              f"{rate:7.1f} {unit} {r['peak_worker_gib']:8.2f} GiB "
              f"{r['baseline_worker_gib']:8.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
