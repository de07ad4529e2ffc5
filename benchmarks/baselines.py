"""The baselines peergrid is measured against, each started and loaded here:

- redis-server through redis-py with the hiredis parser: GET, SET, MGET of 100, 64 threads
  doing GET over a connection pool, and used_memory per key;
- a bare gRPC unary round trip to a trivial servicer (sync stub and server; grpc.aio client
  and server), an aio bidi stream with one message each way, and the floor under a get_all
  of 100 keys spread over three members (two aio streams to two servers in parallel, a third
  of the keys each, the last third from a local dict);
- a plain dict get, with and without msgpack-decoding the value (the owner-local reference).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from benchmarks._timing import time_calls, time_calls_async
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


def start_echo(procs: Processes, stack: str, workload: Workload) -> str:
    """The trivial servicer of `_echo_server` in a child process; returns its address."""
    port = free_port(HOST)
    s = workload.settings
    options = {"--port": port, "--stack": stack, "--keys": s.keys, "--value-size": s.value_size}
    child = procs.python(f"gRPC {stack} echo server", "-m", "benchmarks._echo_server", *flags(options))
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
