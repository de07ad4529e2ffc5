"""The remote keys of a ``get_all`` in flight: one GET_MANY op per owning member.

``Gets`` is the step a get_all's flow yields (``peergrid.maps.flows``); ``Fetch`` runs it:
the keys go to their owners' pipes as one ``Code.GET_MANY`` op each (``peergrid.multiget``),
so a frame carries one op whose keys are one buffer, not an op, a ``Call`` and a ``Result``
per key. The fetch completes its ``Group`` once, when every owner answered.

Whatever an owner does not answer is asked again key by key, as lone GET calls through the
invoker, so retries, errors and their messages are those of a lone get:

- a key the owner does not serve (moved, migrating, lost) comes back with that status;
- an op refused whole (quorum, lease, an answer too large for one message, a member that
  predates GET_MANY and answers INVALID, an unreachable peer: reads are idempotent) falls
  back for all its keys. A member that does not know GET_MANY is remembered (``Pipe.legacy``)
  and asked key by key from then on;
- keys of partitions this member owns but cannot read on the caller's thread (see
  ``MapCore._local``) run as lone calls on this member.

Loop thread for everything after ``start``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from peergrid.invocation.invoker import Call
from peergrid.invocation.pipe import submit_all
from peergrid.multiget import Got, not_ok, pack_keys
from peergrid.protocol import Code, Op, Result, Status

if TYPE_CHECKING:
    from peergrid.invocation.invoker import Group, Invoker, PeerPipe

#: Most key bytes in one GET_MANY op: a frame stays far under the message limit, and an owner's
#: answer is built and sent in one piece of reasonable size.
MAX_KEY_BYTES = 1 << 20


class Gets:
    """A step: read ``keys`` (encoded) of map ``name``, in ``partitions``, from their owners."""

    __slots__ = ("keys", "name", "partitions")

    def __init__(self, name: str, keys: list[bytes], partitions: list[int]) -> None:
        self.name = name
        self.keys = keys
        self.partitions = partitions


class _Many:
    """One GET_MANY op bound for one pipe: what the pipe sends and hands the answer to."""

    __slots__ = ("deadline", "fetch", "indexes", "op", "pipe")

    def __init__(self, fetch: Fetch, pipe: PeerPipe, indexes: list[int], op: Op, deadline: float) -> None:
        self.fetch = fetch
        self.pipe = pipe
        self.indexes = indexes
        self.op = op
        self.deadline = deadline

    def handle(self, result: Result) -> None:
        self.fetch.answered(self, result)


class Fetch:
    """A ``Gets`` step in flight; ``values``, ``versions`` and ``ttls`` per key once done, and
    ``failed``: the first key (by index) that ended in an error, with its result."""

    __slots__ = ("deadline", "failed", "gets", "group", "invoker", "ttls", "values", "versions")

    def __init__(self, invoker: Invoker, gets: Gets, deadline: float, group: Group) -> None:
        n = len(gets.keys)
        self.invoker = invoker
        self.gets = gets
        self.deadline = deadline
        self.group = group  # finished once every key is answered; made with a count of 1
        self.values: list[bytes | None] = [None] * n
        self.versions: list[int] = [0] * n
        self.ttls: list[float] = [0.0] * n
        self.failed: tuple[int, Result] | None = None

    def start(self, max_keys: int) -> None:
        """Send every key towards its owner (any thread)."""
        gets = self.gets
        invoker = self.invoker
        pipes: Sequence[PeerPipe | None] = (
            [None] * len(gets.partitions) if invoker.closed else invoker.pipes_for(gets.partitions)
        )
        by_pipe: dict[int, tuple[PeerPipe, list[int]]] = {}
        alone: list[int] = []
        for i, pipe in enumerate(pipes):
            if pipe is None or pipe.legacy:
                alone.append(i)
                continue
            entry = by_pipe.get(id(pipe))
            if entry is None:
                by_pipe[id(pipe)] = (pipe, [i])
            else:
                entry[1].append(i)
        items: list[_Many] = []
        longest = max(map(len, gets.keys))
        for pipe, indexes in by_pipe.values():
            items.extend(self._ops(pipe, indexes, max_keys, longest))
        # Counted before anything is sent: answers may arrive on the loop before this returns.
        self.group.remaining = len(items) + len(alone)
        submit_all([(item.pipe, [item]) for item in items])  # one wake-up of the loop for all owners
        if alone:
            invoker.start_many([self._lone(i) for i in alone])

    def _ops(self, pipe: PeerPipe, indexes: list[int], max_keys: int, longest: int) -> list[_Many]:
        """The GET_MANY ops of ``indexes``: at most ``max_keys`` keys and ``MAX_KEY_BYTES`` each
        (``longest``: the length of the longest key)."""
        keys, partitions, name = self.gets.keys, self.gets.partitions, self.gets.name
        chunks: list[list[int]] = [[]]
        if len(indexes) <= max_keys and len(indexes) * longest <= MAX_KEY_BYTES:
            chunks = [indexes]  # the usual case: one op
        else:
            size = 0
            for i in indexes:
                length = len(keys[i])
                if chunks[-1] and (len(chunks[-1]) >= max_keys or size + length > MAX_KEY_BYTES):
                    chunks.append([])
                    size = 0
                chunks[-1].append(i)
                size += length
        ops = []
        for chunk in chunks:
            blob, header = pack_keys([keys[i] for i in chunk], [partitions[i] for i in chunk])
            op = Op(Code.GET_MANY, partitions[chunk[0]], name, blob, header)
            ops.append(_Many(self, pipe, chunk, op, self.deadline))
        return ops

    def _lone(self, i: int) -> Call:
        gets = self.gets
        op = Op(Code.GET, gets.partitions[i], gets.name, gets.keys[i])
        return Call(self.invoker, op, self.deadline, on_done=lambda result: self._one(i, result))

    # ---------------------------------------------------------------- loop thread
    def answered(self, item: _Many, result: Result) -> None:
        """An owner's answer to a GET_MANY op."""
        indexes = item.indexes
        retry: list[int]
        if result.status == Status.OK:
            try:
                got = Got(result.value, result.count if result.count == len(indexes) else -1)
            except ValueError:
                retry = indexes  # a garbled answer: ask each key again
            else:
                self._record(got, indexes)
                retry = [indexes[j] for j in not_ok(got)]
        else:
            if result.status == Status.INVALID and "unknown operation code" in result.message:
                item.pipe.legacy = True  # a member from before GET_MANY: ask it key by key
            retry = indexes
        if retry:
            self.group.remaining += len(retry)
            self.invoker.start_many([self._lone(i) for i in retry])
        self.group.child_done()

    def _record(self, got: Got, indexes: list[int]) -> None:
        values, versions, ttls = self.values, self.versions, self.ttls
        got_values, got_versions, got_ttls = got.values, got.versions, got.ttls
        for j, i in enumerate(indexes):
            values[i] = got_values[j]
            versions[i] = got_versions[j]
            ttls[i] = got_ttls[j]

    def _one(self, i: int, result: Result) -> None:
        """A lone GET of key ``i`` ended."""
        if result.status == Status.OK:
            self.values[i] = result.value if result.found else None
            self.versions[i] = result.version
            self.ttls[i] = result.ttl
        elif self.failed is None or i < self.failed[0]:
            self.failed = (i, result)
        self.group.child_done()

    def failed_op(self) -> tuple[Result, Op] | None:
        """The first key's error, with the lone GET it stands for; None if every key was read."""
        if self.failed is None:
            return None
        i, result = self.failed
        gets = self.gets
        return result, Op(Code.GET, gets.partitions[i], gets.name, gets.keys[i])
