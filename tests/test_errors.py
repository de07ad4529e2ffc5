"""Bad input and bad situations: a PeerGridError a person can act on, and the map unchanged."""

from __future__ import annotations

import logging
import re
import socket

import grpc
import pytest

import peergrid
from peergrid import Limits, Timing
from peergrid.testing import cluster


def test_wrong_key_types(grids3, name) -> None:
    m = grids3[0].get_map(name)
    for bad in (1.5, None, True, ("t",), ["l"]):
        with pytest.raises(peergrid.KeyTypeError, match=r"str, bytes or int|bool"):
            m.put(bad, 1)
        with pytest.raises(peergrid.KeyTypeError):
            m.get(bad)
    assert m.size() == 0


def test_unsupported_value_names_its_type_and_writes_nothing(grids3, name) -> None:
    m = grids3[0].get_map(name)
    with pytest.raises(peergrid.SerializationError, match="complex"):
        m.put("k", complex(1, 2))
    with pytest.raises(peergrid.SerializationError):
        m.put_all({"a": 1, "b": object()})
    assert m.size() == 0  # put_all checks every value before sending any


def test_oversized_keys_and_values_are_refused_before_sending() -> None:
    with cluster(
        2, limits=Limits(max_key_bytes=100, max_value_bytes=1000, max_message_bytes=10_000)
    ) as grids:
        m = grids[0].get_map("m")
        with pytest.raises(peergrid.LimitExceededError, match="max_key_bytes"):
            m.put("k" * 200, 1)
        with pytest.raises(peergrid.LimitExceededError, match="max_value_bytes"):
            m.put("k", "v" * 2000)
        with pytest.raises(peergrid.LimitExceededError):
            m.put_all({"a": 1, "b": "v" * 2000})
        assert m.size() == 0
        assert isinstance(peergrid.LimitExceededError("x"), ValueError)


def test_unknown_arguments(grids3, name) -> None:
    m = grids3[0].get_map(name)
    with pytest.raises(peergrid.ArgumentError, match="did you mean 'ttl'"):
        m.put("k", 1, tll=5)
    with pytest.raises(peergrid.ArgumentError):
        grids3[0].get_map(name, near=True)
    with pytest.raises(peergrid.ArgumentError):
        m.put_all([("a", 1)])
    with pytest.raises(peergrid.ArgumentError):
        grids3[0].get_map("")
    assert m.size() == 0


def test_closed_grid() -> None:
    with cluster(1) as grids:
        grid = grids[0]
        m = grid.get_map("m")
        m.put("k", 1)
        grid.shutdown()
        grid.shutdown()  # safe twice
        for call in (lambda: m.get("k"), lambda: m.put("k", 2), m.size, lambda: grid.get_map("x")):
            with pytest.raises(peergrid.GridClosedError, match="shut down"):
                call()


def test_unreachable_owner_past_the_deadline() -> None:
    # A long failure timeout keeps the dead member in the table: its keys have no reachable owner.
    timing = Timing(
        heartbeat_interval=0.2,
        failure_timeout=60,
        operation_timeout=0.6,
        rpc_timeout=0.3,
        join_timeout=1,
        retry_max=0.05,
        anti_entropy_interval=60,
    )
    with cluster(2, timing=timing, backup_count=0) as grids:
        a, b = grids
        key = next(f"k{i}" for i in range(1000) if a.owner_of(f"k{i}").uuid == b.uuid)
        grids.kill(b)
        m = a.get_map("m")
        with pytest.raises(peergrid.OperationTimeoutError, match=r"within 0\.6s"):
            m.get(key)
        with pytest.raises(peergrid.OperationTimeoutError) as info:
            m.put(key, 1)
        # The owner could not even be connected to: the write was never sent, so it is not in doubt.
        assert not isinstance(info.value, peergrid.IndeterminateWriteError)
        assert info.value.retryable


def test_another_cluster_name_is_refused_naming_both() -> None:
    with cluster(1, cluster="alpha") as grids, pytest.raises(peergrid.ClusterNameMismatchError) as info:
        peergrid.Grid(cluster="beta", members=[grids[0].address], timing=Timing.fast())
    assert "alpha" in str(info.value)
    assert "beta" in str(info.value)


def test_unreachable_seeds_start_alone_with_a_log_line(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="peergrid.cluster")
    with cluster(1) as grids:
        dead = grids[0].address
    timing = Timing(join_timeout=0.5, join_retry_interval=0.05, heartbeat_interval=0.1, failure_timeout=1)
    with peergrid.Grid(members=[dead], timing=timing) as alone:
        assert [m.address for m in alone.members()] == [alone.address]
        alone.get_map("m").put("k", 1)
        assert alone.get_map("m").get("k") == 1
    assert any(
        "starting a new cluster alone" in r.getMessage() and dead in r.getMessage() for r in caplog.records
    )


def test_malformed_and_oversized_requests_get_an_error_status_and_the_member_keeps_serving() -> None:
    with cluster(
        1, limits=Limits(max_message_bytes=64 * 1024, max_key_bytes=1024, max_value_bytes=32 * 1024)
    ) as grids:
        grid = grids[0]
        grid.get_map("m").put("k", "v")
        channel = grpc.insecure_channel(grid.address)
        execute = channel.unary_unary("/peergrid.v1.MapService/Execute")
        with pytest.raises(grpc.RpcError) as garbage:
            execute(b"\xff\xfe not a protobuf", timeout=5)
        assert garbage.value.code() in (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.UNKNOWN,
        )
        with pytest.raises(grpc.RpcError) as huge:
            execute(b"\x0a" + b"\x00" * (200 * 1024), timeout=5)
        assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        channel.close()
        assert grid.get_map("m").get("k") == "v"
        grid.get_map("m").put("k2", "v2")
        assert grid.get_map("m").size() == 2


# -- start errors: every failure to start is a PeerGridError that names the cause and the fix


def test_a_port_in_use_is_a_bind_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(peergrid.BindError, match=f"port {port} is already in use") as info:
            peergrid.Grid(bind=f"127.0.0.1:{port}", timing=Timing.fast())
    assert isinstance(info.value, OSError)  # what the raw error was: old handlers still catch it
    assert info.value.address == f"127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("256.1.1.1:0", "'256.1.1.1' is not a valid host name or IP address"),
        ("192.0.2.1:0", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1: never local
    ],
)
def test_an_invalid_or_foreign_host_is_a_bind_error(bind: str, message: str) -> None:
    with pytest.raises(peergrid.BindError, match=message):
        peergrid.Grid(bind=bind, timing=Timing.fast())


def test_an_invalid_port_is_a_config_error() -> None:
    with pytest.raises(peergrid.ConfigError, match="port between 0 and 65535"):
        peergrid.Grid(bind="127.0.0.1:70000", timing=Timing.fast())


def test_the_error_tree_in_the_docstring_names_every_error() -> None:
    from peergrid import errors

    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, peergrid.PeerGridError)
    ]
    for cls in classes:
        assert re.search(rf"(── |    ){cls.__name__}\b", errors.__doc__ or ""), cls
        assert cls.__name__ in peergrid.__all__, cls
