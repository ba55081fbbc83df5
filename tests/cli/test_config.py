"""meshnode.toml: the [timing] and [log] tables are rendered, parsed and checked; timing
reaches the node."""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING

import pytest

from meshnode.cli import run
from meshnode.config import Config, Limits, LogSettings, Timing, from_mapping, load, render
from meshnode.errors import ConfigError
from meshnode.launch import node_config
from meshnode.net.node import NodeConfig

if TYPE_CHECKING:
    from pathlib import Path


def test_init_writes_every_timing_key_with_its_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(["--data-dir", str(home), "init", "--name", "Local 12"]) == 0
    text = (home / "meshnode.toml").read_text()
    assert "[timing]" in text
    assert load(home / "meshnode.toml").timing == Timing()


def test_timing_round_trips_through_render() -> None:
    timing = Timing(heartbeat=0.25, sync_interval=2, mail_interval=1.5, rpc_timeout=0.5)
    config = Config(timing=timing)
    parsed = from_mapping(tomllib.loads(render(config)))
    assert parsed.timing == timing
    assert parsed == config


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ({"heartbeat": 0}, "timing.heartbeat must be a number of seconds"),
        ({"sync_interval": -1.0}, "timing.sync_interval must be a number of seconds"),
        ({"mail_interval": "10"}, "timing.mail_interval must be a number of seconds"),
        ({"rpc_timeout": True}, "timing.rpc_timeout must be a number of seconds"),
        ({"overlay_interval": 90_000}, "up to 86400"),
        ({"gossip": 1.0}, "unknown key timing.gossip"),
    ],
)
def test_bad_timing_names_the_key(timing: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"timing": timing})


def test_timing_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[timing\] must be a table"):
        from_mapping({"timing": 3})


def test_from_mapping_leaves_its_argument_alone() -> None:
    data = {"timing": {"heartbeat": 0.5}, "limits": {"mesh_degree": 4}}
    from_mapping(data)
    assert data == {"timing": {"heartbeat": 0.5}, "limits": {"mesh_degree": 4}}


def test_timing_reaches_the_node_config() -> None:
    timing = Timing(
        heartbeat=0.2,
        sync_interval=3.0,
        overlay_interval=4.0,
        delivery_interval=5.0,
        mail_interval=6.0,
        rpc_timeout=0.7,
        handshake_timeout=1.5,
    )
    cfg = node_config(Limits(mesh_degree=5), timing)
    assert cfg.gossip.heartbeat == 0.2
    assert cfg.gossip.sync.interval == 3.0
    assert cfg.overlay_interval == 4.0
    assert cfg.delivery_interval == 5.0
    assert cfg.mail_interval == 6.0
    assert cfg.dht.rpc_timeout == 0.7
    assert cfg.session.handshake_timeout == 1.5
    assert cfg.gossip.d == 5


def test_session_and_handshake_limits_reach_the_listener() -> None:
    limits = Limits(
        max_sessions=9, max_sessions_per_ip=3, max_handshakes=7, max_handshakes_per_ip=2
    )
    session = node_config(limits).session
    assert (session.max_sessions, session.max_sessions_per_ip) == (9, 3)
    assert (session.max_handshakes, session.max_handshakes_per_ip) == (7, 2)
    parsed = from_mapping(tomllib.loads(render(Config(limits=limits))))
    assert parsed.limits == limits


def test_default_timing_is_the_node_default() -> None:
    assert node_config(Limits()) == node_config(Limits(), Timing())
    default, node = Timing(), NodeConfig()
    assert default.heartbeat == node.gossip.heartbeat
    assert default.sync_interval == node.gossip.sync.interval
    assert default.overlay_interval == node.overlay_interval
    assert default.delivery_interval == node.delivery_interval
    assert default.mail_interval == node.mail_interval
    assert default.rpc_timeout == node.dht.rpc_timeout
    assert default.handshake_timeout == node.session.handshake_timeout
    limits = Limits()
    assert limits.max_handshakes == node.session.max_handshakes
    assert limits.max_handshakes_per_ip == node.session.max_handshakes_per_ip


def test_log_peers_is_off_by_default_and_round_trips() -> None:
    assert Config().log == LogSettings(peers=False)
    assert "[log]\n# true: name peers" in render(Config())
    config = Config(log=LogSettings(peers=True))
    assert "peers = true" in render(config)
    assert from_mapping(tomllib.loads(render(config))).log.peers is True


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ({"peers": 1}, "log.peers must be true or false"),
        ({"peers": "yes"}, "log.peers must be true or false"),
        ({"keys": True}, "unknown key log.keys"),
        (3, r"\[log\] must be a table"),
    ],
)
def test_bad_log_settings_name_the_key(log: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"log": log})


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:\u00b2", "127.0.0.1:\u0661", "127.0.0.1:" + "9" * 5000, "127.0.0.1:007000"],
)
@pytest.mark.parametrize("key", ["listen", "announce", "bootstrap"])
def test_ports_that_str_isdigit_accepts_but_int_refuses_are_config_errors(
    tmp_path: Path, key: str, address: str
) -> None:
    # Found by the fuzzer (tests/fuzz, target config): "²" passed str.isdigit and
    # int() then raised ValueError; 5000 digits passed too and hit int()'s digit limit.
    value = f'["{address}"]' if key == "bootstrap" else f'"{address}"'
    path = tmp_path / "meshnode.toml"
    path.write_text(f"{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="host:port"):
        load(path)


def test_toml_nested_too_deeply_for_tomllib_is_a_config_error(tmp_path: Path) -> None:
    # tomllib recurses per nested array: 600 levels raised RecursionError from load.
    path = tmp_path / "meshnode.toml"
    path.write_text("listen = " + "[" * 600 + "]" * 600 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load(path)


def test_a_bad_address_is_named_without_quoting_a_deep_value(tmp_path: Path) -> None:
    path = tmp_path / "meshnode.toml"
    path.write_text("listen = " + "[" * 300 + "]" * 300 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="got a list"):
        load(path)
