"""The key-value paths redis and peergrid are both measured on, built once for either.

A subject hands in its calls as plain callables (`KVCalls`) and which keys to use
(`KeyChoice`); the paths, their key sequences and their timing loops are the same for both,
so a ratio between them compares the stores and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from benchmarks._rounds import Path
from benchmarks._timing import time_calls, time_concurrent
from benchmarks._workload import Workload


@dataclass(frozen=True)
class KVCalls:
    get: Callable[[str], object]
    set: Callable[[str, bytes], object]
    get_many: Callable[[list[str]], object]
    concurrent_get: Callable[[str], object]  # safe to call from many threads at once


@dataclass(frozen=True)
class KVLabels:
    get: str
    set: str
    get_many: str
    concurrent_get: str


@dataclass(frozen=True)
class KeyChoice:
    """The keys each path replays, drawn once and reused every round."""

    singles: list[str]
    writes: list[tuple[str, bytes]]
    batches: list[list[str]]
    per_thread: list[list[str]]

    @classmethod
    def draw(
        cls,
        workload: Workload,
        pool: Sequence[str] | None = None,
        batch_pool: Sequence[str] | None = None,
    ) -> KeyChoice:
        """Single-key and threaded paths draw from `pool`, batches from `batch_pool`
        (either default: every key)."""
        writes = [(k, workload.value_of(k)) for k in workload.singles(pool)]
        return cls(workload.singles(pool), writes, workload.batches(batch_pool), workload.per_thread(pool))


def kv_paths(prefix: str, calls: KVCalls, labels: KVLabels, keys: KeyChoice, batch: int) -> list[Path]:
    """get, set, get-many and concurrent get, named PREFIX.get and so on."""

    def write(item: tuple[str, bytes]) -> object:
        return calls.set(*item)

    return [
        Path(f"{prefix}.get", labels.get, partial(time_calls, calls.get, keys.singles)),
        Path(f"{prefix}.set", labels.set, partial(time_calls, write, keys.writes)),
        Path(
            f"{prefix}.get_many",
            labels.get_many,
            partial(time_calls, calls.get_many, keys.batches, keys_per_op=batch),
            unit=f"batch of {batch}",
        ),
        Path(
            f"{prefix}.get.concurrent",
            labels.concurrent_get,
            partial(time_concurrent, calls.concurrent_get, keys.per_thread),
        ),
    ]
