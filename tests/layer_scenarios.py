"""Processes and threads that use numbaconv after the main thread did: run by test_layers_safety.py.

    NUMBA_THREADING_LAYER=omp python tests/layer_scenarios.py SCENARIO

SCENARIO is ``pool`` (a multiprocessing fork pool), ``os_fork``, ``spawn``
(a spawn pool), ``dataloader`` (PyTorch's DataLoader, fork workers),
``threads`` (8 Python threads at once) or ``fork_busy`` (forks while
another thread is running kernels, and may hold numbaconv's locks).  The main thread calls numbaconv
first, so its thread pool is running when it forks; each child or thread
computes forward, backward and transposed convolutions and reports how far
they are from the main thread's.  Prints the threading layer and the
largest difference; exits non-zero on a timeout.
"""

import multiprocessing as mp
import os
import signal
import sys

import numpy as np

import numbaconv

TIMEOUT = 120  # s: a child that dies leaves a pool waiting; fail instead of hanging
FORKS = 20  # fork_busy's forks: enough that some land while a lock is held


def work(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    wn = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = numbaconv.conv2d(x, w, padding=1)
    grads = numbaconv.conv2d_backward(np.ones_like(y), x, w, padding=1)
    # Large enough for the parallel kernels and threaded BLAS (config.serial_kernel_bytes).
    big = rng.standard_normal((2, 64, 48, 48)).astype(np.float32)
    w3 = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    w1 = rng.standard_normal((128, 64, 1, 1)).astype(np.float32)
    return [
        numbaconv.conv2d(big, w3, padding=1),
        numbaconv.conv2d(big, w1),
        numbaconv.conv2d(big, w3[:, :16], groups=4),
        y,
        numbaconv.conv2d(xn, wn, padding="same", layout="NHWC"),
        *(g for g in grads if g is not None),
        numbaconv.conv_transpose2d(y, w, stride=2, padding=1, output_padding=1),
    ]


def distance(seed: int, expected: list[np.ndarray]) -> float:
    got = work(seed)
    return max(float(np.abs(a - b).max()) for a, b in zip(got, expected, strict=True))


def _threads(expected) -> list[float]:
    import threading

    results, errors = [], []

    def run(seed):
        try:
            for _ in range(5):
                results.append(distance(seed, expected[seed]))
        except Exception as err:  # reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(i % 4,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    if errors or any(t.is_alive() for t in threads):
        raise SystemExit(f"threads failed or hung: {errors}")
    return results


def _pool(method: str, expected) -> list[float]:
    with mp.get_context(method).Pool(2) as pool:
        jobs = pool.starmap_async(distance, [(s, expected[s]) for s in range(4)])
        return jobs.get(timeout=TIMEOUT)


def _os_fork(expected) -> list[float]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        signal.alarm(TIMEOUT)  # a lock inherited held would hang the child: fail instead
        try:
            os.write(write, repr(distance(0, expected[0])).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    text = os.read(read, 100).decode()
    if status != 0 or not text:
        raise SystemExit(f"forked child exited with status {status}")
    return [float(text)]


def numba_only() -> list[np.ndarray]:
    """Calls that run on Numba's threads only: no OpenBLAS call (see _fork_busy)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 32, 24, 24)).astype(np.float32)
    return [numbaconv.conv2d_with(x, rng.standard_normal((32, 32, 3, 3)).astype(np.float32),
                                  padding=1, algorithm="indirect_gemm"),
            numbaconv.conv2d(x, rng.standard_normal((32, 1, 3, 3)).astype(np.float32),
                             padding=1, groups=32)]


def _fork_busy(expected) -> list[float]:
    # Forks while another thread runs kernels, so now and then while it holds
    # the launch lock (workqueue) or the plans' lock.  Its kernels are Numba's
    # only: a fork during a threaded OpenBLAS call, or during a TBB parallel
    # region, can hang the child whatever numbaconv does (docs/threads.md).
    import threading

    stop, errors, first = threading.Event(), [], numba_only()

    def busy():
        try:
            while not stop.is_set():
                if any((a != b).any() for a, b in zip(numba_only(), first, strict=True)):
                    raise AssertionError("the busy thread's results changed")
        except Exception as err:  # reported below
            errors.append(repr(err))

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        result = [d for _ in range(FORKS) for d in _os_fork(expected)]
    finally:
        stop.set()
        thread.join(timeout=TIMEOUT)
    if errors:
        raise SystemExit(f"the busy thread failed: {errors}")
    return result


class _Dataset:
    def __init__(self, expected):
        self.expected = expected

    def __len__(self):
        return len(self.expected)

    def __getitem__(self, i):
        return distance(i, self.expected[i])


def _dataloader(expected) -> list[float]:
    import torch.utils.data

    loader = torch.utils.data.DataLoader(_Dataset(expected), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork", timeout=TIMEOUT)
    return [float(d) for d in loader]


def main(scenario: str) -> None:
    expected = [work(seed) for seed in range(4)]  # the parent's pool is now running
    if scenario in ("pool", "spawn"):
        result = _pool("fork" if scenario == "pool" else "spawn", expected)
    elif scenario == "os_fork":
        result = _os_fork(expected)
    elif scenario == "dataloader":
        result = _dataloader(expected)
    elif scenario == "threads":
        result = _threads(expected)
    elif scenario == "fork_busy":
        result = _fork_busy(expected)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print(numbaconv._threads.threading_layer(), max(result))


if __name__ == "__main__":
    main(sys.argv[1])
