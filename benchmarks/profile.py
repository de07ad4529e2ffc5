"""Profile peergrid's remote data path with py-spy: the caller and every member, per path.

    python -m benchmarks.profile                      # get, set (backup_count 1), get_all(100)
    python -m benchmarks.profile --paths get --seconds 10 --native --out /tmp/prof

Starts the benchmark's 3-member cluster (two `python -m peergrid member` children, this
process the third) with backup_count=1, picks keys owned by the first child (so it is the
owner, and the set's backup is one of the other two), then for each path runs the calls in a
loop while `py-spy record` samples this process (the caller) and both children. Writes, per
path and process, a flame graph (`PATH-ROLE.svg`) and py-spy's collapsed stacks
(`PATH-ROLE.txt`), and prints each process's hottest functions (self and inclusive share of
its samples) so a profile can be read without a browser. The members run pinned to one CPU
as in the benchmark; py-spy runs where the OS puts it.

py-spy is a tool, not a dependency: `pip install py-spy` (the tool says so when missing).
Measurement only; nothing here asserts on anything.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import baselines, grid
from benchmarks._proc import Placement, Processes
from benchmarks._workload import Settings, Workload

PATHS = ("get", "set", "get_all")
TOP = 30
# Leaves where a thread waits rather than works (py-spy --nonblocking may count them as active).
IDLE = (
    "EpollSelector.select",
    "Call.wait",
    "Group.wait",
    "Popen._wait",
    "Thread.run",
    "Event.wait",
    "sleep",
    "epoll_wait",  # --native: a C leaf (lock waits there show as bare libc addresses)
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--seconds", type=float, default=8.0, help="sampling time per path")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="py-spy --gil: sample only the thread holding the GIL (its Python work, C calls "
        "made with the GIL held included; no waits)",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="py-spy --native: C frames too (py-spy then pauses the process to sample it: use a low --rate)",
    )
    parser.add_argument("--only", help="profile only this process: caller, owner or backup")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU the members are pinned to")
    parser.add_argument("--out", type=Path, default=Path("profiles"), help="where the files go")
    parser.add_argument(
        "--cpu-only",
        action="store_true",
        help="no py-spy: CPU time per call of every process and thread (from /proc schedstat), "
        "beside the bare aio stream's per message",
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per path with --cpu-only")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="no cluster: time the data path's Python parts alone (frame codec, thread hop)",
    )
    parser.add_argument(
        "--passes",
        action="store_true",
        help="no py-spy: loop callbacks and loop iterations per call on the caller's member loop, "
        "by callback (exact counts, not timings: they hold on a loaded machine)",
    )
    args = parser.parse_args(argv)
    if args.parts:
        Placement(frozenset({args.cpu})).pin_current_process()
        parts()
        return 0
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not args.cpu_only and not Path(spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    workload = Workload(Settings(keys=5_000))
    placement = Placement(frozenset({args.cpu}))
    with (
        tempfile.TemporaryDirectory(prefix="pg-profile-") as logs,
        Processes(placement, Path(logs)) as procs,
        contextlib.ExitStack() as stack,
    ):
        placement.pin_current_process()
        cluster = grid.start_cluster(stack, procs, backup_count=1)
        grid.load(cluster, workload)
        owner = grid.owner_lookup(cluster.grid)
        assert owner is not None
        addresses = {str(m.address) for m in cluster.grid.members()}
        owned = [k for k in workload.keys if owner(k) not in (cluster.grid.address,)]
        first = sorted(a for a in addresses if a != cluster.grid.address)[0]
        keys = [k for k in owned if owner(k) == first] or owned
        by_address = {c.name.split()[-1]: c.pid for c in procs.children}
        other = next(a for a in by_address if a != first)
        roles: dict[str, int | None] = {
            "caller": None,
            "owner": by_address[first],
            "other": by_address[other],
        }
        if args.only:
            roles = {args.only: roles[args.only]}
        print(f"owner of the keys: {first}; the set's backup: this process or {other}", file=sys.stderr)
        m = cluster.map
        values = {k: workload.value_of(k) for k in keys}
        batch = workload.batches(workload.keys)[:50]
        calls: dict[str, Callable[[int], object]] = {
            "get": lambda i: m.get(keys[i % len(keys)]),
            "set": lambda i: m.set(keys[i % len(keys)], values[keys[i % len(keys)]]),
            "get_all": lambda i: m.get_all(batch[i % len(batch)]),
        }
        if args.passes:
            for path in args.paths.split(","):
                passes(path, calls[path], args.calls)
            return 0
        if args.cpu_only:
            echo = baselines.AioEcho(baselines.start_echo(procs, "aio", workload))
            stack.callback(echo.close)
            echo_pid = procs.children[-1].pid
            for path in args.paths.split(","):
                account(path, calls[path], roles, args.calls)
            account_stream(echo, echo_pid, [k.encode() for k in keys], args.calls)
            return 0
        for path in args.paths.split(","):
            run(spy, args, path, calls[path], roles)
    return 0


def parts() -> None:
    """The Python parts of a remote call, each timed alone (best of 5 runs): the four frame
    codec steps for a frame of 1 and of 33 ops (a third of a get_all(100)), and a thread hop
    to an event loop and back (what a sync caller pays to reach the member's loop)."""
    import asyncio
    import threading
    import timeit

    from peergrid.protocol import Code, Op, Result
    from peergrid.transport import frames
    from peergrid.transport._pb import map_pb2

    def best(name: str, fn: Callable[..., object], number: int = 5000) -> None:
        us = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6
        print(f"   {name:52s} {us:7.2f} us")

    value = b"v" * 103
    for n in (1, 33):
        ops = [Op(Code.GET, i, "bench", b"\xa0key:%08d" % i) for i in range(n)]
        results = [Result(found=True, value=value, version=5) for _ in range(n)]
        frame = frames.ops_to_pb(1, "cluster", 3, "u" * 32, ops)
        reply = frames.results_to_pb(1, 3, results)
        wire, answer = frame.SerializeToString(), reply.SerializeToString()
        print(f"== frame codec, {n} get(s)")
        best(
            "caller: ops_to_pb + serialize",
            lambda ops=ops: frames.ops_to_pb(1, "c", 3, "u" * 32, ops).SerializeToString(),
        )
        best(
            "owner: parse + ops_from_pb", lambda wire=wire: frames.ops_from_pb(map_pb2.Frame.FromString(wire))
        )
        best(
            "owner: replies_to_pb + serialize",
            lambda results=results: [
                m.SerializeToString() for m in frames.replies_to_pb(1, 3, results, 1 << 26)
            ],
        )
        best(
            "caller: parse + results_from_pb",
            lambda answer=answer: frames.results_from_pb(map_pb2.FrameResult.FromString(answer)),
        )
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def hop() -> None:
        lock = threading.Lock()
        lock.acquire()
        loop.call_soon_threadsafe(lock.release)
        lock.acquire()

    print("== thread hop")
    best("caller thread -> loop thread -> caller (wall)", hop, 2000)
    print("== the pipe alone (a stream that answers at once; no grpc)")
    one, close = _pipe_round_trip(loop)
    best("sync caller: one op through Pipe and back (wall)", one, 2000)
    close()
    loop.call_soon_threadsafe(loop.stop)


def _pipe_round_trip(loop: object) -> tuple[Callable[[], None], Callable[[], None]]:
    """One op from this thread through a ``Pipe`` on ``loop`` to a stream that answers at once,
    and back (and a function that closes the pipe): the hop plus the pipe's own per-frame work
    (its wake-up, the sender task, the frame's watchdog, the reader task, the item's
    completion), without grpc's."""
    import asyncio
    import threading

    from peergrid.invocation.pipe import Pipe
    from peergrid.protocol import Code, Op, Result

    class Answering:
        def __init__(self) -> None:
            self.replies: asyncio.Queue[tuple[int, int, list[Result]]] = asyncio.Queue()

        async def send(self, frame_id: int, table_version: int, sender: str, ops: list[Op]) -> None:
            self.replies.put_nowait((frame_id, 1, [Result() for _ in ops]))

        async def receive(self) -> tuple[int, int, list[Result]]:
            return await self.replies.get()

        def cancel(self) -> None:
            pass

    class Item:
        __slots__ = ("lock", "op")

        def __init__(self) -> None:
            self.op = Op(Code.GET, 0, "bench", b"k")
            self.lock = threading.Lock()
            self.lock.acquire()

        def handle(self, result: Result) -> None:
            self.lock.release()

    async def make() -> Pipe:
        stream = Answering()

        async def opens() -> Answering:
            return stream

        running = asyncio.get_running_loop()
        return Pipe("bench", running, opens, lambda: (1, "me"), 100, 2, 30.0, lambda version: None)

    pipe = asyncio.run_coroutine_threadsafe(make(), loop).result()  # type: ignore[arg-type]

    def one() -> None:
        item = Item()
        pipe.submit(item)
        item.lock.acquire()

    async def closed() -> None:
        pipe.close()
        for _ in range(3):  # let the cancelled sender and reader end
            await asyncio.sleep(0)

    return one, lambda: asyncio.run_coroutine_threadsafe(closed(), loop).result()  # type: ignore[arg-type]


def passes(path: str, call: Callable[[int], object], n: int) -> None:
    """Run ``call`` n times counting, on the member's loop (every thread but this one), the
    callbacks it runs (by name: a task's wake-up names its coroutine) and its iterations."""
    import asyncio.base_events
    import asyncio.events
    import threading

    for i in range(200):
        call(i)
    counts: collections.Counter[str] = collections.Counter()
    iterations = [0]
    main = threading.main_thread()
    handle_run = asyncio.events.Handle._run
    run_once = asyncio.base_events.BaseEventLoop._run_once

    def counted_run(handle: asyncio.events.Handle) -> None:
        callback = handle._callback  # type: ignore[attr-defined]
        inner = callback.func if isinstance(callback, functools.partial) else callback
        name = getattr(inner, "__qualname__", None) or type(inner).__name__
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            coro = owner.get_coro()
            name = f"{name}<{getattr(coro, '__qualname__', coro)}>"
        counts[name] += 1
        handle_run(handle)

    def counted_once(loop: asyncio.base_events.BaseEventLoop) -> None:
        if threading.current_thread() is not main:
            iterations[0] += 1
        run_once(loop)

    asyncio.events.Handle._run = counted_run  # type: ignore[method-assign]
    asyncio.base_events.BaseEventLoop._run_once = counted_once  # type: ignore[method-assign]
    try:
        for i in range(n):
            call(i)
    finally:
        asyncio.events.Handle._run = handle_run  # type: ignore[method-assign]
        asyncio.base_events.BaseEventLoop._run_once = run_once  # type: ignore[method-assign]
    total = sum(counts.values())
    print(
        f"\n== {path}: {total / n:.2f} callbacks, {iterations[0] / n:.2f} loop iterations a call ({n} calls)"
    )
    for name, count in counts.most_common():
        if count >= n // 20:
            print(f"   {count / n:6.2f}  {name}")


def thread_cpu(pid: int) -> dict[str, int]:
    """Nanoseconds on CPU so far of each thread of ``pid``, by thread name (summed per name)."""
    times: dict[str, int] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            times[name] += int((task / "schedstat").read_text().split()[0])
    return times


def process_cpu_ns(pid: int) -> int:
    """Nanoseconds on CPU so far of ``pid``: every thread it ran, those that ended included.

    Summing ``thread_cpu`` would lose the threads that exited (a benchmark's caller threads,
    once joined): the process's CPU-time clock (Linux: ``MAKE_PROCESS_CPUCLOCK(pid,
    CPUCLOCK_SCHED)``, as ``clock_getcpuclockid`` makes it) keeps them.
    """
    clock = ctypes.c_int32(((~pid) << 3) | 2).value
    return time.clock_gettime_ns(clock)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after if after[name] > before.get(name, 0)}


def account(path: str, call: Callable[[int], object], roles: dict[str, int | None], n: int) -> None:
    """Run ``call`` n times; print wall time and every process's CPU time per call, by thread."""
    for i in range(200):
        call(i)
    pids = {role: pid or os.getpid() for role, pid in roles.items()}
    before = {role: thread_cpu(pid) for role, pid in pids.items()}
    start = time.perf_counter()
    for i in range(n):
        call(i)
    wall = time.perf_counter() - start
    after = {role: thread_cpu(pid) for role, pid in pids.items()}
    print(f"\n== {path}: {wall / n * 1e6:.0f} us a call (wall, mean of {n})")
    for role in pids:
        delta = _delta(before[role], after[role])
        total = sum(delta.values()) / n / 1e3
        parts = ", ".join(
            f"{name} {ns / n / 1e3:.0f}" for name, ns in sorted(delta.items(), key=lambda kv: -kv[1])
        )
        print(f"   {role:28s} {total:6.0f} us CPU a call ({parts})")


def account_stream(echo: baselines.AioEcho, server_pid: int, keys: list[bytes], n: int) -> None:
    """The bare aio bidi stream, one message each way: wall and CPU per message, both ends."""
    echo.stream(keys[:200])
    before, server_before = thread_cpu(os.getpid()), thread_cpu(server_pid)
    start = time.perf_counter()
    echo.stream([keys[i % len(keys)] for i in range(n)])
    wall = time.perf_counter() - start
    client, server = _delta(before, thread_cpu(os.getpid())), _delta(server_before, thread_cpu(server_pid))
    print(f"\n== bare aio stream: {wall / n * 1e6:.0f} us a message (wall, mean of {n}, timing included)")
    for role, delta in (("client (this process)", client), ("echo server", server)):
        parts = ", ".join(
            f"{name} {ns / n / 1e3:.0f}" for name, ns in sorted(delta.items(), key=lambda kv: -kv[1])
        )
        print(f"   {role:28s} {sum(delta.values()) / n / 1e3:6.0f} us CPU a message ({parts})")


def run(
    spy: str, args: argparse.Namespace, path: str, call: Callable[[int], object], roles: dict[str, int | None]
) -> None:
    for i in range(200):  # warm up
        call(i)
    spies = []
    for role, child_pid in roles.items():
        pid = child_pid or os.getpid()
        # --native: collapsed stacks only (one py-spy per process: each pauses it to sample)
        formats = (("raw", "txt"),) if args.native else (("flamegraph", "svg"), ("raw", "txt"))
        for fmt, ext in formats:
            out = args.out / f"{path}-{role}.{ext}"
            cmd = [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                str(args.rate),
                "--format",
                fmt,
                "-o",
                str(out),
                "--threads",
                *(["--native"] if args.native else ["--nonblocking"]),
                *(["--gil"] if args.gil else []),
            ]
            spies.append(
                (role, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            )
    time.sleep(0.5)  # py-spy attaches
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        call(n)
        n += 1
    elapsed = time.perf_counter() - start
    for _, _, proc in spies:
        proc.wait(timeout=60)
    print(f"\n== {path}: {n} calls in {elapsed:.1f} s, {elapsed / n * 1e6:.0f} us a call (under py-spy)")
    for role, out, _ in spies:
        if out.suffix == ".txt" and out.exists():
            summarize(role, out)


def summarize(role: str, collapsed: Path) -> None:
    """Print the hottest functions (self and inclusive) of py-spy's collapsed stacks, per thread."""
    per_thread: dict[str, tuple[collections.Counter[str], collections.Counter[str], list[int]]] = {}
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if frames and _short(frames[-1]).split(" (")[0] in IDLE:
            continue
        own, incl, total = per_thread.setdefault(thread, (collections.Counter(), collections.Counter(), [0]))
        n = int(count)
        total[0] += n
        if frames:
            own[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            incl[name] += n
    for thread, (own, incl, total) in sorted(per_thread.items(), key=lambda kv: -kv[1][2][0]):
        if total[0] < 5:
            continue
        print(f"-- {role} {thread}: {total[0]} samples at work")
        for name, n in incl.most_common(TOP):
            print(f"   {100 * n / total[0]:5.1f}% incl {100 * own[name] / total[0]:5.1f}% self  {name}")


def _short(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({file})" if file else name


if __name__ == "__main__":
    sys.exit(main())
