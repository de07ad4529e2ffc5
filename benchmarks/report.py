"""The printed report, generated from the results alone (no measuring here).

Every ratio is taken per round between two paths measured in that round, and the median is
shown with the range over rounds: absolute figures on a shared VM drift by a third between
runs, ratios between neighbours in time much less.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from benchmarks._results import MemoryFigure, Sample
from benchmarks._rounds import Outcome
from benchmarks._workload import Settings

REFERENCE = "redis.get"
BUSY_LOAD = 2.0  # this run alone keeps the 1-minute load average near 1 (one runnable process at a time)
Metric = Callable[[Sample], float]


def p50(s: Sample) -> float:
    return s.p50_us


def time_per_key(s: Sample) -> float:
    return 1.0 / s.keys_per_s


def keys_per_s(s: Sample) -> float:
    return s.keys_per_s


def ops_per_s(s: Sample) -> float:
    return s.ops_per_s


@dataclass
class Results:
    settings: Settings
    placement: list[str]  # how processes were placed, as measured
    versions: dict[str, str]
    outcomes: dict[str, Outcome]  # every path of every phase, by name
    memory: list[MemoryFigure]
    grid_unavailable: str | None  # why peergrid was not measured, or None
    backup_counts: Sequence[int] = ()
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None


def ratio(results: Results, subject: str, baseline: str, metric: Metric) -> Spread | None:
    """metric(subject) / metric(baseline) per round; None unless both were measured in the
    same rounds."""
    num, den = results.outcomes.get(subject), results.outcomes.get(baseline)
    if num is None or den is None or num.phase != den.phase:
        return None
    # a path that failed part-way has fewer samples; rounds line up from the first one
    return Spread.of([metric(a) / metric(b) for a, b in zip(num.samples, den.samples, strict=False)])


def median_of(outcome: Outcome, metric: Metric) -> float:
    return statistics.median(metric(s) for s in outcome.samples)


# -- formatting ------------------------------------------------------------------------------


def rate(value: float) -> str:
    for scale, suffix in ((1e6, " M"), (1e3, " k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def micros(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def times(spread: Spread | None) -> str:
    if spread is None:
        return "-"
    return f"{spread.median:.3g}x ({spread.low:.3g}-{spread.high:.3g})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *map(line, rows)]


# -- targets -----------------------------------------------------------------------------------


Measure = Callable[[Results], tuple[float, str] | None]


@dataclass(frozen=True)
class Target:
    """A peergrid goal; `measure` gives (value, as shown) or None when it was not measured."""

    label: str
    bound: Literal["<=", ">="]
    limit: float
    unit: str
    measure: Measure

    def row(self, results: Results) -> list[str]:
        bound = f"{self.bound} {self.limit:g}{self.unit}"
        got = self.measure(results)
        if got is None:
            return [self.label, "-", bound, "not measured"]
        value, shown = got
        met = value <= self.limit if self.bound == "<=" else value >= self.limit
        return [self.label, shown, bound, "meets" if met else "misses"]


def _ratio_of(subject: str, baseline: str, metric: Metric) -> Measure:
    def measure(results: Results) -> tuple[float, str] | None:
        spread = ratio(results, subject, baseline, metric)
        return None if spread is None else (spread.median, times(spread))

    return measure


def _p50_of(name: str) -> Measure:
    def measure(results: Results) -> tuple[float, str] | None:
        outcome = results.outcomes.get(name)
        if outcome is None or not outcome.samples:
            return None
        value = median_of(outcome, p50)
        return value, f"{micros(value)} µs"

    return measure


def _grid_memory(results: Results) -> tuple[float, str] | None:
    figure = next((m for m in results.memory if m.label.startswith("peergrid")), None)
    if figure is None:
        return None
    return figure.overhead_per_entry, f"{figure.overhead_per_entry:.0f} B"


# fmt: off
TARGETS = [
    Target("owner-local get p50", "<=", 5, " µs", _p50_of("pg.get.local")),
    Target("remote get p50 / bare gRPC unary p50 (sync)", "<=", 1.3, "x",
           _ratio_of("pg.get", "grpc.sync.unary", p50)),
    Target("remote get p50 / bare gRPC unary p50 (aio)", "<=", 1.3, "x",
           _ratio_of("pg.get", "grpc.aio.unary", p50)),
    Target("remote get p50 / bare aio stream p50 (one message each way)", "<=", 1.5, "x",
           _ratio_of("pg.get", "grpc.aio.stream", p50)),
    Target("set, backup_count 1, p50 / bare aio stream p50 (its own rounds)", "<=", 2.6, "x",
           _ratio_of("pg.set.b1", "grpc.aio.stream@b1", p50)),
    Target("get_all(100) keys/s / bare gRPC get_all floor keys/s", ">=", 0.8, "x",
           _ratio_of("pg.get_many", "grpc.aio.fanout", keys_per_s)),
    Target("get_all(100) keys/s / redis-py MGET keys/s", ">=", 0.3, "x",
           _ratio_of("pg.get_many", "redis.get_many", keys_per_s)),
    Target("64 concurrent remote gets ops/s / redis-py GET ops/s", ">=", 1, "x",
           _ratio_of("pg.get.concurrent", "redis.get", ops_per_s)),
    Target("memory beyond key+value bytes, per entry", "<=", 150, " B", _grid_memory),
]
# fmt: on


# -- sections ----------------------------------------------------------------------------------


def render(results: Results) -> str:
    notes = ["notes:", *(f"- {note}" for note in results.notes)] if results.notes else []
    sections = [
        _header(results),
        _paths(results),
        _targets(results),
        _backups(results),
        _memory(results),
        notes,
    ]
    return "\n".join(line for section in sections if section for line in [*section, ""])


def _header(results: Results) -> list[str]:
    s = results.settings
    versions = ", ".join(f"{name} {version}" for name, version in results.versions.items())
    return [
        "peergrid benchmarks",
        f"software: {versions}",
        *(f"placement: {line}" for line in results.placement),
        _load_line(results.load),
        (
            f"workload: {s.keys:,} keys of {s.value_size}-byte values; per path per round "
            f"{s.ops:,} single-key calls, {s.batches:,} batches of {s.batch}, or {s.threads} "
            f"threads x {s.ops_per_thread:,} calls"
        ),
        (
            f"rounds: {s.rounds} measured after 1 warm-up, paths interleaved (order reversed "
            "every other round); figures are medians over rounds; ratios are taken per round, "
            "shown as median (min-max)"
        ),
    ]


def _load_line(load: tuple[float, float]) -> str:
    line = f"machine load (1-minute average): {load[0]:.1f} at the start, {load[1]:.1f} at the end"
    if max(load) > BUSY_LOAD:
        line += " - other work was running: absolute figures are unreliable, ratios less so"
    return line


def _paths(results: Results) -> list[str]:
    reference = results.outcomes.get(REFERENCE)
    phase = reference.phase if reference else None  # the other phases have their own tables
    rows = [_path_row(results, o) for o in results.outcomes.values() if o.phase == phase]
    header = ["path", "keys/s", "p50 µs", "p99 µs", "p50/p99 per", "time/key vs redis-py GET"]
    lines = table(header, rows)
    if results.grid_unavailable:
        lines.append(f"peergrid: not available ({results.grid_unavailable})")
    if reference is None or not reference.samples:
        lines.append("(redis-py GET was not measured: no time/key ratios)")
    return lines


def _path_row(results: Results, outcome: Outcome) -> list[str]:
    label = outcome.path.label
    if not outcome.samples:
        return [label, "-", "-", "-", "-", f"failed: {outcome.error}"]
    reference = ratio(results, outcome.path.name, REFERENCE, time_per_key)
    shown = "1x (the reference)" if outcome.path.name == REFERENCE else times(reference)
    failed = f"  (failed after {len(outcome.samples)} rounds)" if outcome.error else ""
    return [
        label,
        rate(median_of(outcome, keys_per_s)),
        micros(median_of(outcome, p50)),
        micros(median_of(outcome, lambda s: s.p99_us)),
        outcome.path.unit,
        shown + failed,
    ]


# What grpcio itself allows here, beside the targets it bounds: a target above its floor
# cannot be met by any design that talks gRPC between members.
FLOORS = [
    (
        "bare gRPC get_all floor keys/s / redis-py MGET keys/s (the best any gRPC design reaches)",
        "grpc.aio.fanout",
        "redis.get_many",
        keys_per_s,
    ),
    ("peergrid get_all(100) keys/s / that floor", "pg.get_many", "grpc.aio.fanout", keys_per_s),
    (
        "bare aio stream called from a thread p50 / bare aio stream p50 (a sync caller's floor)",
        "grpc.aio.stream.thread",
        "grpc.aio.stream",
        p50,
    ),
    ("peergrid remote get p50 / that floor", "pg.get", "grpc.aio.stream.thread", p50),
    (
        "aio stream from a thread through a relay p50 / aio stream p50 (a backed-up write's floor)",
        "grpc.aio.relay.thread@b1",
        "grpc.aio.stream@b1",
        p50,
    ),
    ("peergrid set, backup_count 1, p50 / that floor", "pg.set.b1", "grpc.aio.relay.thread@b1", p50),
    (
        "peergrid set, backup_count 1, the caller holding no copy, p50 / that floor",
        "pg.set.b1.apart",
        "grpc.aio.relay.thread@b1",
        p50,
    ),
    (
        "peergrid set, backup_count 1, the caller holding the copy, p50 / bare aio stream p50",
        "pg.set.b1.copy",
        "grpc.aio.stream@b1",
        p50,
    ),
    (
        "64 threads batched over bare aio streams ops/s / redis-py GET ops/s (their floor)",
        "grpc.aio.concurrent",
        "redis.get",
        ops_per_s,
    ),
    (
        "peergrid 64 concurrent remote gets ops/s / that floor",
        "pg.get.concurrent",
        "grpc.aio.concurrent",
        ops_per_s,
    ),
]


def _targets(results: Results) -> list[str]:
    if results.grid_unavailable:
        return []
    rows = [t.row(results) for t in TARGETS]
    floors = [[label, times(ratio(results, a, b, metric))] for label, a, b, metric in FLOORS]
    return [
        "peergrid targets",
        *table(["goal", "measured", "target", "status"], rows),
        "",
        "gRPC's floor on this machine",
        *table(["figure", "measured"], floors),
    ]


def _backups(results: Results) -> list[str]:
    rows = []
    for count in results.backup_counts:
        rows.append(_backup_row(results, count))
        if count:  # the same sets, split by whether the caller holds the key's copy
            rows.append(_backup_row(results, count, ".copy", " (caller holds the copy)"))
            rows.append(_backup_row(results, count, ".apart", " (caller holds none)"))
    header = [
        "backup_count",
        "set p50 µs",
        "p99 µs",
        "ops/s",
        "p50 vs redis-py SET p50",
        "p50 vs aio stream p50",
    ]
    table_rows = [row for row in rows if row]
    if not table_rows:
        return []
    return ["peergrid write (remote key) by backup count", *table(header, table_rows)]


def _backup_row(results: Results, count: int, part: str = "", label: str = "") -> list[str]:
    """backup_count 0 is the main rounds' set; the others ran in rounds of their own, each
    beside redis-py SET (redis.set@bN). ``part``: one of the sets' split (``_write_paths``)."""
    subject, baseline = ("pg.set", "redis.set") if count == 0 else (
        f"pg.set.b{count}{part}", f"redis.set@b{count}")  # fmt: skip
    outcome = results.outcomes.get(subject)
    if outcome is None:
        return []
    if not outcome.samples:
        return [f"{count}{label}", "-", "-", "-", f"failed: {outcome.error}", "-"]
    stream = "grpc.aio.stream" if count == 0 else f"grpc.aio.stream@b{count}"
    return [
        f"{count}{label}",
        micros(median_of(outcome, p50)),
        micros(median_of(outcome, lambda s: s.p99_us)),
        rate(median_of(outcome, ops_per_s)),
        times(ratio(results, subject, baseline, p50)),
        times(ratio(results, subject, stream, p50)),
    ]


def _memory(results: Results) -> list[str]:
    rows = [
        [m.label, f"{m.entries:,}", f"{m.per_entry:.0f}", f"{m.overhead_per_entry:.0f}"]
        for m in results.memory
    ]
    header = ["memory", "entries", "bytes/entry", "beyond key+value bytes"]
    return table(header, rows) if rows else []


def as_json(results: Results) -> dict[str, object]:
    """The raw results (every round's sample) for keeping beside the printed report."""
    return {
        "settings": asdict(results.settings),
        "placement": results.placement,
        "versions": results.versions,
        "grid_unavailable": results.grid_unavailable,
        "paths": {
            name: {
                "label": o.path.label,
                "phase": o.phase,
                "per": o.path.unit,
                "error": o.error,
                "rounds": [{**asdict(s), "keys_per_s": s.keys_per_s} for s in o.samples],
            }
            for name, o in results.outcomes.items()
        },
        "memory": [
            {**asdict(m), "per_entry": m.per_entry, "overhead_per_entry": m.overhead_per_entry}
            for m in results.memory
        ],
        "notes": results.notes,
        "load": results.load,
    }
