"""Hostile load against a member process: what it costs the member, and a legitimate member.

Member A runs as a ``peergrid member`` process, so its memory can be read from
/proc; the attacker runs in a process of its own (``tests/attacker.py``), so
its CPU stays out of this one; a legitimate member L, in this process, reads
keys that A owns and times each read. Each test measures A's resident memory
and L's get p50 before an attack, while the attack is held, and after it is
released, prints the figures (``pytest -s``) and asserts bounds wide enough
for a loaded CI machine. The targets: map-name attacks keep nothing (a few MB
for 20,000 names; huge names cost what grpc holds for the request in flight,
and the allocator keeps some of it for reuse, but the member levels off),
a subscriber that never reads costs at most its buffer limit, and a get p50
stays under 20 ms with 2,000 subscriptions or connections.

The whole module takes ~40 s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import peergrid
from peergrid import Limits, Timing
from tests.conftest import wait_for
from tests.processes import MemberProcess

pytestmark = pytest.mark.timeout(180)

LIMITS = Limits()  # what a `peergrid member` process runs with
MB = 1 << 20
P50_BOUND = 0.020  # seconds: the bound on a legitimate get's p50 under attack
READS = 200  # gets timed per measurement


@dataclass
class Target:
    member: MemberProcess
    legit: peergrid.Grid
    keys: list[str]  # keys A owns
    cluster: str

    @property
    def pid(self) -> int:
        return int(self.member.proc.pid)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    cluster = f"hostile-{uuid.uuid4().hex[:8]}"
    # A fixed mmap threshold: glibc otherwise raises it to the size of each large block freed
    # (up to 32 MB), so after the first 20 MB request such buffers come from the heap arenas of
    # whichever grpc thread took them, and a round's RSS stepped up by one or two of them at
    # random (226, 227, 274 MB in one CI run): the allocator's keeping, not the member's.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    member = MemberProcess(cluster, [], popen=functools.partial(subprocess.Popen, env=env))
    try:
        with peergrid.Grid(cluster=cluster, members=[member.address], timing=Timing.fast()) as legit:
            assert legit.wait_until_safe(30)
            keys = [k for k in (f"k{i}" for i in range(400)) if _owner(legit, k) == member.address][:50]
            legit.get_map("m").put_all(dict.fromkeys(keys, "v"))
            yield Target(member, legit, keys, cluster)
    finally:
        member.stop()


def _owner(grid: peergrid.Grid, key: str) -> str | None:
    owner = grid.owner_of(key)
    return owner.address if owner is not None else None


# -- measuring -----------------------------------------------------------------------------------


def rss(pid: int) -> float:
    """Resident memory of process ``pid``, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Peak:
    """The highest resident memory of a process while the ``with`` block runs (sampled)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.value = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.value = max(self.value, rss(self.pid))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.value = max(self.value, rss(self.pid))


def get_p50(target: Target, budget: float = 15.0) -> float:
    """L's median get latency (seconds) over ``READS`` gets of keys A owns.

    A get that fails counts as the time it took; the measurement stops early
    after ``budget`` seconds (under a flood, gets can take seconds each).
    """
    m = target.legit.get_map("m")
    times = []
    deadline = time.monotonic() + budget
    for i in range(READS):
        start = time.perf_counter()
        with contextlib.suppress(peergrid.PeerGridError):
            m.get(target.keys[i % len(target.keys)])
        times.append(time.perf_counter() - start)
        if time.monotonic() > deadline:
            break
    return statistics.median(times)


@dataclass
class Figures:
    """Memory (MB) and get p50 (s) before, during (peak memory) and after an attack."""

    name: str
    rss_before: float
    p50_before: float
    rss_peak: float = 0.0
    p50_during: float = 0.0
    rss_after: float = 0.0
    p50_after: float = 0.0

    @property
    def growth(self) -> float:
        return self.rss_peak - self.rss_before

    def report(self) -> None:
        print(
            f"\n[{self.name}] member RSS {self.rss_before:.0f} MB -> peak {self.rss_peak:.0f} MB "
            f"(+{self.growth:.0f}) -> after {self.rss_after:.0f} MB; legitimate get p50 "
            f"{self.p50_before * 1000:.2f} ms -> {self.p50_during * 1000:.2f} ms -> "
            f"{self.p50_after * 1000:.2f} ms"
        )


def before(target: Target, name: str) -> Figures:
    return Figures(name, rss(target.pid), get_p50(target))


# -- the attacker process --------------------------------------------------------------------------


class Attacker:
    """``tests/attacker.py`` in its own process, aimed at member A."""

    def __init__(self, target: Target) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.attacker", target.member.address, target.cluster],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def __enter__(self) -> Attacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert answer["ok"], answer["error"]
        return answer["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def settle(target: Target, figures: Figures) -> None:
    """Measure after the attack was released."""
    figures.rss_after = rss(target.pid)
    figures.p50_after = get_p50(target)
    figures.report()


# -- attacks -----------------------------------------------------------------------------------------


def test_map_stats_of_many_names_keeps_nothing(target: Target) -> None:
    figures = before(target, "MapStats, 20,000 distinct short names")
    with Attacker(target) as attack, Peak(target.pid) as peak:
        outcomes = attack("map_stats", count=20_000, size=20)
        figures.p50_during = get_p50(target)
    figures.rss_peak = peak.value
    settle(target, figures)
    assert outcomes == {"OK": 20_000}  # stats of a map nobody wrote: zeros
    assert figures.rss_after - figures.rss_before < 16, "a read created state per name"  # was +170 MB


def test_a_values_subscriber_that_never_reads_costs_at_most_its_buffer(target: Target) -> None:
    figures = before(target, "an unread values subscription, one key overwritten 300x with 1 MB")
    key = target.keys[0]
    m = target.legit.get_map("m")
    value = b"\x00" * MB
    with Attacker(target) as attack:
        opened = attack("subscribe", count=1, interval=1.0, values=True, read=False)
        assert opened["accepted"] == 1
        with Peak(target.pid) as peak:
            for _ in range(300):
                m.set(key, value)
        figures.rss_peak = peak.value
        figures.p50_during = get_p50(target)
        m.set(key, "v")
    settle(target, figures)
    wait_for(lambda: target.member.logged("dropped the event subscription"), message="the subscriber dropped")
    # Besides the buffer: the 1 MB writes themselves pass through the member (and its backups).
    assert figures.growth < LIMITS.max_subscription_buffer_bytes / MB + 32


@pytest.mark.parametrize("spoof", [False, True], ids=["one-peer", "spoofed-uuids"])
def test_two_thousand_subscriptions_leave_gets_fast(target: Target, spoof: bool) -> None:
    figures = before(target, f"2,000 subscriptions ({'each a made-up member' if spoof else 'one peer'})")
    with Attacker(target) as attack, Peak(target.pid) as peak:
        flood = attack("subscribe", count=2000, interval=0.01, spoof=spoof)
        floor = attack("subscribe", count=2000, interval=LIMITS.min_heartbeat_interval, spoof=spoof)
        figures.p50_during = get_p50(target)
        received = attack("stats")
    figures.rss_peak = peak.value
    settle(target, figures)
    print(f"  below the floor: {flood}\n  at the floor: {floor}\n  attacker: {received}")
    assert flood["accepted"] == 0
    assert set(flood["refused"]) == {"INVALID_ARGUMENT"}
    cap = LIMITS.max_subscriptions if spoof else LIMITS.max_subscriptions_per_peer
    assert floor["accepted"] <= cap
    assert set(floor["refused"]) == {"RESOURCE_EXHAUSTED"}
    assert figures.growth < 100
    assert figures.p50_during < P50_BOUND
    assert figures.p50_after < P50_BOUND


def test_two_thousand_idle_connections_and_streams_leave_gets_fast(target: Target) -> None:
    figures = before(target, "2,000 half-open TCP connections and 2,000 idle frame streams")
    with Attacker(target) as attack, Peak(target.pid) as peak:
        connections = attack("connections", count=2000)
        streams = attack("streams", count=2000)
        figures.p50_during = get_p50(target)
    figures.rss_peak = peak.value
    settle(target, figures)
    print(f"  {connections}, {streams}")
    assert connections["opened"] == 2000
    assert figures.growth < 150  # ~13 KB a connection or stream (measured ~55 MB for these)
    assert figures.p50_during < P50_BOUND
    assert figures.p50_after < P50_BOUND


# Last: the allocator keeps much of what grpc took for these requests, which would hide the
# growth the tests above measure.
def test_map_stats_of_huge_names_are_refused_and_keep_nothing(target: Target) -> None:
    figures = before(target, "MapStats, 3 x 20 distinct names of 20 MB")
    rounds = []
    with Attacker(target) as attack, Peak(target.pid) as peak:
        for _ in range(3):
            assert attack("map_stats", count=20, size=20 * MB) == {"INVALID_ARGUMENT": 20}
            rounds.append(rss(target.pid))
    figures.rss_peak, figures.p50_during = peak.value, get_p50(target)
    settle(target, figures)
    print("  after each round: " + ", ".join(f"{r:.0f} MB" for r in rounds))
    # A refused name is not kept (tests/test_hostile.py checks the member's state). grpc takes
    # each request whole, and the allocator keeps some of that memory for reuse: the member's
    # size levels off after the first requests, where it grew by 20 MB a name before.
    assert rounds[2] - rounds[1] < 40, "refused names were kept"
    assert figures.growth < 400  # grpc's copies of one request at a time, and what the allocator keeps
