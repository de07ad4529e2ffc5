"""Configuration: defaults, validation, and messages a person can act on."""

from __future__ import annotations

import pytest

import peergrid
from peergrid.config import GridConfig, Limits, Timing


def test_defaults_are_valid() -> None:
    config = GridConfig()
    config.validate()
    assert config.partition_count == 271
    assert config.backup_count == 1
    assert config.vnodes >= 100


def test_unknown_option_suggests_the_near_one() -> None:
    with pytest.raises(peergrid.ConfigError, match="backup_count"):
        GridConfig.from_kwargs(bakup_count=2)


def test_members_may_be_a_comma_separated_string() -> None:
    assert GridConfig.from_kwargs(members="a:1, b:2").members == ("a:1", "b:2")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bind": "nohost"}, "host:port"),
        ({"members": ["x:notaport"]}, "port"),
        ({"backup_count": -1}, "backup_count"),
        ({"partition_count": 0}, "partition_count"),
        ({"discovery": "dns"}, "discovery"),
        ({"cluster": ""}, "cluster"),
        ({"serializer": "pickle"}, "tls"),
        ({"timing": Timing(heartbeat_interval=2, failure_timeout=1)}, "failure_timeout"),
        ({"timing": Timing(rpc_timeout=0)}, "rpc_timeout"),
        ({"limits": Limits(max_value_bytes=10**9)}, "max_message_bytes"),
        ({"weight": 0}, "weight"),
    ],
)
def test_invalid_values_are_refused_with_the_reason(options: dict, message: str) -> None:
    with pytest.raises(peergrid.ConfigError, match=message):
        GridConfig.from_kwargs(**options)


def test_grid_refuses_unknown_options_before_binding() -> None:
    with pytest.raises(peergrid.ConfigError, match="did you mean 'members'"):
        peergrid.Grid(memebrs=["127.0.0.1:1"])


def test_config_errors_are_peergrid_errors_and_type_errors() -> None:
    assert issubclass(peergrid.ConfigError, peergrid.PeerGridError)
    assert issubclass(peergrid.ConfigError, TypeError)
