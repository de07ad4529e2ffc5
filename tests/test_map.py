"""The distributed map over real gRPC on loopback: every operation, through every member."""

from __future__ import annotations

import pytest

import peergrid
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
