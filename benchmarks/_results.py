"""What the measurements return; the report is generated from these alone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """What one path did in one round."""

    p50_us: float
    p99_us: float
    ops_per_s: float
    keys_per_op: int = 1

    @property
    def keys_per_s(self) -> float:
        return self.ops_per_s * self.keys_per_op


def error_summary(exc: BaseException, limit: int = 160) -> str:
    """One line naming the error, for a table cell (gRPC errors by status and details)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        text = f"{code()}: {details()}"
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class MemoryFigure:
    """Memory a store used for `entries` entries, beyond what it used empty."""

    label: str
    entries: int
    grown_bytes: int  # used_memory or RSS growth from empty to loaded
    payload_bytes: int  # the keys' and values' own bytes

    @property
    def per_entry(self) -> float:
        return self.grown_bytes / self.entries

    @property
    def overhead_per_entry(self) -> float:
        """Bytes per entry beyond the key and value bytes themselves."""
        return (self.grown_bytes - self.payload_bytes) / self.entries
