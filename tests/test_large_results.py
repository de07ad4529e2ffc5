"""Bulk reads and writes larger than one transport message: answers travel in parts, a read never
reports a write error, and a read that cannot complete says how large its answer was."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import peergrid
from peergrid import Limits
from peergrid.errors import ResultTooLargeError
from peergrid.invocation.invoker import Call, Invoker
from peergrid.protocol import Code, Op, Result, Status
from peergrid.testing import TestCluster, cluster
from peergrid.transport import frames

MB = 1_000_000
# Three 10 MB values make an answer over the 24 MB message limit (the default limit is 64 MiB;
# lowered so that a few values, not seven, cross it: less memory and time for the test).
LIMITS = Limits(max_value_bytes=11 * MB, max_message_bytes=24 * MB)


@pytest.fixture(scope="module")
def big() -> Iterator[TestCluster]:
    with cluster(2, limits=LIMITS) as grids:
        yield grids


def keys_owned_by(owner: peergrid.Grid, count: int, pattern: str = "k{}") -> list[str]:
    keys, i = [], 0
    while len(keys) < count:
        key = pattern.format(i)
        if owner.owner_of(key).uuid == owner.uuid:
            keys.append(key)
        i += 1
    return keys


@pytest.mark.timeout(120)
def test_get_all_put_all_and_scans_over_the_message_limit(big, name) -> None:
    owner, reader = big
    keys = keys_owned_by(owner, 3)  # one frame to one owner, each way
    values = {k: bytes([i]) * (10 * MB) for i, k in enumerate(keys)}
    m = reader.get_map(name)
    m.put_all(values)  # a request over the limit: sent in several frames
    assert m.get_all(keys) == values  # an answer over the limit: received in several messages
    assert sorted(m.values()) == sorted(values.values())
    assert dict(m.items()) == values


@pytest.mark.timeout(120)
def test_a_partition_larger_than_a_message_is_read_in_parts(big, name) -> None:
    owner, reader = big
    tag = next(t for t in (f"{{t{i}}}" for i in range(100)) if owner.owner_of(t).uuid == owner.uuid)
    values = {f"{tag}{i}": bytes([i]) * (10 * MB) for i in range(3)}  # one partition: 30 MB
    m = reader.get_map(name)
    m.put_all(values)
    assert sorted(m.keys()) == sorted(values)
    assert dict(m.items()) == values
    assert m.popitem()[0] in values


@pytest.mark.timeout(120)
def test_keys_of_a_partition_over_the_limit_raise_a_read_error_naming_the_size(big, name) -> None:
    owner, reader = big
    tag = next(t for t in (f"{{u{i}}}" for i in range(100)) if owner.owner_of(t).uuid == owner.uuid)
    key_bytes = 60_000
    m = reader.get_map(name)
    m.put_all({tag + str(i).rjust(key_bytes, "x"): i for i in range(420)})  # 25 MB of keys
    with pytest.raises(ResultTooLargeError) as error:
        list(m.keys())
    assert error.value.size > LIMITS.max_message_bytes
    assert f"{error.value.size} bytes" in str(error.value)
    assert "max_message_bytes" in str(error.value)
    assert not isinstance(error.value, peergrid.errors.OperationTimeoutError)
    m.clear()


def test_answers_are_split_in_order_under_the_limit() -> None:
    results = [Result(value=bytes(40), found=True) for _ in range(10)]
    results.insert(3, Result(keys=[bytes(300)], values=[bytes(300)]))  # too large for any message
    parts = frames.replies_to_pb(7, 2, results, max_bytes=4096 + 200)
    assert len(parts) > 1
    assert all(part.ByteSize() <= 4096 + 200 for part in parts)
    back = [r for part in parts for r in frames.results_from_pb(part)[2]]
    assert [r.status for r in back] == [Status.OK] * 3 + [Status.TOO_LARGE] + [Status.OK] * 7
    assert back[3].count > 600
    assert all(r.value == bytes(40) for i, r in enumerate(back) if i != 3)
    assert len(frames.replies_to_pb(7, 2, results[:3], max_bytes=1 << 20)) == 1


class _Unreachable:
    """A pipe whose peer takes the op and then breaks the stream, every time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def submit(self, call: Call) -> None:
        self.loop.call_soon(call.handle, Result(Status.UNREACHABLE, found=True, message="stream broke"))


class _Router:
    closed = False

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pipe = _Unreachable(loop)

    def pipe_for(self, partition: int) -> _Unreachable:
        return self.pipe

    def pipes_for(self, partitions: list[int]) -> list[_Unreachable]:
        return [self.pipe] * len(partitions)

    def execute_local(self, op: Op) -> Result:
        raise AssertionError("not local")


@pytest.mark.parametrize(("code", "status"), [(Code.GET, Status.TIMEOUT), (Code.PUT, Status.INDETERMINATE)])
def test_a_read_sent_and_lost_times_out_and_a_write_is_indeterminate(code: int, status: int) -> None:
    async def scenario() -> Result:
        loop = asyncio.get_running_loop()
        invoker = Invoker(_Router(loop), retry_initial=0.01, retry_max=0.02)  # type: ignore[arg-type]
        done: asyncio.Future[Result] = loop.create_future()
        call = Call(invoker, Op(code, 0, "m", b"k"), time.monotonic() + 0.2, on_done=done.set_result)
        invoker.start(call)
        return await asyncio.wait_for(done, 5)

    assert asyncio.run(scenario()).status == status
