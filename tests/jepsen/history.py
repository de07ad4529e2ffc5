"""Histories: the records workers write, and the operations the checkers read from them.

A record is one JSON line::

    {"process": "h0.1/t2", "type": "invoke"|"ok"|"fail"|"info", "f": "set", "key": "r3",
     "value": ..., "result": ..., "time": <time.monotonic_ns()>, "error": "...", "final": true}

``process`` is ``<host>.<incarnation>/<thread>``: a restarted worker is a new incarnation, so a
killed worker's pending operations stay pending for ever (as in Jepsen, a crashed process never
completes). ``value`` is the argument of a write (``[old, new]`` for ``cas``, the lease settings
for ``acquire``) or, for a completed ``get``, the value read; ``result`` is what a write returned
(``put``: the previous value; ``cas`` and ``delete``: a bool; ``incr``: the new count;
``acquire``: the fencing token). ``final`` marks the reads the runner asked for after healing.

`pair` turns records into `Operation` values: each invocation with its completion. An invocation
without one (its process was killed) is an ``info`` operation: it may have taken effect at any
point after its invocation, or never.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Register operations that change the key (``cas`` only when it returned True, or is info).
REGISTER_WRITES = frozenset({"set", "put", "cas", "delete"})


@dataclass(frozen=True)
class Fault:
    """A fault window: ``kind`` applied to ``hosts`` from ``start`` to ``end`` (monotonic ns)."""

    kind: str
    hosts: frozenset[str]
    start: int
    end: int
    grace_ns: int | None = None
    """How long after ``start`` a lock held on an affected host may legally be released by the
    cluster (the member declared dead or leaving); None: the checker's default."""
    target: str = ""
    """What the nemesis did it to (the paused or killed host, the isolated side), for reports."""


@dataclass(frozen=True)
class Operation:
    """One operation: an invocation and its completion."""

    index: int
    process: str
    f: str
    key: str
    value: Any
    result: Any
    invoke: int
    complete: int | None
    """Completion time; None for an ``info`` operation (pending for ever)."""
    type: str
    """``ok``, ``fail`` or ``info``."""
    final: bool = False
    error: str = ""

    @property
    def host(self) -> str:
        """The host part of the process name (``h0`` of ``h0.1/t2``)."""
        return self.process.split("/", 1)[0].split(".", 1)[0]

    @property
    def end(self) -> float:
        """Completion time, infinite for an ``info`` operation."""
        return float("inf") if self.complete is None else self.complete

    def brief(self) -> str:
        """A one-line description for reports."""
        when = f"[{self.invoke / 1e9:.3f}, {'-' if self.complete is None else f'{self.complete / 1e9:.3f}'}]"
        out = f" -> {self.result!r}" if self.result is not None else ""
        return f"{self.process} {self.type} {self.f}({self.key}, {self.value!r}){out} {when}"


def pair(records: Iterable[dict[str, Any]]) -> list[Operation]:
    """Pair each invocation with the next record of its process; sorted by invocation time.

    Raises ValueError for a completion without an invocation (a malformed history).
    """
    pending: dict[str, dict[str, Any]] = {}
    ops: list[Operation] = []
    for record in sorted(records, key=lambda r: r["time"]):
        process = record["process"]
        if record["type"] == "invoke":
            if process in pending:
                ops.append(_operation(pending.pop(process), None))
            pending[process] = record
            continue
        call = pending.pop(process, None)
        if call is None:
            raise ValueError(f"a completion without an invocation: {record}")
        ops.append(_operation(call, record))
    ops.extend(_operation(call, None) for call in pending.values())
    ops.sort(key=lambda op: op.invoke)
    return [_renumber(op, i) for i, op in enumerate(ops)]


def _operation(call: dict[str, Any], done: dict[str, Any] | None) -> Operation:
    kind = "info" if done is None else done["type"]
    info = kind == "info"
    value = call.get("value")
    if done is not None and call["f"] == "get" and kind == "ok":
        value = done.get("value")
    return Operation(
        index=0,
        process=call["process"],
        f=call["f"],
        key=call.get("key", ""),
        value=value,
        result=None if done is None or info else done.get("result"),
        invoke=call["time"],
        complete=None if info or done is None else done["time"],
        type=kind,
        final=bool(call.get("final")),
        error="" if done is None else done.get("error", ""),
    )


def _renumber(op: Operation, index: int) -> Operation:
    return dataclasses.replace(op, index=index)


def read_jsonl(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every record of the history files ``paths``; a torn last line (a killed writer) is skipped."""
    records: list[dict[str, Any]] = []
    for path in paths:
        with path.open() as file:
            for line in file:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def by_key(ops: Iterable[Operation]) -> Iterator[tuple[str, list[Operation]]]:
    """Operations grouped by key, keys in sorted order."""
    groups: dict[str, list[Operation]] = {}
    for op in ops:
        groups.setdefault(op.key, []).append(op)
    for key in sorted(groups):
        yield key, groups[key]
