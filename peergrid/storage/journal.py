"""What a merge needs to know of the changes made while the cluster may have been split.

Without ``min_cluster_size``, both sides of a split keep serving: each takes
over the partitions it holds copies of and accepts writes. When the split
heals, the smaller side merges into the larger (``cluster/merge.py``) and must
bring its writes along without resurrecting what the larger side deleted, nor
overwriting what it wrote later. For that, every change made while a member
may be on one side of a split is stamped with a hybrid-logical-clock stamp and
recorded per key in its partition's *journal* (deletes included: tombstones).
A merge sends the smaller side's journaled changes; the owner on the larger
side orders each against its own journal by the map's merge policy.

Why a journal rather than a stamp on every entry: a stamp per entry costs more
memory than the entry (an int and a dict slot, ~130 bytes), for information a
merge needs only of the keys changed since the split began. A member starts
journaling when its member list loses a member that did not leave (a death, a
cut, a pause: from where it stands, a split) and keeps on for
``Timing.merge_horizon`` after the last such loss; every list carries the time
of its lineage's last loss (``MemberList.lost_at``), so a member that joins
within the horizon journals too (were it to own a partition unjournaled, a
merge would lose its writes: taken for older than the other side's, or not
brought at all; Jepsen's ``split-kill`` brought a deleted value back and read a
counter lower, through the killed member's restart); writes applied but not yet
acknowledged at that moment are journaled too (they may be acknowledged later,
on one side only). Journals travel with their partitions (backups apply the
stamped effects, transfers carry ``EffectKind.JOURNAL`` entries) and are
bounded in time (entries older than the horizon are dropped) and size
(``Limits.max_journal_entries`` per partition, oldest first). A split that
lasts longer than the horizon merges as if nothing had been journaled: the
larger side's values win, and writes of the smaller side are lost. The
horizon is what the guarantee is bounded by.

Counters merge exactly: for a key changed only by increments since the
journal began, the journal keeps how much each member (as owner) added
(``Partition.deltas``, a grow-only count per contributor, as a G-counter
does). Merged into a side where the key too was only incremented (or not
changed), each contributor's count beyond what that side already counts is
added, so every increment of both sides counts once, however often the
journals travel. A counter set or deleted on one side is merged as any other
change.

Stamps: 48 bits of wall-clock milliseconds, then 16 bits of counter. A key's
stamps only grow (a new stamp exceeds the key's last one), and stamps of
different members compare by wall clock: the latest update wins, as far as the
members' clocks agree.
"""

from __future__ import annotations

import time

DELETED = 1
"""Low bit of a journal record: the change was a delete (a tombstone)."""
WHOLE_MAP = b""
"""The journal key of a ``clear()``: no entry key is empty."""


class HybridClock:
    """Stamps that follow the wall clock and never repeat or go back on this member."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def now(self) -> int:
        """A stamp later than every stamp this clock made or observed."""
        wall = int(time.time() * 1000) << 16
        self._last = max(self._last + 1, wall)
        return self._last

    def observe(self, stamp: int) -> None:
        """A stamp made elsewhere: later stamps here exceed it."""
        self._last = max(self._last, stamp)


def encode_delta(contributor: str, count: int) -> bytes:
    """A ``DELTA`` effect's value: the member whose increments it counts, and the count (the
    increment itself when unstamped; stamped, that member's total since the journal began)."""
    return f"{contributor}:{count}".encode("ascii")


def decode_delta(data: bytes) -> tuple[str, int]:
    """``(contributor, count)`` of a ``DELTA`` effect; ``ValueError`` when malformed."""
    if len(data) > 120:
        raise ValueError("a DELTA effect is a member uuid and a count")
    contributor, _, count = data.decode("ascii").rpartition(":")
    if not contributor:
        raise ValueError("a DELTA effect names its contributor")
    return contributor, int(count)


def stamp_of(wall_seconds: float) -> int:
    """The smallest stamp of a wall-clock time (to prune records older than it)."""
    return int(wall_seconds * 1000) << 16


def record(stamp: int, deleted: bool) -> int:
    """A journal record: the stamp, and whether the change was a delete."""
    return stamp << 1 | (DELETED if deleted else 0)


def stamp_in(rec: int) -> int:
    """The stamp of a journal record."""
    return rec >> 1


def is_delete(rec: int) -> bool:
    """True when a journal record is a delete."""
    return bool(rec & DELETED)


def applies(policy: str, stamp: int, mine: int | None, present: bool) -> bool:
    """Whether a merging change wins on the surviving owner.

    ``stamp`` is the change's stamp (0: an entry the merging side did not
    journal; it is only sent between instances that formed apart), ``mine``
    the survivor's journal record of the key (None: not changed here since the
    journal began), ``present`` whether the survivor has a live value now.
    """
    if policy == "discard":
        return False
    if policy == "pass_through":
        return True
    if policy == "put_if_absent":
        return not present
    # latest_update: a change the survivor did not make later. An unjournaled entry is older
    # than anything journaled and comes from another instance: written only where absent.
    if stamp == 0:
        return not present and mine is None
    return mine is None or stamp > stamp_in(mine)


class Window:
    """Whether this member journals its writes now, and the clock that stamps them."""

    __slots__ = ("clock", "horizon", "until")

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.until = 0.0  # monotonic: journal writes until then
        self.clock = HybridClock()

    def open(self, since: float | None = None) -> bool:
        """Journal until the horizon has passed since ``since`` (wall-clock seconds; default
        now, and never later than now); True when it was not journaling and now is."""
        was = self.active()
        left = self.horizon if since is None else self.horizon - max(0.0, time.time() - since)
        self.until = max(self.until, time.monotonic() + left)
        return not was and self.active()

    def active(self) -> bool:
        """True while writes are journaled."""
        return self.until > time.monotonic()

    def oldest(self) -> int:
        """Records stamped before this are past the horizon."""
        return stamp_of(time.time() - self.horizon)
