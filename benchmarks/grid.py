"""peergrid, the subject: a 3-member cluster measured beside the baselines.

Two members run as `python -m peergrid member` children; the benchmark process itself joins
as the third, so its map calls for keys owned elsewhere are remote gets. Written against the
public API (Grid, get_map, get/set/get_all/put_all, members, local_stats, shutdown), using
owner_of and wait_until_safe where the grid has them. If peergrid cannot be imported or lacks
that API, the harness says why and measures the baselines alone; an error while starting or
measuring drops the peergrid paths, not the run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from benchmarks._kv import KeyChoice, KVCalls, KVLabels, kv_paths
from benchmarks._proc import Processes, flags, free_port, wait_for_port, wait_until
from benchmarks._results import MemoryFigure, Sample, error_summary
from benchmarks._rounds import Outcome, Path, run_rounds
from benchmarks._timing import time_calls
from benchmarks._workload import Workload, key_name

HOST = "127.0.0.1"
MAP = "bench"
MEMBERS = 3
LOAD_CHUNK = 1_000
OWNERSHIP_SAMPLE = 20_000  # keys whose owner is looked up to draw remote and local keys
PROBE_KEYS = 300  # keys watched until ownership stops moving after the members join
JOIN_TIMEOUT_S = 60.0
MEMORY_TIMEOUT_S = 900.0
REQUIRED_API = ("Grid",)
IN_PROCESS_NOTE = (
    "the benchmark process hosts a peergrid member during the main rounds: its loop thread "
    "shares the GIL and the CPU with every client path (--no-grid for baselines without it)"
)

# Which baseline each peergrid path runs right after in a round (see _rounds.interleave).
PAIRS = {
    "pg.get.local": "dict.get_decode",
    "pg.get": "grpc.sync.unary",
    "pg.set": "redis.set",
    "pg.get_many": "redis.get_many",
    "pg.get.concurrent": "redis.get",
}


def unavailable_reason() -> str | None:
    """Why peergrid cannot be measured, or None when the public API is there."""
    try:
        module = importlib.import_module("peergrid")
    except Exception as exc:
        return f"import peergrid failed: {error_summary(exc)}"
    missing = [name for name in REQUIRED_API if not hasattr(module, name)]
    if missing:
        return f"peergrid has no {', '.join(missing)} yet"
    if importlib.util.find_spec("peergrid.__main__") is None:
        return "`python -m peergrid member` is missing (no peergrid/__main__.py)"
    return None


@dataclass
class Cluster:
    grid: Any
    map: Any
    backup_count: int


@dataclass(frozen=True)
class Ownership:
    """Keys owned by another member, keys owned by the benchmark member, and any caveat."""

    remote: list[str]
    local: list[str]
    note: str | None = None


@dataclass
class Subject:
    paths: list[Path] = field(default_factory=list)
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)


def start(stack: contextlib.ExitStack, procs: Processes, workload: Workload) -> Subject:
    """A loaded backup_count=0 cluster and its paths; on any failure, the reason instead."""
    reason = unavailable_reason()
    if reason is not None:
        return Subject(unavailable=reason)
    cluster_stack = stack.enter_context(contextlib.ExitStack())
    try:
        cluster = start_cluster(cluster_stack, procs, backup_count=0)
        load(cluster, workload)
        ownership = split_by_owner(cluster, workload.keys)
    except Exception as exc:
        cluster_stack.close()  # stop its members now: they would compete with the baselines
        return Subject(unavailable=f"failed to start: {error_summary(exc)}")
    notes = [IN_PROCESS_NOTE, *([f"peergrid: {ownership.note}"] if ownership.note else [])]
    return Subject(grid_paths(cluster, workload, ownership), notes=notes)


def start_cluster(stack: contextlib.ExitStack, procs: Processes, backup_count: int) -> Cluster:
    """Two CLI members plus this process; returns once all three see each other.

    Each member is seeded with the members already running (the first starts alone), so
    the cluster forms by plain joins; seeding the CLI members with each other made this
    process's Grid come up alone about one start in ten.
    """
    peergrid = importlib.import_module("peergrid")
    name = f"bench-b{backup_count}"
    addresses = [f"{HOST}:{free_port(HOST)}" for _ in range(MEMBERS - 1)]
    for index, address in enumerate(addresses):
        seeds = ",".join(addresses[:index])
        options = {"--cluster": name, "--bind": address, "--members": seeds, "--backup-count": backup_count}
        child = procs.python(f"peergrid member {address}", "-m", "peergrid", "member", *flags(options))
        stack.callback(procs.stop, child)
        wait_for_port(child, HOST, int(address.rsplit(":", 1)[1]), JOIN_TIMEOUT_S)
    grid = peergrid.Grid(cluster=name, bind=f"{HOST}:0", members=addresses, backup_count=backup_count)
    stack.callback(grid.shutdown)
    wait_until(lambda: len(grid.members()) == MEMBERS, JOIN_TIMEOUT_S, f"{MEMBERS} members")
    wait_until_safe(grid)
    owner = owner_lookup(grid)
    if owner is not None:
        settle(owner, [key_name(i) for i in range(PROBE_KEYS)])
    return Cluster(grid, grid.get_map(MAP), backup_count)


def wait_until_safe(grid: Any) -> None:
    """Let migrations and backups finish, where the grid can say so (grid.wait_until_safe)."""
    safe = getattr(grid, "wait_until_safe", None)
    if safe is not None and not safe(timeout=JOIN_TIMEOUT_S):
        raise TimeoutError(f"grid not safe after {JOIN_TIMEOUT_S:.0f} s (migrations running)")


def owner_lookup(grid: Any) -> Callable[[str], str] | None:
    """key -> owner's address, from grid.owner_of(key) (a Member, or its address) or the
    contract's grid.owner_of(map_name, key); None when the grid has no owner_of."""
    owner_of = getattr(grid, "owner_of", None)
    if owner_of is None:
        return None
    per_map = len(inspect.signature(owner_of).parameters) >= 2
    call = partial(owner_of, MAP) if per_map else owner_of

    def lookup(key: str) -> str:
        owner = call(key)
        return str(getattr(owner, "address", owner))

    return lookup


def load(cluster: Cluster, workload: Workload) -> None:
    """put_all every key, then check a sample of reads."""
    for chunk in workload.chunks(LOAD_CHUNK):
        cluster.map.put_all(chunk)
    wait_until_safe(cluster.grid)
    probe = workload.keys[:: max(1, len(workload.keys) // 100)]
    found = cluster.map.get_all(probe)
    wrong = [k for k in probe if found.get(k) != workload.value_of(k)]
    if wrong or cluster.map.get(probe[0]) != workload.value_of(probe[0]):
        raise RuntimeError(f"peergrid returned wrong values after loading (e.g. {wrong[:3]})")


def settle(owner: Callable[[str], str], probe: Sequence[str]) -> None:
    """Wait until every member owns some probe keys and two reads in a row agree."""
    last: list[str] = []

    def settled() -> bool:
        nonlocal last
        now = [owner(k) for k in probe]
        stable = now == last and len(set(now)) == MEMBERS
        last = now
        return stable

    wait_until(settled, JOIN_TIMEOUT_S, "partition ownership to settle on 3 members")


def split_by_owner(cluster: Cluster, keys: Sequence[str]) -> Ownership:
    owner = owner_lookup(cluster.grid)
    if owner is None:
        note = "grid.owner_of is missing: 'remote' paths use keys of any owner, no local figure"
        return Ownership(list(keys), [], note)
    me = cluster.grid.address
    local, remote = [], []
    for key in keys[:OWNERSHIP_SAMPLE]:
        (local if owner(key) == me else remote).append(key)
    return Ownership(remote, local)


def grid_paths(cluster: Cluster, workload: Workload, ownership: Ownership) -> list[Path]:
    s = workload.settings
    m = cluster.map
    which = "remote key" if ownership.note is None else "key of any owner"
    labels = KVLabels(
        get=f"peergrid get, {which}",
        set=f"peergrid set, {which}, backup_count 0",
        get_many=f"peergrid get_all of {s.batch} keys (on all members)",
        concurrent_get=f"peergrid get, {s.threads} threads, {which}s",
    )
    calls = KVCalls(m.get, m.set, m.get_all, m.get)
    paths = kv_paths("pg", calls, labels, KeyChoice.draw(workload, ownership.remote), s.batch)
    if ownership.local:
        local_keys = workload.singles(ownership.local)
        paths.append(
            Path(
                "pg.get.local",
                "peergrid get, owner-local key",
                partial(time_calls, m.get, local_keys),
            )
        )
    return paths


def write_series(
    procs: Processes,
    workload: Workload,
    redis_set: Path,
    counts: Sequence[int],
    floors: Sequence[Path] = (),
) -> dict[str, Outcome]:
    """For each backup count, a fresh cluster whose set (pg.set.bN) is interleaved with
    redis-py SET (redis.set@bN) and the ``floors`` (NAME@bN: the bare aio stream a set is
    taken against, the relayed stream of a backed-up write) in rounds of its own; the cluster
    is stopped after."""
    outcomes: dict[str, Outcome] = {}
    for count in counts:
        baseline = replace(redis_set, name=f"redis.set@b{count}")
        floor = [replace(path, name=f"{path.name}@b{count}") for path in floors]
        phase = f"backup_count {count}"
        with contextlib.ExitStack() as stack:
            try:
                cluster = start_cluster(stack, procs, count)
            except Exception as exc:
                failed = Path(f"pg.set.b{count}", f"peergrid set, backup_count {count}", _never)
                outcomes[failed.name] = Outcome(failed, phase, error=error_summary(exc))
                continue
            paths = [baseline, *floor, *_write_paths(cluster, workload)]
            outcomes |= run_rounds(paths, workload.settings.rounds, phase)
    return outcomes


def _write_paths(cluster: Cluster, workload: Workload) -> list[Path]:
    """The set of remote keys (pg.set.bN); with backups, also split by whether this member
    holds the key's copy (pg.set.bN.copy: the owner's copy to it is its answer, one round
    trip) or not (pg.set.bN.apart: to the owner, its backup and back, two)."""
    ownership = split_by_owner(cluster, workload.keys)
    count = cluster.backup_count
    ops = workload.settings.series_ops

    def path(name: str, label: str, keys: Sequence[str]) -> Path:
        writes = KeyChoice.draw(workload, keys).writes[:ops]
        return Path(name, label, partial(time_calls, lambda kv: cluster.map.set(*kv), writes))

    paths = [path(f"pg.set.b{count}", f"peergrid set, backup_count {count}", ownership.remote)]
    holds = copy_lookup(cluster.grid)
    if count and holds is not None:
        copy = [key for key in ownership.remote if holds(key)]
        apart = [key for key in ownership.remote if not holds(key)]
        if copy and apart:
            label = f"peergrid set, backup_count {count}, the caller holding"
            paths.append(path(f"pg.set.b{count}.copy", f"{label} the copy", copy))
            paths.append(path(f"pg.set.b{count}.apart", f"{label} none", apart))
    return paths


def copy_lookup(grid: Any) -> Callable[[str], bool] | None:
    """key -> whether this member holds a backup copy of it (peergrid's partition table; not
    a public API, so None when it is not there)."""
    try:
        from peergrid.partition.hashing import partition_of
        from peergrid.serialization.keys import encode_key

        node, count = grid._node, grid.config.partition_count
    except (ImportError, AttributeError):
        return None

    def holds(key: str) -> bool:
        return grid.uuid in node.manager.table.replicas[partition_of(encode_key(key), count)][1:]

    return holds


def _never() -> Sample:
    raise RuntimeError("not measured")


def measure_memory(procs: Processes, workload: Workload) -> MemoryFigure:
    """RSS growth of one single-member peergrid process holding `memory_entries` entries."""
    s = workload.settings
    options = {"--entries": s.memory_entries, "--value-size": s.value_size}
    child = procs.python("peergrid memory probe", "-m", "benchmarks._grid_memory", *flags(options))
    try:
        code = child.wait(MEMORY_TIMEOUT_S)
    finally:
        procs.stop(child)
    lines = child.log_tail().splitlines()
    if code != 0 or not lines:
        raise RuntimeError(f"memory probe exited with {code}: {child.log_tail()}")
    figure = json.loads(lines[-1])
    return MemoryFigure("peergrid member RSS growth", **figure)
