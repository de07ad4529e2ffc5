"""Settings of a run and the data set every path reads: N keys of fixed-size values."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


def _setting(default: int, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Settings:
    """Sizes of a run; each is also a command-line option (--keys, --value-size, ...)."""

    keys: int = _setting(100_000, "keys loaded into every store")
    value_size: int = _setting(100, "bytes per value")
    ops: int = _setting(5_000, "single-key calls per path per round")
    batch: int = _setting(100, "keys per MGET / get_all")
    batches: int = _setting(300, "batches per batch path per round")
    threads: int = _setting(64, "concurrent callers on the threaded paths")
    ops_per_thread: int = _setting(100, "calls per concurrent caller per round")
    rounds: int = _setting(7, "measured rounds (after one warm-up round)")
    series_ops: int = _setting(1_000, "writes per round in the peergrid backup_count series")
    memory_entries: int = _setting(1_000_000, "entries in one peergrid member for its memory figure")
    seed: int = _setting(1, "seed of the random key sequences and values")

    def quick(self) -> Settings:
        """A smoke run of a few seconds: every path, little data, few calls."""
        return replace(
            self,
            keys=2_000,
            ops=300,
            batches=20,
            ops_per_thread=10,
            rounds=3,
            series_ops=100,
            memory_entries=20_000,
        )


def key_name(i: int) -> str:
    return f"key:{i:08d}"


class Workload:
    """The keys, their values, and seeded random key sequences for the paths to replay."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = [key_name(i) for i in range(settings.keys)]
        rng = random.Random(settings.seed)
        blob = rng.randbytes(settings.keys * settings.value_size)
        size = settings.value_size
        self.values = [blob[i * size : (i + 1) * size] for i in range(settings.keys)]
        self._rng = rng

    def items(self) -> Iterator[tuple[str, bytes]]:
        return zip(self.keys, self.values, strict=True)

    def chunks(self, size: int = 1_000) -> Iterator[dict[str, bytes]]:
        for start in range(0, len(self.keys), size):
            stop = start + size
            yield dict(zip(self.keys[start:stop], self.values[start:stop], strict=True))

    def value_of(self, key: str) -> bytes:
        return self.values[int(key.rsplit(":", 1)[1])]

    def singles(self, pool: Sequence[str] | None = None) -> list[str]:
        return self._pick(pool, self.settings.ops)

    def batches(self, pool: Sequence[str] | None = None) -> list[list[str]]:
        s = self.settings
        return [self._pick(pool, s.batch) for _ in range(s.batches)]

    def per_thread(self, pool: Sequence[str] | None = None) -> list[list[str]]:
        s = self.settings
        return [self._pick(pool, s.ops_per_thread) for _ in range(s.threads)]

    def _pick(self, pool: Sequence[str] | None, count: int) -> list[str]:
        return self._rng.choices(pool if pool is not None else self.keys, k=count)
