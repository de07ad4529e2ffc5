"""The timing loops every path shares: one caller, many threads, or one asyncio caller.

A path is measured by calling `op(arg)` once per argument. Each timed sample covers
`calls_per_sample` consecutive calls (1 for anything that crosses a socket; 100 for
sub-microsecond in-memory calls, where the clock itself would dominate one call), and
latencies are reported per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks._results import Sample

BARRIER_TIMEOUT_S = 60.0


def summarize(
    latencies_ns: Sequence[int], elapsed_ns: int, keys_per_op: int = 1, calls_per_sample: int = 1
) -> Sample:
    ordered = sorted(latencies_ns)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3 / calls_per_sample

    calls = len(ordered) * calls_per_sample
    return Sample(percentile(0.50), percentile(0.99), calls / (elapsed_ns / 1e9), keys_per_op)


def time_calls(
    op: Callable[[Any], object],
    args: Sequence[Any],
    keys_per_op: int = 1,
    calls_per_sample: int = 1,
) -> Sample:
    """Call `op(arg)` for each arg, back to back, on this thread."""
    groups = [args[i : i + calls_per_sample] for i in range(0, len(args), calls_per_sample)]
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    start = clock()
    for group in groups:
        t0 = clock()
        for arg in group:
            op(arg)
        record(clock() - t0)
    return summarize(latencies, clock() - start, keys_per_op, calls_per_sample)


def time_concurrent(op: Callable[[Any], object], args_per_thread: Sequence[Sequence[Any]]) -> Sample:
    """One thread per argument list, released together; throughput is over all of them."""
    barrier = threading.Barrier(len(args_per_thread) + 1, timeout=BARRIER_TIMEOUT_S)

    def worker(args: Sequence[Any]) -> list[int]:
        barrier.wait()
        clock = time.perf_counter_ns
        latencies = []
        for arg in args:
            t0 = clock()
            op(arg)
            latencies.append(clock() - t0)
        return latencies

    with ThreadPoolExecutor(max_workers=len(args_per_thread)) as pool:
        futures = [pool.submit(worker, args) for args in args_per_thread]
        try:
            barrier.wait()
        except BaseException:
            barrier.abort()  # release the waiting workers now (e.g. on Ctrl-C)
            raise
        start = time.perf_counter_ns()
        per_thread = [f.result() for f in futures]  # re-raises a worker's error here
        elapsed = time.perf_counter_ns() - start
    return summarize([lat for thread in per_thread for lat in thread], elapsed)


async def time_calls_async(
    op: Callable[[Any], Awaitable[object]], args: Sequence[Any], keys_per_op: int = 1
) -> Sample:
    """`time_calls` for a coroutine function: one call in flight at a time."""
    clock = time.perf_counter_ns
    latencies: list[int] = []
    start = clock()
    for arg in args:
        t0 = clock()
        await op(arg)
        latencies.append(clock() - t0)
    return summarize(latencies, clock() - start, keys_per_op)
