"""Interleaved rounds: every path once per round, so ratios compare neighbours in time.

Absolute figures drift by a third between runs on a shared VM; a baseline and a subject
measured seconds apart drift together. Each round runs every path once (the order reversed
every other round, so no path always runs right after the same neighbour), ratios are taken
per round, and the report shows the median. A warm-up round is run first and dropped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from benchmarks._results import Sample, error_summary


@dataclass(frozen=True)
class Path:
    """One thing to measure: `measure()` runs it once and returns what it did."""

    name: str
    label: str
    measure: Callable[[], Sample]
    unit: str = "op"  # what p50/p99 are per: "op" or e.g. "batch of 100"


@dataclass
class Outcome:
    path: Path
    phase: str  # paths are only compared with paths of the same phase (same rounds)
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None


def run_rounds(paths: Sequence[Path], rounds: int, title: str) -> dict[str, Outcome]:
    """Run a warm-up round then `rounds` measured rounds; a path that raises is dropped."""
    outcomes = {p.name: Outcome(p, title) for p in paths}
    for number in range(rounds + 1):
        started = time.monotonic()
        order = list(paths) if number % 2 else list(reversed(paths))
        for path in order:
            _measure_into(outcomes[path.name], keep=number > 0)
        label = f"round {number}/{rounds}" if number else "warm-up"
        _progress(f"{title}: {label} done in {time.monotonic() - started:.1f} s")
    return outcomes


def _measure_into(outcome: Outcome, keep: bool) -> None:
    if outcome.error is not None:
        return
    try:
        sample = outcome.path.measure()
    except Exception as exc:
        outcome.error = error_summary(exc)
        _progress(f"  {outcome.path.label}: failed, dropped ({outcome.error})")
        return
    if keep:
        outcome.samples.append(sample)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def interleave(baselines: Sequence[Path], subjects: Sequence[Path], pairs: Mapping[str, str]) -> list[Path]:
    """Each subject right after the baseline it is paired with (by name); unpaired last."""
    order: list[Path] = []
    for baseline in baselines:
        order.append(baseline)
        order.extend(s for s in subjects if pairs.get(s.name) == baseline.name)
    placed = {p.name for p in order}
    return order + [s for s in subjects if s.name not in placed]
