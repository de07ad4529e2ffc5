"""The baselines peergrid is measured against, each started and loaded here:

- redis-server through redis-py with the hiredis parser: GET, SET, MGET of 100, 64 threads
  doing GET over a connection pool, and used_memory per key;
- a bare gRPC unary round trip to a trivial servicer (sync stub and server; grpc.aio client
  and server), an aio bidi stream with one message each way, and the floor under a get_all
  of 100 keys spread over three members (two aio streams to two servers in parallel, a third
  of the keys each, the last third from a local dict);
- the same stream called from a thread, through an event loop on a thread of its own, as a
  sync peergrid caller reaches its member's loop, and 64 such threads whose calls go as one
  message per server of whatever queued meanwhile (the floors under a sync remote get and
  under 64 threads doing remote gets);
- a plain dict get, with and without msgpack-decoding the value (the owner-local reference).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import grpc
import msgpack
import redis
import redis.utils

from benchmarks import _echo_server
from benchmarks._kv import KeyChoice, KVCalls, KVLabels, kv_paths
from benchmarks._proc import Processes, flags, free_port, wait_for_port
from benchmarks._results import MemoryFigure, Sample
from benchmarks._rounds import Path
from benchmarks._timing import time_calls, time_calls_async, time_concurrent
from benchmarks._workload import Workload

HOST = "127.0.0.1"
LOAD_CHUNK = 1_000
MICRO_REPEAT = 100  # in-memory paths replay the key sequence this many times (sub-µs calls)
MICRO_SAMPLE = 100  # calls per timed sample for in-memory paths
READY_TIMEOUT_S = 20.0


@dataclass
class Baselines:
    paths: list[Path]
    memory: MemoryFigure
    versions: dict[str, str]

    def path(self, name: str) -> Path:
        return next(p for p in self.paths if p.name == name)


def start(stack: contextlib.ExitStack, procs: Processes, workload: Workload) -> Baselines:
    """Start and load every baseline; `stack` closes the clients, `procs` stops the servers."""
    single, pooled, memory, server_version = start_redis(stack, procs, workload)
    paths = [
        *dict_paths(workload),
        *redis_paths(single, pooled, workload),
        *grpc_paths(stack, procs, workload),
    ]
    versions = {
        "redis-server": server_version,
        "redis-py": f"{redis.__version__} ({_redis_parser()} parser)",
        "grpcio": grpc.__version__,
        "msgpack": ".".join(map(str, msgpack.version)),
    }
    return Baselines(paths, memory, versions)


# -- redis -------------------------------------------------------------------------------


def start_redis(
    stack: contextlib.ExitStack, procs: Processes, workload: Workload
) -> tuple[redis.Redis, redis.Redis, MemoryFigure, str]:
    """redis-server on a free loopback port, no persistence; loaded with the workload."""
    port = free_port(HOST)
    options = {"--bind": HOST, "--port": port, "--save": "", "--appendonly": "no", "--dir": procs.log_dir}
    argv = ["redis-server", *flags(options)]
    wait_for_port(procs.start("redis-server", argv), HOST, port, READY_TIMEOUT_S)
    single = redis.Redis(HOST, port, single_connection_client=True)
    pool = redis.BlockingConnectionPool(host=HOST, port=port, max_connections=workload.settings.threads)
    pooled = redis.Redis(connection_pool=pool)
    stack.callback(pooled.close)
    stack.callback(single.close)
    memory = load_redis(single, workload)
    return single, pooled, memory, str(single.info("server")["redis_version"])


def load_redis(client: redis.Redis, workload: Workload) -> MemoryFigure:
    """Load every key; used_memory growth from an empty server is the memory figure."""
    client.flushall()
    empty = int(client.info("memory")["used_memory"])
    for chunk in workload.chunks(LOAD_CHUNK):
        client.mset(chunk)
    loaded = int(client.info("memory")["used_memory"])
    payload = sum(len(k.encode()) + len(v) for k, v in workload.items())
    sample_key = workload.keys[-1]
    if client.get(sample_key) != workload.value_of(sample_key):
        raise RuntimeError("redis returned a wrong value after loading")
    return MemoryFigure("redis-server used_memory", len(workload.keys), loaded - empty, payload)


def redis_paths(single: redis.Redis, pooled: redis.Redis, workload: Workload) -> list[Path]:
    s = workload.settings
    calls = KVCalls(single.get, single.set, single.mget, pooled.get)
    labels = KVLabels(
        get="redis-py GET (the reference)",
        set="redis-py SET",
        get_many=f"redis-py MGET of {s.batch} keys",
        concurrent_get=f"redis-py GET, {s.threads} threads over a pool",
    )
    return kv_paths("redis", calls, labels, KeyChoice.draw(workload), s.batch)


def _redis_parser() -> str:
    return "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python"


# -- bare gRPC ---------------------------------------------------------------------------


def start_echo(procs: Processes, stack: str, workload: Workload, forward: str = "") -> str:
    """The trivial servicer of `_echo_server` in a child process (``forward``: an aio relay to
    that server); returns its address."""
    port = free_port(HOST)
    s = workload.settings
    options = {"--port": port, "--stack": stack, "--keys": s.keys, "--value-size": s.value_size}
    if forward:
        options["--forward"] = forward
    name = f"gRPC {stack} relay server" if forward else f"gRPC {stack} echo server"
    child = procs.python(name, "-m", "benchmarks._echo_server", *flags(options))
    wait_for_port(child, HOST, port, READY_TIMEOUT_S)
    return f"{HOST}:{port}"


def grpc_paths(stack: contextlib.ExitStack, procs: Processes, workload: Workload) -> list[Path]:
    keys = [k.encode() for k in workload.singles()]
    channel = grpc.insecure_channel(start_echo(procs, "sync", workload))
    stack.callback(channel.close)
    grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_S)
    aio_address = start_echo(procs, "aio", workload)
    aio = stack.enter_context(contextlib.closing(AioEcho(aio_address)))
    peers = (aio_address, start_echo(procs, "aio", workload))
    fanout = stack.enter_context(contextlib.closing(AioFanout(peers, workload)))
    threaded = stack.enter_context(contextlib.closing(ThreadedEcho(aio_address, peers, workload)))
    relay_address = start_echo(procs, "aio", workload, forward=peers[1])
    relayed = stack.enter_context(contextlib.closing(ThreadedEcho(relay_address, (), workload)))
    per_thread = [[key.encode() for key in keys] for keys in workload.per_thread()]
    threads = workload.settings.threads
    return [
        Path(
            "grpc.sync.unary",
            "gRPC unary, sync stub and server",
            partial(time_calls, channel.unary_unary(_echo_server.GET), keys),
        ),
        Path("grpc.aio.unary", "gRPC unary, aio client and server", partial(aio.unary, keys)),
        Path(
            "grpc.aio.stream",
            "gRPC aio bidi stream, one message each way",
            partial(aio.stream, keys),
        ),
        Path(
            "grpc.aio.fanout",
            f"bare gRPC get_all floor: 2 aio streams in parallel + dict, {workload.settings.batch} keys",
            partial(fanout.get_many, workload.batches()),
            unit=f"batch of {workload.settings.batch}",
        ),
        Path(
            "grpc.aio.stream.thread",
            "gRPC aio bidi stream, called from a thread (the loop on a thread of its own)",
            partial(time_calls, threaded.get, keys),
        ),
        Path(
            "grpc.aio.relay.thread",
            "gRPC aio stream from a thread to a server that relays to a second (a backed-up write's floor)",
            partial(time_calls, relayed.get, keys),
        ),
        Path(
            "grpc.aio.concurrent",
            f"bare gRPC floor of {threads} threads: their calls batched, one aio message per server",
            partial(time_concurrent, threaded.get_batched, per_thread),
        ),
    ]


class AioEcho:
    """A grpc.aio channel on an event loop of its own, driven from synchronous code."""

    def __init__(self, address: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.channel = self.loop.run_until_complete(self._open(address))

    @staticmethod
    async def _open(address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
        return channel

    def unary(self, keys: Sequence[bytes]) -> Sample:
        get = self.channel.unary_unary(_echo_server.GET)
        return self.loop.run_until_complete(time_calls_async(get, keys))

    def stream(self, keys: Sequence[bytes]) -> Sample:
        return self.loop.run_until_complete(self._stream(keys))

    async def _stream(self, keys: Sequence[bytes]) -> Sample:
        call = self.channel.stream_stream(_echo_server.STREAM)()

        async def round_trip(key: bytes) -> object:
            await call.write(key)
            return await call.read()

        try:
            sample = await time_calls_async(round_trip, keys)
            await call.done_writing()
            await call.code()
        finally:
            call.cancel()  # no-op once the call has finished
        return sample

    def close(self) -> None:
        self.loop.run_until_complete(self.channel.close())
        self.loop.close()


class AioFanout:
    """The least a get_all over three members could cost with grpcio: a batch's keys split in
    thirds, one third looked up in a local dict (decoded, as an owner-local read is) and
    one sent to each of two servers on a bidi stream, both in flight at once; the servers
    answer with the values concatenated (no per-key framing, nothing decoded)."""

    def __init__(self, addresses: Sequence[str], workload: Workload) -> None:
        self.loop = asyncio.new_event_loop()
        self.channels = [self.loop.run_until_complete(AioEcho._open(a)) for a in addresses]
        self.table = {k: msgpack.packb(v) for k, v in workload.items()}

    def get_many(self, batches: Sequence[list[str]]) -> Sample:
        return self.loop.run_until_complete(self._get_many(batches))

    async def _get_many(self, batches: Sequence[list[str]]) -> Sample:
        calls = [channel.stream_stream(_echo_server.MANY)() for channel in self.channels]
        table, unpackb = self.table, msgpack.unpackb

        async def ask(call: grpc.aio.StreamStreamCall, keys: list[str]) -> object:
            await call.write(_echo_server.SEPARATOR.join([key.encode() for key in keys]))
            return await call.read()

        async def get_all(keys: list[str]) -> object:
            local = {key: unpackb(table[key]) for key in keys[0::3]}
            answers = await asyncio.gather(ask(calls[0], keys[1::3]), ask(calls[1], keys[2::3]))
            return local, answers

        try:
            return await time_calls_async(get_all, batches, keys_per_op=len(batches[0]))
        finally:
            for call in calls:
                call.cancel()

    def close(self) -> None:
        for channel in self.channels:
            self.loop.run_until_complete(channel.close())
        self.loop.close()


class _Waiter:
    """A calling thread parked until the loop thread hands it its value."""

    __slots__ = ("lock", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.value = b""


class ThreadedEcho:
    """The least a sync caller can cost over grpc.aio, whose objects belong to one event loop:
    the loop runs on a thread of its own (as a peergrid member's does) and a calling thread
    crosses to it and back, waking on a lock.

    ``get``: one call at a time over one bidi stream (the floor under a sync remote get: the
    bare stream plus that crossing). ``get_batched``: calls from many threads; whatever queued
    while the loop was busy goes as one message per server (keys split by their last byte, as
    over two owners), at most ``INFLIGHT`` messages in flight per stream, answered with the
    values concatenated (the floor under many threads doing remote gets: their wake-ups and
    one stream message per batch; no framing, checks or retries)."""

    INFLIGHT = 2  # as peergrid's default max_inflight_frames

    def __init__(self, single: str, pair: Sequence[str], workload: Workload) -> None:
        self.size = workload.settings.value_size
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="echo-loop", daemon=True)
        self._thread.start()
        self._queue: collections.deque[tuple[bytes, _Waiter]] = collections.deque()
        self._scheduled = False
        opened = asyncio.run_coroutine_threadsafe(self._open(single, pair), self.loop)
        self._channels, self._single, self._many = opened.result(READY_TIMEOUT_S)
        count = len(self._many)
        self._waiting: list[list[tuple[bytes, _Waiter]]] = [[] for _ in range(count)]
        self._sent: list[collections.deque[list[tuple[bytes, _Waiter]]]] = [
            collections.deque() for _ in range(count)
        ]
        self._writing = [False] * count
        self._tasks = [asyncio.run_coroutine_threadsafe(self._read(i), self.loop) for i in range(count)]

    @staticmethod
    async def _open(
        single: str, pair: Sequence[str]
    ) -> tuple[list[grpc.aio.Channel], grpc.aio.StreamStreamCall, list[grpc.aio.StreamStreamCall]]:
        channels = [await AioEcho._open(address) for address in (single, *pair)]
        many = [channel.stream_stream(_echo_server.MANY)() for channel in channels[1:]]
        return channels, channels[0].stream_stream(_echo_server.STREAM)(), many

    # -- one call at a time
    def get(self, key: bytes) -> bytes:
        waiter = _Waiter()
        self.loop.call_soon_threadsafe(self._start, key, waiter)
        waiter.lock.acquire()
        return waiter.value

    def _start(self, key: bytes, waiter: _Waiter) -> None:
        self.loop.create_task(self._round_trip(key, waiter))

    async def _round_trip(self, key: bytes, waiter: _Waiter) -> None:
        await self._single.write(key)
        waiter.value = await self._single.read()
        waiter.lock.release()

    # -- many threads
    def get_batched(self, key: bytes) -> bytes:
        waiter = _Waiter()
        self._queue.append((key, waiter))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._flush)
        waiter.lock.acquire()
        return waiter.value

    def _flush(self) -> None:
        self._scheduled = False  # before draining: a key queued after this schedules another
        queue, count = self._queue, len(self._many)
        while queue:
            item = queue.popleft()
            self._waiting[item[0][-1] % count].append(item)
        for i in range(count):
            self._send(i)

    def _send(self, i: int) -> None:
        if self._writing[i] or not self._waiting[i] or len(self._sent[i]) >= self.INFLIGHT:
            return
        batch, self._waiting[i] = self._waiting[i], []
        self._sent[i].append(batch)
        self._writing[i] = True  # grpc allows one write at a time per stream
        self.loop.create_task(self._write(i, _echo_server.SEPARATOR.join([key for key, _ in batch])))

    async def _write(self, i: int, message: bytes) -> None:
        await self._many[i].write(message)
        self._writing[i] = False
        self._send(i)

    async def _read(self, i: int) -> None:
        size = self.size
        while True:
            values = await self._many[i].read()
            if values is grpc.aio.EOF:
                return
            for n, (_, waiter) in enumerate(self._sent[i].popleft()):
                waiter.value = values[n * size : (n + 1) * size]
                waiter.lock.release()
            self._send(i)

    def close(self) -> None:
        async def stop() -> None:
            for call in (self._single, *self._many):
                call.cancel()
            for channel in self._channels:
                await channel.close()
            # (The readers wait on their streams: ended, not left pending when the loop closes.)
            readers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(READY_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(READY_TIMEOUT_S)
        self.loop.close()


# -- in-process dict ---------------------------------------------------------------------


def dict_paths(workload: Workload) -> list[Path]:
    """A dict of msgpack-encoded values: the floor under any owner-local read."""
    table = {k: msgpack.packb(v) for k, v in workload.items()}
    keys = workload.singles() * MICRO_REPEAT
    unpackb = msgpack.unpackb

    def get_decoded(key: str) -> object:
        return unpackb(table[key])

    timed = partial(time_calls, calls_per_sample=MICRO_SAMPLE)
    return [
        Path("dict.get", "Python dict get", partial(timed, table.__getitem__, keys)),
        Path("dict.get_decode", "Python dict get + msgpack decode", partial(timed, get_decoded, keys)),
    ]
