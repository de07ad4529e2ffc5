"""``Code.GET_MANY``: the keys of one map that a ``get_all`` asks one member for, as ONE op.

A frame of one GET op per key costs a ``Call``, an ``Op`` and a ``Result`` per key on both
ends, and a protobuf entry per key in each of a frame's columns. A GET_MANY op carries the
keys of one map bound for one member in two buffers (``Op.key``: the keys concatenated;
``Op.value``: their lengths, then their partitions, little-endian uint32), and its answer
is one ``Result`` whose ``value`` holds the per-key columns and the values concatenated::

    versions  n x uint64   the partition's version when the key was read (near caches)
    ttls      n x float64  seconds the value has left before it expires (0: never)
    lengths   n x int32    the value's length; -1: no value (a miss, or see statuses)
    statuses  n x uint8    Status per key: OK, or why this member did not answer it
    values    the found values, concatenated in key order

``Result.count`` is ``n``. A key whose status is not OK (its partition is not served here,
is migrating, ...) is asked again by the caller as a plain GET, which retries and reports
exactly as a lone get does. A member that predates GET_MANY answers the whole op INVALID
(an unknown code); its callers then ask it key by key (``peergrid.invocation.gets``).

Pure functions on bytes; ``ValueError`` for a malformed buffer (the op comes from the network).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from peergrid.protocol import Op, Status


def pack_keys(keys: Sequence[bytes], partitions: Sequence[int]) -> tuple[bytes, bytes]:
    """``(keys concatenated, lengths and partitions)``: a GET_MANY op's ``key`` and ``value``."""
    n = len(keys)
    return b"".join(keys), struct.pack(f"<{2 * n}I", *map(len, keys), *partitions)


def unpack_keys(op: Op, max_key: int, partition_count: int, max_keys: int) -> tuple[list[bytes], list[int]]:
    """The keys and partitions of a GET_MANY op, checked: ``ValueError`` says what is wrong."""
    header = op.value
    if not header or len(header) % 8:
        raise ValueError("get_many: its header is not a whole number of (length, partition) pairs")
    n = len(header) // 8
    if n > max_keys:
        raise ValueError(f"get_many of {n} keys exceeds limits.max_batch_ops={max_keys}")
    columns = struct.unpack(f"<{2 * n}I", header)
    lengths, partitions = columns[:n], list(columns[n:])
    blob = op.key
    if sum(lengths) != len(blob):
        raise ValueError("get_many: its key lengths do not add up to its keys")
    if min(lengths) < 1:
        raise ValueError("the operation needs a key")
    if max(lengths) > max_key:
        raise ValueError(f"key of {max(lengths)} bytes exceeds limits.max_key_bytes={max_key}")
    if max(partitions) >= partition_count:
        raise ValueError(f"partition {max(partitions)} is out of range 0..{partition_count - 1}")
    keys = []
    start = 0
    for length in lengths:
        end = start + length
        keys.append(blob[start:end])
        start = end
    return keys, partitions


def pack_got(
    versions: Sequence[int],
    ttls: Sequence[float],
    values: Sequence[bytes | None],
    statuses: bytes | bytearray,
) -> bytes:
    """The answer's ``value``: one entry of each column per key (``values[i]`` None: no value)."""
    n = len(values)
    lengths = [-1 if v is None else len(v) for v in values]
    head = struct.pack(f"<{n}Q{n}d{n}i", *versions, *ttls, *lengths)
    return b"".join([head, bytes(statuses), *[v for v in values if v]])


class Got:
    """A GET_MANY answer read back: per key, its value (None: none), version, ttl and status."""

    __slots__ = ("statuses", "ttls", "values", "versions")

    def __init__(self, blob: bytes, n: int) -> None:
        if n < 0 or len(blob) < 21 * n:
            raise ValueError("get_many answer is shorter than its columns")
        columns = struct.unpack_from(f"<{n}Q{n}d{n}i", blob)
        self.versions = columns[:n]
        self.ttls = columns[n : 2 * n]
        self.statuses = blob[20 * n : 21 * n]
        values: list[bytes | None] = []
        start = 21 * n
        for length in columns[2 * n :]:
            if length < 0:
                values.append(None)
            else:
                end = start + length
                values.append(blob[start:end])
                start = end
        if start != len(blob):
            raise ValueError("get_many answer's values do not match its lengths")
        self.values = values


def not_ok(got: Got) -> list[int]:
    """The indexes of the keys the member did not answer (their status is not OK)."""
    statuses = got.statuses
    if not statuses.strip(b"\x00"):
        return []
    return [i for i, status in enumerate(statuses) if status != Status.OK]
