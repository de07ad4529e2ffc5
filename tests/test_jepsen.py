"""Jepsen-style fault tests: five member processes in network namespaces, clients in each, a
nemesis, histories and checkers (see tests/jepsen/README.md).

The short runs (every scenario in two settings, 20-45 s each, seed ``PEERGRID_JEPSEN_SEED`` or
1) are part of the default test run (``PEERGRID_JEPSEN=0`` skips them); ``PEERGRID_SOAK=1``
adds the long runs (several seeds) and prints their table.
They need root, ``ip netns`` and iptables; they skip saying why where those are missing.

What must hold:

- ``min_cluster_size=3`` of 5 (a majority): everything. No lost writes, every read
  linearizable, counters within bounds, locks safe, no resurrection, every final read served,
  one cluster again within failure_timeout + 10 s of every heal.
- ``min_cluster_size=1``: no lost acknowledged writes of the sole-writer registers, no
  resurrection, linearizable outside fault windows (reads inside them may be stale), final
  reads served, heal in time, counters within bounds (a merge adds up both sides'
  increments). Locks must hold too, except in the scenarios that cut the network (a side
  without quorum may then grant on its own): there they are checked and reported, but only
  for information.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jepsen.nemesis import NETWORK_SCENARIOS, SCENARIOS
from tests.jepsen.runner import HarnessError, RunResult, RunSettings, availability, run, table

ALWAYS = ("lost-writes", "resurrection", "linearizable", "counters", "heal", "final-reads")
SAFETY = ("locks",)
SETTINGS = {"quorum": 3, "no-quorum": 1}

pytestmark = [pytest.mark.netns, pytest.mark.jepsen]


def required(scenario: str, min_cluster_size: int, hosts: int = 5) -> tuple[str, ...]:
    """The checkers whose anomalies fail a run of ``scenario`` in that setting."""
    if min_cluster_size <= hosts // 2 and scenario in NETWORK_SCENARIOS:
        return ALWAYS
    return ALWAYS + SAFETY


@pytest.fixture(scope="module")
def results() -> Iterator[list[RunResult]]:
    """The runs of this module; their table is printed at the end (``-s`` shows it)."""
    done: list[RunResult] = []
    yield done
    if done:
        print("\n" + table(done))


@pytest.fixture
def runnable() -> None:
    reason = availability()
    if reason is not None:
        pytest.skip(f"Jepsen tests: {reason}")


def log_dir() -> Path | None:
    where = os.environ.get("PEERGRID_JEPSEN_DIR")
    return Path(where) if where else None


def check(result: RunResult) -> None:
    """Fail on the anomalies of the required checkers; show the rest as information."""
    s = result.settings
    must = required(result.scenario, s.min_cluster_size, s.hosts)
    failures = result.failures(must)
    informational = [n for n in result.verdicts if n not in must and not result.verdicts[n].valid]
    if failures:
        shown = "\n".join(failures[:15])
        more = f"\n... and {len(failures) - 15} more" if len(failures) > 15 else ""
        pytest.fail(
            f"ANOMALIES (checker findings, not a harness failure) in {result.scenario} "
            f"{s.short()} seed {result.seed}:\n{shown}{more}\n"
            f"informational: {', '.join(informational) or 'none'}\n"
            f"{table([result])}\nhistories and worker logs: {result.run_dir}",
            pytrace=False,
        )


def one_run(scenario: str, seed: int, settings: RunSettings) -> RunResult:
    try:
        return run(scenario, seed, settings)
    except HarnessError as exc:
        pytest.fail(f"HARNESS FAILURE (not a finding about peergrid): {exc}", pytrace=False)


@pytest.mark.skipif(os.environ.get("PEERGRID_JEPSEN") == "0", reason="skipped: PEERGRID_JEPSEN=0")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_short_run(scenario: str, setting: str, results: list[RunResult], runnable: None) -> None:
    settings = dataclasses.replace(RunSettings(), min_cluster_size=SETTINGS[setting], log_dir=log_dir())
    result = one_run(scenario, seed=int(os.environ.get("PEERGRID_JEPSEN_SEED", "1")), settings=settings)
    results.append(result)
    print(result.report(per_checker=5))
    check(result)


@pytest.mark.skipif(os.environ.get("PEERGRID_JEPSEN") == "0", reason="skipped: PEERGRID_JEPSEN=0")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", ["pause", "cut-one", "split-2-3"])
def test_short_run_with_heartbeat_relays(scenario: str, results: list[RunResult], runnable: None) -> None:
    # heartbeat_fanout=1: every member's beats reach the master through a chain of relays (the
    # youngest's through three), so the leases of four members rest on relayed answers while
    # members pause and the network splits.
    settings = dataclasses.replace(RunSettings(), min_cluster_size=3, heartbeat_fanout=1, log_dir=log_dir())
    result = one_run(scenario, seed=int(os.environ.get("PEERGRID_JEPSEN_SEED", "1")), settings=settings)
    results.append(result)
    print(result.report(per_checker=5))
    check(result)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PEERGRID_SOAK"), reason="soak: opt-in with PEERGRID_SOAK=1")
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_soak(scenario: str, setting: str, results: list[RunResult], runnable: None) -> None:
    settings = dataclasses.replace(
        RunSettings(), min_cluster_size=SETTINGS[setting], faults=5, post=5.0, log_dir=log_dir()
    )
    seeds = [int(s) for s in os.environ.get("PEERGRID_SOAK_SEEDS", "11,12,13").split(",")]
    runs = [one_run(scenario, seed, settings) for seed in seeds]
    results.extend(runs)
    print("\n" + table(runs))
    for result in runs:
        check(result)
