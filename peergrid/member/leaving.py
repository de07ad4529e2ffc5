"""A member's graceful leave: hand its partitions over, then go."""

from __future__ import annotations

import asyncio
import logging
import time

from peergrid.cluster.membership import Membership, State
from peergrid.config import Timing
from peergrid.replication import PartitionManager

log = logging.getLogger("peergrid")


async def hand_over_and_leave(membership: Membership, manager: PartitionManager, timing: Timing) -> None:
    """Ask to leave, wait (up to ``shutdown_timeout``) until every partition this member holds
    moved to the others, then leave for good. Alone, or with everyone leaving, it just goes."""
    me = membership.me
    if membership.state is not State.ACTIVE or all(m.uuid == me.uuid for m in membership.members.members):
        return
    deadline = time.monotonic() + timing.shutdown_timeout
    await membership.request_leave(final=False)
    next_check = time.monotonic() + timing.rpc_timeout
    while time.monotonic() < deadline and not manager.holds_nothing():
        if _everyone_leaving(membership):
            log.info("member %s: every other member is leaving too; no one to hand over to", me.address)
            break
        await asyncio.sleep(timing.safe_poll_interval * 5)
        if time.monotonic() >= next_check:
            # Owners release our copies once moved; ask them ourselves if a release went missing.
            next_check = time.monotonic() + timing.rpc_timeout
            if not _marked_leaving(membership):
                # The master did not mark us (it died before it could; we may be master now).
                await membership.request_leave(final=False)
            await manager.check_leftovers()
    if not manager.holds_nothing() and not _everyone_leaving(membership):
        log.warning(
            "member %s: partitions were not all handed over within %.1fs", me.address, timing.shutdown_timeout
        )
    else:
        log.info(
            "member %s: handed its partitions over in %.2fs; leaving",
            me.address,
            time.monotonic() - (deadline - timing.shutdown_timeout),
        )
    await membership.request_leave(final=True)


def _marked_leaving(membership: Membership) -> bool:
    """True when the current member list marks this member leaving."""
    member = membership.members.find(membership.me.uuid)
    return member is not None and member.leaving


def _everyone_leaving(membership: Membership) -> bool:
    """True when no other member stays to take partitions over (the cluster is shutting down)."""
    return all(m.leaving for m in membership.members.members if m.uuid != membership.me.uuid)
