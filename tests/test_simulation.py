"""The membership protocol at scale: hundreds of real ``Membership`` objects on a simulated
network in virtual time (tests/simulation.py). Figures are virtual (protocol intervals and
message counts), so these checks do not depend on this machine's speed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

import pytest

from peergrid.cluster.membership import MAX_HEALTH, Membership
from peergrid.config import GridConfig, Timing
from peergrid.errors import ClusterError
from peergrid.protocol import JoinReply, JoinStatus, Member, MemberList
from tests.simulation import (
    JEPSEN_TIMING,
    Simulation,
    VirtualLoop,
    admission_unanswered,
    majority_lost,
    master_cut_from_one,
    master_isolated,
    master_leaves,
    member_isolated,
    random_pauses,
    random_split_kills,
    run_virtual,
    simulate,
    split,
    split_kill,
    staggered_start,
    takeover_not_taken_up,
    takeover_race,
    two_fail,
)

SIZES = [100, 1000] if os.environ.get("PEERGRID_SOAK") else [100]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_joiner_whose_admission_answer_is_lost_takes_the_masters_publication(seed: int) -> None:
    # The master admits a joiner, but its answers to the joiner's calls are lost for 20 s (a
    # busy master's answers time out). The master's publication of the list that admits it
    # reaches the joiner: it joins then, rather than being removed as a member that never
    # sent a heartbeat (10 s later) and admitted again (before: joined at 33-60 s, removed).
    removed, joined = admission_unanswered(10, lost_for=20.0, seed=seed)
    baseline = admission_unanswered(10, lost_for=0.0, seed=seed)[1]
    assert removed == []
    assert joined is not None
    assert baseline is not None
    assert joined <= baseline + 1.0, (joined, baseline)


@pytest.mark.parametrize("n", SIZES)
def test_idle_cost_per_member_is_constant_and_a_crash_is_detected_by_all(n: int) -> None:
    report = simulate(n, seed=3, loss=0.01, idle=30.0)
    # Everyone joined one cluster in far fewer list versions than members (joins are admitted
    # in batches; at 1 % loss a lost join is admitted later, in a batch of its own).
    assert report.list_versions < n / 2
    # No live member was removed at 1 % loss, nor for a pause shorter than the failure timeout.
    assert report.false_removals == 0
    assert not report.pause_removed
    # Every member sends and receives a constant number of messages per interval, whatever n:
    # its own beat (to the master or to its relay), at most heartbeat_fanout beats it relays
    # (cluster.relay), the odd probe or early send up, and (at 1 % loss) the beats of members
    # one level down whose relay lost one. The master too: it hears every member, which its
    # lease judgement rests on, but through at most heartbeat_fanout relays. (Measured: 11 and
    # 17.7 at n=100; 23.4 and 15 at n=1000.)
    fanout = GridConfig.heartbeat_fanout
    assert report.messages_max_non_master <= 3 * fanout
    assert report.messages_master <= 2 * fanout + 4
    # Crash -> every live member's list without it: the master suspects it an interval before
    # its lease has certainly run out and probes it; its address refuses (a crashed process's
    # kernel answers), so it goes as soon as the lease has run out (~3 intervals after its last
    # heartbeat reached the master, ~2.5 after the crash on average: Membership._gone), then
    # the publication; at 1 % loss a member may miss the publication and learn the new list
    # from its next heartbeat's answer (1-4 more). (Measured: 2.54 mean, 3.52 max at n=100.)
    assert report.detection_mean <= 3.0
    assert report.detection_max <= 7


@pytest.mark.parametrize(("n", "query_lost"), [(4, False), (7, False), (4, True), (7, True)])
def test_a_takeover_is_newer_than_the_dead_masters_last_list(n: int, query_lost: bool) -> None:
    # The master's last list (without the crashed next oldest) reached every member but the
    # third oldest, which takes over when the master crashes too. Its list must be newer than
    # that one, or those members would follow the dead master for ever (two lists of one
    # version), and be removed at last for not heartbeating the taker: with the last copy of a
    # partition, after two crashes (test_stateful's PartitionLostError). The taker numbers its
    # list TAKEOVER_GAP above its own, so it needs no word from them (with query_lost, its own
    # calls for their lists are lost too until it has taken over).
    agreed, removed = takeover_race(n, seed=n, timing=Timing.fast(), query_lost=query_lost)
    assert agreed is not None, "the live members never agreed on one list after the take-over"
    assert removed == []


@pytest.mark.parametrize(
    ("n", "stagger", "seed"), [(100, 2.0, 3), (100, 10.0, 3), (20, 10.0, 2), (20, 30.0, 2)]
)
def test_a_staggered_start_forms_one_cluster(n: int, stagger: float, seed: int) -> None:
    # Members start within `stagger` seconds in random order, with random uuids: one that is no
    # seed may start late with a lower uuid than the member that formed the cluster, and find
    # itself the lowest starting member before the seeds it asks have joined. Only the seeds
    # form (these seeds made two clusters, to be merged later, when the lowest uuid of all did).
    formed, agreed = staggered_start(n, stagger, seed=seed)
    assert formed == 1
    assert agreed is not None


@pytest.mark.parametrize(("n", "seed"), [(5, 1), (12, 2)])
def test_a_master_one_member_cannot_hear_is_not_replaced(n: int, seed: int) -> None:
    # Every call between the master and the next oldest is lost; the rest of the network is
    # whole. The next oldest hears nobody older, but the members it asks still hear the master
    # (an indirect probe): it must not take over. A master of a list without the live master
    # renews its own lease from its ticks and would own partitions the real master owns too.
    # The master removes it instead: its heartbeats stopped arriving.
    masters, removed = master_cut_from_one(n, seed=seed, duration=20 * Timing.fast().failure_timeout)
    assert len(masters) == 1, f"members followed {sorted(masters)}"
    assert removed == []


@pytest.mark.parametrize("min_cluster_size", [1, 3])
@pytest.mark.parametrize("duration", [2.6, 3.4])
def test_a_take_over_no_one_takes_up_serves_nothing_and_goes_back(
    duration: float, min_cluster_size: int
) -> None:
    # Five members, the Jepsen workers' timings. The master pauses; the next oldest takes over,
    # but the others do not take its list up before the master resumes (here its publications
    # and their calls for it are lost): they stay with the master. The taker must not serve
    # meanwhile: answers given to it as a member of the old list are no confirmation of its
    # own. Nor may it stay master of a list no one follows (with min_cluster_size=3 the others
    # even heartbeat it, from their list: Jepsen's pause, the cluster two for good), or, once
    # the master removed it, remove the others as silent and serve every partition alone from
    # empty copies (with min_cluster_size=1: Jepsen's pause-lock-holder, two holders of one
    # lock): it joins them again.
    timing = JEPSEN_TIMING
    for seed in (1, 2):
        forks, alone, agreed, _ = takeover_not_taken_up(
            5, duration, seed=seed, timing=timing, min_cluster_size=min_cluster_size
        )
        assert forks == [], f"seed {seed}: members of two masters served at once: {forks[:1]} .. {forks[-1:]}"
        assert alone == [], f"seed {seed}: a member was left master of itself alone from {alone[0]:.2f}s"
        assert agreed, f"seed {seed}: the members did not end in one list"


@pytest.mark.parametrize("duration", [2.6, 3.4])
def test_a_master_back_from_a_pause_serves_nothing_while_some_took_the_take_over_up(duration: float) -> None:
    # The same pause, min_cluster_size=1, but one member of the three takes the list of the
    # member that took over up before the master resumes; the other two stay with the master.
    # Two lineages of the list: the master serves its partitions again on the first answer
    # of a member of its own (its lease renews), and grants its members leases, while the new
    # owners of its partitions serve them on the other. Back from a stall, a master must
    # first ask every member, and serve (and renew no lease) while one runs a newer list
    # without it. (Found by random pause schedules: ``python -m tests.simulation --pauses``.)
    timing = JEPSEN_TIMING
    for seed in (1, 2, 3):
        _, alone, agreed, clashes = takeover_not_taken_up(
            5, duration, seed=seed, timing=timing, taken_up_by=1
        )
        assert clashes == [], (
            f"seed {seed}: two lineages served {clashes[0][1]} partitions at {clashes[0][0]:.2f}s"
        )
        assert alone == [], f"seed {seed}: a member was left master of itself alone from {alone[0]:.2f}s"
        assert agreed, f"seed {seed}: the members did not end in one list"


def test_random_pause_schedules_never_let_two_lineages_serve_one_partition() -> None:
    # Sixty random schedules of three pauses (the master, any member, or two at once) over five
    # members with min_cluster_size=3, with loss and delays (``random_pauses``): no partition
    # is ever owned by two serving members that follow different masters, each by its own
    # list's table. (Seed 76 clashed before the fence: a master back from its pause served
    # while members that took the take-over up served its partitions.)
    runs = random_pauses(range(51, 111), min_cluster_size=3)
    clashed = [(seed, clashes[0]) for seed, _, _, clashes, _ in runs if clashes]
    assert clashed == [], f"(seed, (when, partitions)) of the first clash: {clashed[:3]}"


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("duration", [2.6, 3.6, 6.0])
def test_after_a_split_members_of_only_one_master_serve_at_a_time(duration: float, late: bool) -> None:
    # Five members, min_cluster_size=3; the master and one other are cut off from the other three
    # (one of them a heartbeat earlier, so the master removes it alone and keeps a list of three),
    # then the network heals. A master cut off from a majority may keep a list of
    # min_cluster_size members, and the three on the other side take over: two lineages of the
    # list. A member in between (``late``: one that got the take-over's list only after the
    # heal) must not renew leases in both, or two owners serve one partition (found by Jepsen's
    # split-2-3: counter reads one below the acknowledged increments).
    timing = Timing(heartbeat_interval=0.2, failure_timeout=1.2)  # the Jepsen workers' timings
    for seed in (1, 2, 3):
        forks, _, _ = split(5, 2, duration, 3, seed=seed, timing=timing, late=late)
        assert forks == [], f"seed {seed}: members of two masters served at once: {forks[:3]}"


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("duration", [2.6, 3.6, 4.6, 6.0])
def test_after_a_split_no_member_of_the_majority_is_dropped_by_a_master_without_quorum(
    duration: float, late: bool
) -> None:
    # The same split. The master on the smaller side, hearing one member of five, must not drop
    # the three it cannot hear: one of them that has not yet taken up the list of the member
    # taking over on its side (``late``, or a heal that comes first) would take the master's at
    # the heal, join that side again as a new member and leave its copies behind: the only
    # copies of writes acknowledged on the larger side before anyone there noticed the split
    # (Jepsen's split-2-3 with min_cluster_size=3: lock tokens granted twice, a counter read
    # back lower). A master left with fewer than min_cluster_size has no quorum to judge them.
    # The smaller side still counts no quorum (``QuorumError`` there) once the answers its
    # leases need have stayed away for a failure timeout.
    timing = Timing(heartbeat_interval=0.2, failure_timeout=1.2)  # the Jepsen workers' timings
    for seed in range(1, 9):
        forks, dropped, quorate = split(5, 2, duration, 3, seed=seed, timing=timing, late=late)
        assert forks == [], f"seed {seed}: members of two masters served at once: {forks[:3]}"
        below = [(round(t, 2), a, size) for t, a, size in dropped if size < 3]
        assert below == [], f"seed {seed}: dropped by a list below min_cluster_size: {below}"
        assert quorate == [], f"seed {seed}: the smaller side counted a quorum at the heal: {quorate}"


@pytest.mark.parametrize("seed", [1, 2])
def test_a_master_that_hears_too_few_members_keeps_the_silent_ones_and_admits_no_one(seed: int) -> None:
    # Five members, min_cluster_size=3; three of them pause (SIGSTOP) for longer than any
    # timeout. The master, hearing one other, has no quorum: it neither drops them (they resume
    # with their copies, and stay members) nor admits a new member meanwhile (two live members
    # and a new empty one would outvote the three, and drop them with their copies). Once
    # they resume, all agree on one list, the new member included.
    timing = Timing(heartbeat_interval=0.2, failure_timeout=1.2)
    paused = majority_lost(crashed=False, duration=10.0, seed=seed, timing=timing)
    assert paused["removed"] == [], paused
    assert paused["dropped"] == [], paused
    assert not paused["quorum while away"], paused
    assert not paused["joined while away"], paused
    assert paused["agreed"], paused
    # Silent for longer than merge_horizon (hosts gone for good, their addresses silent): taken
    # for lost at last, and a new member admitted.
    gone = majority_lost(
        crashed=False, duration=10.0, seed=seed, timing=dataclasses.replace(timing, merge_horizon=4.0)
    )
    assert gone["removed"] == gone["away"], gone
    assert gone["joined while away"], gone
    # Crashed instead (their addresses refuse): no copies to lose; removed, and a new member
    # (a restarted process, say) is admitted: the cluster has a quorum again.
    crashed = majority_lost(crashed=True, duration=10.0, seed=seed, timing=timing)
    assert crashed["removed"] == crashed["away"], crashed
    assert crashed["dropped"] == [], crashed
    assert crashed["joined while away"], crashed
    assert crashed["quorum while away"], crashed


@pytest.mark.parametrize(("n", "seed"), [(5, 1), (12, 2)])
def test_a_master_that_hears_no_one_suspects_itself_before_removing_everyone(n: int, seed: int) -> None:
    # Every call to and from the master is lost for longer than the failure timeout, but shorter
    # than the longest timeout local health allows; its loop runs on (an overloaded master's
    # probes time out; a cut-off one's fail). More than half the cluster silent at once is more
    # likely the master's fault: it removes no one yet. The others take over meanwhile; after the
    # heal the old master finds itself removed and joins again: one list, no merge needed.
    timing = Timing.fast()
    removed, agreed = master_isolated(n, timing.failure_timeout + 4 * timing.heartbeat_interval, seed, timing)
    assert removed == []
    assert agreed is not None


@pytest.mark.parametrize(("n", "seed"), [(5, 1), (12, 2)])
def test_a_member_that_hears_no_one_does_not_take_over_from_most_of_the_cluster(n: int, seed: int) -> None:
    # Every call to and from the second youngest member is lost for long (a process starved of
    # CPU, as at a hundred members starting on two cores, or one cut off); its loop runs on. To
    # it the master and every older member are silent, and so is the member it asks whether it
    # hears the master: it is the likelier one at fault, and must not take over and remove them
    # all (at 100 members, one that did tore the forming cluster in two). (The youngest, with no
    # one to ask, takes over after the longest timeout: everyone else may really have died.)
    timing = Timing.fast()
    removed = member_isolated(n, 10 * timing.failure_timeout, seed, timing)
    assert removed == []


@pytest.mark.parametrize("seed", [1, 2])
def test_members_silent_together_are_removed_late_unless_their_addresses_refuse(seed: int) -> None:
    # Two members go silent at once. Crashed, their addresses refuse connections: removed at
    # the failure timeout. Only silent (starved of CPU, as a hundred processes starting on two
    # cores are, or paused), they may be alive: removed only after the longest timeout, so
    # that an overloaded machine does not lose live members (and, with two removed at once,
    # both copies of some partitions).
    timing = Timing.fast()
    longest = timing.failure_timeout + MAX_HEALTH * timing.heartbeat_interval
    crashed = two_fail(6, paused=False, seed=seed, timing=timing)
    assert all(t <= timing.failure_timeout + 3 * timing.heartbeat_interval for t in crashed), crashed
    starved = two_fail(6, paused=True, seed=seed, timing=timing)
    assert all(longest <= t <= longest + 3 * timing.heartbeat_interval for t in starved), starved


def test_lists_of_an_unknown_master_are_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # After a split heals, the other instance's lists reach each member with every publication
    # for a while: each is refused (adopting it could drop this member and its data), and said
    # once, not once per list.
    async def body() -> None:
        sim = Simulation(1, seed=1, timing=Timing.fast())
        member = sim._member(0, [])
        member.form()
        stranger = Member("zz-stranger", "10.9.9.9:5701")
        for version in (5, 6, 7):
            other = MemberList(version, stranger.uuid, (stranger, member.me))
            with pytest.raises(ClusterError, match="not a member of this cluster"):
                member.handle_publish(other)
        assert member.members.master_uuid == member.me.uuid
        await member.stop()

    with caplog.at_level(logging.WARNING, logger="peergrid.cluster"):
        loop = VirtualLoop()
        try:
            loop.run_until_complete(body())
        finally:
            loop.close()
    assert [r.getMessage().split(" (")[0] for r in caplog.records if "unknown master" in r.getMessage()] == [
        "member 10.0.0.0:5701 ignored member list version 5 from unknown master zz-stranger"
    ]


def test_a_new_owner_is_answered_only_once_the_leases_it_could_renew_ran_out() -> None:
    # With min_cluster_size, our answer to a member's heartbeat at its own list version renews
    # its lease. A new owner whose list dropped that member may serve only once that lease ran
    # out: ``vouch_lapse`` says how long a version answer waits. A member still in the asker's
    # list, or one we answered at another list version, needs no wait.
    async def body() -> None:
        timing = Timing.fast()
        sim = Simulation(3, seed=1, timing=timing, min_cluster_size=3)
        members = [sim._member(i, []) for i in range(3)]
        members[0].form()
        ours = MemberList(2, members[0].me.uuid, tuple(m.me for m in members))
        members[0].adopt(ours)
        me, other = members[0], members[1].me
        assert me.vouch_lapse(ours) == 0.0
        me.handle_heartbeat(other.uuid, ours.version + 1)  # another list version: renews nothing
        without = MemberList(3, me.me.uuid, (me.me, members[2].me))
        assert me.vouch_lapse(without) == 0.0
        me.handle_heartbeat(other.uuid, ours.version)
        assert me.vouch_lapse(ours) == 0.0  # still in the asker's list
        wait = me.vouch_lapse(without)
        assert timing.lease <= wait <= timing.lease * 1.03
        await asyncio.sleep(wait)
        assert me.vouch_lapse(without) == 0.0
        await me.stop()

    loop = VirtualLoop()
    try:
        loop.run_until_complete(body())
    finally:
        loop.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_next_master_takes_up_a_leaving_masters_last_list_it_missed(seed: int) -> None:
    # A master leaving gracefully publishes its last list, naming the next oldest member master,
    # and exits. The others confirmed it with the master; the publication to the next oldest was
    # lost. It must still take the role up: it cannot confirm a list naming itself with the
    # master (gone), and the others answer its take-over probes that their master (itself)
    # answers them. Found as a rolling restart in Jepsen whose restarted master never joined.
    timing = Timing.fast()
    agreed = master_leaves(5, seed, timing)
    assert agreed is not None


def test_a_joiner_once_unreachable_waits_on_while_the_cluster_admits_no_one() -> None:
    # Jepsen split-kill with min_cluster_size=3: a host killed while split restarted on its
    # address; the master, still listing the dead member there, called the joiner back on that
    # member's failing channel (UNREACHABLE), then answered NOT_READY while it had no quorum.
    # The one UNREACHABLE made the joiner give up 5.5 s later with JoinError, and its process
    # exit, though the cluster was only waiting for its quorum.
    timing = Timing.fast()
    master = Member("m0-master", "10.0.0.1:5701")
    ready_at = 8 * timing.failure_timeout + timing.join_timeout  # long after it would give up

    class Seed:
        async def join(
            self, member: Member, terms: object, timeout: float | None = None, probe: bool = False
        ) -> JoinReply:
            await asyncio.sleep(0.001)
            now = asyncio.get_running_loop().time()
            if now < timing.join_retry_interval:
                return JoinReply(
                    JoinStatus.UNREACHABLE, reason="cannot reach the joining member", list_version=5
                )
            if now < ready_at:
                return JoinReply(JoinStatus.NOT_READY, reason="no quorum", uuid=master.uuid, list_version=5)
            members = MemberList(6, master.uuid, (master, member))
            return JoinReply(JoinStatus.ACCEPTED, members=members, uuid=master.uuid, list_version=6)

    async def body() -> float:
        config = GridConfig(cluster="c", timing=timing)
        me = Member("m1-joiner", "10.0.0.2:5701")
        joiner = Membership(
            config,
            me,
            lambda _: Seed(),
            lambda old, new: None,
            lambda: None,
            lambda: [master.address],
            clock=asyncio.get_running_loop().time,
        )  # type: ignore[arg-type, return-value]
        await joiner.join()
        assert joiner.members.find(me.uuid) == me
        await joiner.stop()
        return asyncio.get_running_loop().time()

    loop = VirtualLoop()
    try:
        joined_at = loop.run_until_complete(body())
    finally:
        loop.close()
    assert joined_at >= ready_at


def test_a_master_whose_quorum_goes_while_joiners_wait_in_a_batch_admits_none_of_them() -> None:
    # Joiners are checked as they ask, and admitted together a little later. A master that lost
    # its quorum in between (it dropped a member gone on in the other lineage of a split) must
    # not admit them: they would make its lineage quorate again without that member's copies
    # (Jepsen's split-kill with min_cluster_size=3: stale reads and lost writes after the heal).
    async def body() -> None:
        timing = Timing.fast()
        sim = Simulation(4, seed=1, timing=timing, min_cluster_size=3)
        members = [sim._member(i, []) for i in range(4)]
        master, joiner = members[0], members[3]
        master.form()
        master.adopt(MemberList(2, master.me.uuid, tuple(m.me for m in members[:3])))
        loop = asyncio.get_running_loop()
        for m in members[1:3]:
            master._last_heard[m.me.uuid] = loop.time()
        asking = asyncio.ensure_future(master.handle_join(joiner.me, sim.config.terms()))
        await asyncio.sleep(timing.join_batch_window / 2)
        assert master._admission.batch, "the joiner should wait in a batch by now"
        master._quorum.lost = True  # (as _within_quorum sets it)
        reply = await asyncio.wait_for(asking, timing.failure_timeout * 3)
        assert reply.status == JoinStatus.NOT_READY, reply
        assert joiner.me.uuid not in master.members
        assert master.members.version == 2
        await master.stop()

    loop = VirtualLoop()
    try:
        loop.run_until_complete(body())
    finally:
        loop.close()


def test_a_master_that_lost_its_quorum_admits_again_once_it_outlives_the_other_lineage() -> None:
    # A master whose lineage lost its quorum for good admits no one, and says so in its list
    # answer (with when it last served) for the merge check; once that check finds the other
    # lineage lost its quorum too and served earlier, it admits again (``outlive``), so that
    # the other's members can merge into it. The answer's standing never travels further: a
    # member that adopts such a list, or a successor of it, does not carry it.
    async def body() -> None:
        timing = Timing.fast()
        sim = Simulation(4, seed=1, timing=timing, min_cluster_size=3)
        members = [sim._member(i, []) for i in range(4)]
        master, joiner = members[0], members[3]
        master.form()
        master.adopt(MemberList(2, master.me.uuid, tuple(m.me for m in members[:2])))
        master._last_heard[members[1].me.uuid] = asyncio.get_running_loop().time() + 60  # (heard throughout)
        master._quorum.lost = True  # (as _within_quorum sets it)
        master._served_at = 1234.5
        answer = master.answer_list()
        assert (answer.served_at, answer.quorum_lost) == (1234.5, True)
        assert answer == master.members  # (the standing is not part of the list)
        assert (answer.successor().served_at, answer.successor().quorum_lost) == (0.0, False)
        follower = members[1]
        follower.form()
        assert follower.adopt(dataclasses.replace(answer, version=9, master_uuid=follower.me.uuid))
        assert (follower.members.served_at, follower.members.quorum_lost) == (0.0, False)
        reply = await master.handle_join(joiner.me, sim.config.terms())
        assert reply.status == JoinStatus.NOT_READY, reply
        other = MemberList(5, "zz", (Member("zz", "10.0.0.9:1"),), served_at=1200.0, quorum_lost=True)
        master.outlive(other)
        assert not master.lost_quorum
        assert not master.answer_list().quorum_lost
        asking = master.handle_join(joiner.me, sim.config.terms())
        reply = await asyncio.wait_for(asking, timing.failure_timeout * 3)
        assert reply.status == JoinStatus.ACCEPTED, reply
        await master.stop()
        await follower.stop()

    loop = VirtualLoop()
    try:
        loop.run_until_complete(body())
    finally:
        loop.close()


@pytest.mark.parametrize("min_cluster_size", [1, 3])
def test_members_whose_master_died_and_whose_older_members_went_on_elsewhere_take_over(
    min_cluster_size: int,
) -> None:
    # Jepsen's split-kill with the victim on the larger side (CI, seed 1): the split left the
    # master m0 with m3 and m4; m0 dropped m2 and was killed. On the other side m2 took over,
    # and m1 followed it; after the heal m2 dropped m3 and m4 as gone on elsewhere. m3 and m4
    # kept m0's list: their master is dead, and the next oldest, m1, answers from m2's lineage,
    # whose lists they cannot take (m2 is not in theirs). Waiting for m1 to take over, they
    # stayed without a master for ever. m3 must take over (m1 answers, but not as a member of
    # its lineage). With min_cluster_size=3 its list of two lost its quorum for good, like m2's
    # (``lost``): the merge check compares when each last served (``outlive``).
    async def body() -> None:
        timing = JEPSEN_TIMING
        sim = Simulation(5, seed=1, timing=timing, min_cluster_size=min_cluster_size)
        m = [sim._member(i, []) for i in range(5)]
        sim.net.down.add(m[0].address)  # killed
        ours = MemberList(9, m[0].me.uuid, (m[0].me, m[1].me, m[3].me, m[4].me), origin="o", lost_at=1.0)
        theirs = MemberList(1009, m[2].me.uuid, (m[2].me, m[1].me), origin="o", lost_at=1.0)
        for member, members in ((m[1], theirs), (m[2], theirs), (m[3], ours), (m[4], ours)):
            member.form()
            assert member.adopt(members)
            member.start_heartbeats()
        m[2]._quorum.lost = min_cluster_size > 1  # (as _within_quorum set it, dropping m3 and m4)
        for _ in range(int(20 * timing.failure_timeout / timing.heartbeat_interval)):
            if m[3].is_master and m[4].members.version >= m[3].members.version:
                break
            await asyncio.sleep(timing.heartbeat_interval)
        assert m[3].is_master, m[3].members
        assert m[3].members.uuids == (m[3].me.uuid, m[4].me.uuid)
        assert m[4].members == m[3].members
        assert m[3].lost_quorum is (min_cluster_size > 1)
        assert m[2].members.version == 1009  # (the other lineage is left to the merge)
        for member in m[1:]:
            await member.stop()

    run_virtual(body())


@pytest.mark.parametrize("min_cluster_size", [1, 3])
def test_after_a_split_and_a_kill_of_the_master_every_live_member_follows_a_live_master(
    min_cluster_size: int,
) -> None:
    # Jepsen's split-kill with the victim on the larger side: the master, on the larger side,
    # drops one member of the smaller side and is killed before it drops the other. Each side
    # takes over (the smaller side's from an older list, naming the larger side's members);
    # the heal leaves three lineages of the list, one with a dead master. Members of that one
    # whose older members went on in another lineage (answering that they do not count them,
    # or giving lists of a master not in theirs) must not wait for them: before, members were
    # left without a master for good in 8 (min_cluster_size 1) and 12 (3) of 160 runs of
    # these seeds and durations, these among them (and 180: a member older than the taker,
    # joining again, answered "not a member" for ever: it cannot lead the lineage either). With
    # min_cluster_size=3 no two lineages serve at once (the larger side loses its quorum with
    # the kill); seed 90 did: both sides took over from the same list, so both numbered theirs
    # 1002, and members of both answered each master at "their" version: an answer counts now
    # only from a list of the same version and master (``HeartbeatRequest.list_master``).
    for seed in (1, 14, 17, 33, 90, 180):
        for duration in (3.0, 4.0, 5.0):
            limbo, forks = split_kill(5, duration, None, min_cluster_size, seed=seed, timing=JEPSEN_TIMING)
            assert limbo == [], f"seed {seed}, split {duration}s: {limbo} followed the dead master"
            if min_cluster_size > 1:
                assert forks == [], f"seed {seed}, split {duration}s: two lineages served: {forks[:3]}"


@pytest.mark.parametrize("min_cluster_size", [1, 3])
def test_random_split_kills_leave_each_live_member_a_live_master_and_one_lineage_serving(
    min_cluster_size: int,
) -> None:
    # Random schedules of the same fault: the master on either side, any member killed at any
    # time, splits of 2-8 s. On the code before (stop 46) these seeds left members without a
    # master (144, 151, 159, 165, 194, 195) or let two lineages serve at once (51, 117) at
    # min_cluster_size=3, 6 and 2 in 200 schedules; none in 200 since (nor at 1, nor 250 of
    # seven members at 4 and 1). PEERGRID_SOAK runs 300.
    seeds = range(1, 301) if os.environ.get("PEERGRID_SOAK") else (51, 117, 144, 151, 159, 165, 194, 195)
    for seed, limbo, forks in random_split_kills(seeds, 5, min_cluster_size):
        assert limbo == [], f"seed {seed}: {limbo} followed a dead master"
        if min_cluster_size > 1:
            assert forks == [], f"seed {seed}: two lineages served: {forks[:3]}"


def test_an_answer_counts_toward_a_quorum_only_from_the_same_list_version_and_master() -> None:
    # Two members that took over from one list both number theirs TAKEOVER_GAP above it: lists
    # of one version, two masters. A member's answer to a heartbeat at its own version renews
    # the asker's lease with min_cluster_size; from a list of another master it must not.
    async def body() -> None:
        sim = Simulation(3, seed=1, timing=Timing.fast(), min_cluster_size=3)
        members = [sim._member(i, []) for i in range(3)]
        me, other, third = members
        me.form()
        ours = MemberList(1002, me.me.uuid, tuple(m.me for m in members), origin="o")
        assert me.adopt(ours)
        assert me.handle_heartbeat(other.me.uuid, 1002, third.me.uuid).counted is False
        assert me.handle_heartbeat(other.me.uuid, 1002, me.me.uuid).counted is True
        assert me.handle_heartbeat(other.me.uuid, 1002).counted is True  # (a member of an earlier version)
        await me.stop()

    run_virtual(body())
