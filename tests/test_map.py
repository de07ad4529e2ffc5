"""The distributed map over real gRPC on loopback: every operation, through every member."""

from __future__ import annotations

import threading

import pytest

import peergrid
from peergrid.protocol import Code
from peergrid.testing import cluster
from tests.conftest import wait_for


def test_every_operation_through_every_member(api, grids3, name) -> None:
    ma, mb, mc = (api.map(g, name) for g in grids3)
    assert ma.put("k", {"n": 1}) is None
    assert mb.put("k", {"n": 2}) == {"n": 1}
    assert mc.get("k") == {"n": 2}
    mc.set("s", [1, 2])
    assert ma.get("s") == [1, 2]
    assert mb.get("missing") is None
    assert mb.get("missing", "dflt") == "dflt"
    assert ma.put_if_absent("k", 0) == {"n": 2}
    assert ma.put_if_absent("new", 0) is None
    assert mc.get("new") == 0
    assert mb.replace("absent", 1) is None
    assert not mb.contains_key("absent")
    assert mb.replace("new", 1) == 0
    assert not mc.replace_if_same("new", 0, 5)
    assert mc.replace_if_same("new", 1, 5)
    assert ma.get("new") == 5
    assert mb.contains_key("new")
    assert mc.delete("new")
    assert not ma.delete("new")
    assert not mb.contains_key("new")
    assert ma.size() == mb.size() == 2
    assert sorted(mc.keys()) == ["k", "s"]
    assert sorted(map(str, ma.values())) == sorted(map(str, [{"n": 2}, [1, 2]]))
    assert sorted(mb.items(), key=lambda kv: kv[0]) == [("k", {"n": 2}), ("s", [1, 2])]
    mc.clear()
    assert ma.size() == 0
    assert mb.get("k") is None


def test_mapping_protocol(grids3, name) -> None:
    m = grids3[0].get_map(name)
    other = grids3[2].get_map(name)
    m["a"] = 1
    assert other["a"] == 1
    assert "a" in other
    assert "b" not in other
    assert len(other) == 1
    assert list(iter(other)) == ["a"]
    with pytest.raises(KeyError):
        other["b"]
    del other["a"]
    with pytest.raises(KeyError):
        del m["a"]
    assert len(m) == 0


def test_keys_of_every_type_and_equal_values(api, grids3, name) -> None:
    m = api.map(grids3[1], name)
    m.put_all({"1": "str", b"1": "bytes", 1: "int", -5: "neg"})
    other = api.map(grids3[0], name)
    assert other.get_all(["1", b"1", 1, -5, 99]) == {"1": "str", b"1": "bytes", 1: "int", -5: "neg"}
    # replace_if_same compares values, not their encodings.
    m.put("d", {"a": 1, "b": 2})
    assert other.replace_if_same("d", {"b": 2, "a": 1}, "swapped")


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_entries_spread_over_every_member_and_read_from_each(api, size: int) -> None:
    with cluster(size) as grids:
        api.map(grids[0], "spread").put_all({f"k{i}": i for i in range(600)})
        for grid in grids:
            m = api.map(grid, "spread")
            assert m.get_all([f"k{i}" for i in range(600)]) == {f"k{i}": i for i in range(600)}
            assert m.get(f"k{size}") == size
        stats = [api.map(g, "spread").local_stats() for g in grids]
        assert sum(s.owned_entries for s in stats) == 600
        assert sum(s.backup_entries for s in stats) == 600 * min(1, size - 1)
        if size > 1:
            assert all(s.owned_entries > 0 for s in stats)


def test_owner_local_reads_need_no_rpc(api, grids3, name) -> None:
    a = grids3[0]
    m = api.map(a, name)
    mine = next(f"k{i}" for i in range(1000) if a.owner_of(f"k{i}").uuid == a.uuid)
    m.put(mine, "here")
    frames = sum(p.frames_sent for p in a._node.pipes.open_calls().values())
    for _ in range(50):
        assert m.get(mine) == "here"
    assert sum(p.frames_sent for p in a._node.pipes.open_calls().values()) == frames


def test_get_all_and_put_all_send_one_frame_per_owning_member(api, grids3, name) -> None:
    a = grids3[0]
    m = api.map(a, name)
    keys = [f"k{i}" for i in range(300)]
    m.put_all(dict.fromkeys(keys, 1))
    before = {uuid: p.frames_sent for uuid, p in a._node.pipes.open_calls().items()}
    assert len(m.get_all(keys)) == 300
    sent = {uuid: p.frames_sent - before.get(uuid, 0) for uuid, p in a._node.pipes.open_calls().items()}
    owners = {a.owner_of(k).uuid for k in keys} - {a.uuid}
    assert {uuid for uuid, count in sent.items() if count} == owners
    assert all(sent[uuid] == 1 for uuid in owners)


def test_get_all_of_mixed_owners_missing_keys_and_duplicates(api, grids3, name) -> None:
    a = grids3[0]
    m = api.map(a, name)
    present = {f"k{i}": {"i": i} for i in range(60)} | {7: "seven", b"raw": [1, 2]}
    m.put_all(present)
    asked = [*present, "missing-1", *list(present)[:10], "missing-2", 7, "missing-1"]
    owners = {a.owner_of(k).uuid for k in asked}
    assert owners == {g.uuid for g in grids3}  # keys of every member, this one's included
    for g in grids3:  # the same answer through every member
        assert api.map(g, name).get_all(asked) == present
    assert m.get_all(["missing-1", "missing-2"]) == {}
    assert m.get_all([7, 7, 7]) == {7: "seven"}


def test_get_all_sends_one_get_many_op_per_owning_member(api, grids3, name, monkeypatch) -> None:
    a, b, c = grids3
    m = api.map(a, name)
    keys = [f"k{i}" for i in range(90)]
    m.put_all(dict.fromkeys(keys, 1))
    seen: list[tuple[str, int]] = []
    for g in (b, c):
        executor = g._node.executor
        original = executor._get_many

        def counted(op, version, sender, original=original, uuid=g.uuid):
            seen.append((uuid, len(op.value) // 8))
            return original(op, version, sender)

        monkeypatch.setattr(executor, "_get_many", counted)
    assert m.get_all(keys) == dict.fromkeys(keys, 1)
    remote = [k for k in keys if a.owner_of(k).uuid != a.uuid]
    assert sorted(seen) == sorted(
        (uuid, sum(a.owner_of(k).uuid == uuid for k in remote)) for uuid in {b.uuid, c.uuid}
    )


def test_get_all_keys_sent_to_a_member_that_does_not_serve_them_are_asked_of_their_owners(
    api, grids3, name, monkeypatch
) -> None:
    # As if this member's table were stale: every key goes to b, which answers the keys it does
    # not own with their status; they are asked again, each of its own owner.
    a, b, _ = grids3
    m = api.map(a, name)
    keys = [f"k{i}" for i in range(60)]
    m.put_all({k: k.upper() for k in keys})
    pipe_to_b = a._node.pipes.calls(b.uuid)
    monkeypatch.setattr(a._node.invoker, "pipes_for", lambda partitions: [pipe_to_b] * len(partitions))
    assert m.get_all([*keys, "missing"]) == {k: k.upper() for k in keys}
    assert {a.owner_of(k).uuid for k in keys} == {g.uuid for g in grids3}


def test_the_pipes_of_a_batch_of_partitions_are_each_partitions_pipe(grids3) -> None:
    # get_all and put_all look their keys' owners up in one pass (Node.pipes_for).
    node = grids3[0]._node
    partitions = [*range(node.config.partition_count), 5, 5, 0]
    assert node.pipes_for(partitions) == [node.pipe_for(p) for p in partitions]
    assert None in node.pipes_for(partitions)  # the partitions it owns itself
    assert {id(pipe) for pipe in node.pipes_for(partitions) if pipe is not None} == {
        id(node.pipes.calls(g.uuid)) for g in grids3[1:]
    }


def test_get_all_asks_a_member_from_before_get_many_key_by_key(api, grids3, name, monkeypatch) -> None:
    a, b, c = grids3
    m = api.map(a, name)
    keys = [f"k{i}" for i in range(60)]
    m.put_all(dict.fromkeys(keys, "v"))
    for g in (b, c):  # an older member: GET_MANY is an unknown op to its executor
        executor = g._node.executor
        original = executor.check

        def older(op, original=original):
            return f"unknown operation code {op.code}" if op.code == Code.GET_MANY else original(op)

        monkeypatch.setattr(executor, "check", older)
    for g in (b, c):
        a._node.pipes.calls(g.uuid).legacy = False
    assert m.get_all(keys) == dict.fromkeys(keys, "v")
    assert all(a._node.pipes.calls(g.uuid).legacy for g in (b, c))
    before = {g.uuid: a._node.pipes.calls(g.uuid).frames_sent for g in (b, c)}
    assert m.get_all([*keys, "missing"]) == dict.fromkeys(keys, "v")  # key by key: one frame each
    assert all(a._node.pipes.calls(g.uuid).frames_sent == before[g.uuid] + 1 for g in (b, c))
    for g in (b, c):
        a._node.pipes.calls(g.uuid).legacy = False  # the module's next tests see today's members


def test_get_all_while_a_member_joins_and_partitions_migrate(api, name) -> None:
    with cluster(2) as grids:
        m = api.map(grids[0], name)
        values = {f"k{i}": i for i in range(300)}
        m.put_all(values)
        failures: list[object] = []
        rounds = [0]
        stop = threading.Event()

        def read() -> None:
            reader = api.map(grids[1], name)
            while not stop.is_set():
                try:
                    got = reader.get_all(list(values))
                except Exception as exc:  # recorded for the assertion below
                    failures.append(exc)
                    return
                if got != values:
                    failures.append(sorted(set(values) - set(got))[:5])
                    return
                rounds[0] += 1

        thread = threading.Thread(target=read)
        thread.start()
        try:
            start = rounds[0]
            grids.add()
            assert grids.wait_until_safe(30)
            wait_for(lambda: rounds[0] > start + 2 or failures, 10, message="reads after the join")
        finally:
            stop.set()
            thread.join()
        assert not failures
        for g in grids:  # after the migration, from every member
            assert api.map(g, name).get_all(list(values)) == values


def test_ttl_expires_everywhere_and_is_swept(api, grids3, name) -> None:
    a, b, c = grids3
    m = api.map(a, name)
    m.put("short", "v", ttl=0.3)
    m.set("long", "v", ttl=60)
    m.put("forever", "v")
    assert api.map(c, name).get("short") == "v"
    wait_for(lambda: all(api.map(g, name).get("short") is None for g in grids3), 5, message="expiry")
    assert api.map(b, name).get_all(["short", "long", "forever"]) == {"long": "v", "forever": "v"}
    assert api.map(c, name).size() == 2

    def swept() -> bool:
        stats = [api.map(g, name).local_stats() for g in grids3]
        return sum(s.owned_entries for s in stats) == 2 and sum(s.owned_bytes for s in stats) > 0

    wait_for(swept, 5, message="sweep")


def test_map_default_ttl_and_ttl_validation(api, grids3, name) -> None:
    m = api.map(grids3[0], name, ttl=0.2)
    m.put("a", 1)
    m.put("b", 1, ttl=60)
    wait_for(lambda: m.get("a") is None, 5, message="default ttl")
    assert m.get("b") == 1
    for bad in (0, -1, float("nan"), float("inf"), "3", True):
        with pytest.raises(peergrid.ArgumentError, match="ttl"):
            m.put("a", 1, ttl=bad)


def test_empty_batches(api, grids3, name) -> None:
    m = api.map(grids3[1], name)
    assert m.get_all([]) == {}
    m.put_all({})
    assert m.size() == 0


def test_same_handle_for_the_same_name(grids3, name) -> None:
    assert grids3[0].get_map(name) is grids3[0].get_map(name)
