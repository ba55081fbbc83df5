"""The daemon's configuration: ``meshnode.toml`` in the data directory.

Every key is optional; the defaults make a working node on the open mesh.
``meshnode init`` writes a commented file listing every key (see
:func:`render`), and docs/operator-guide.md documents them. Mistakes raise
:class:`~meshnode.errors.ConfigError` naming the key, never a traceback.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from meshnode.core import codec
from meshnode.core.address import is_wildcard, split_address
from meshnode.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_PORT: Final = 7447
DEFAULT_LISTEN: Final = f"0.0.0.0:{DEFAULT_PORT}"


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Resource limits a node enforces on its peers."""

    max_sessions: int = 256
    max_sessions_per_ip: int = 8
    max_handshakes: int = 64
    max_handshakes_per_ip: int = 4
    mesh_degree: int = 6
    quota_mb_per_author: int = 64


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How often a node acts and how long it waits, in seconds.

    The defaults suit a node that runs for months; local test meshes shorten
    them so that a lost message or a restart costs seconds, not minutes.
    """

    heartbeat: float = 1.0
    sync_interval: float = 60.0
    overlay_interval: float = 60.0
    delivery_interval: float = 60.0
    mail_interval: float = 600.0
    rpc_timeout: float = 2.0
    handshake_timeout: float = 5.0


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    """How much the store may hold, and how that is shared (docs/spec/store.md, "Budget")."""

    max_mb: int = 2048
    channels_percent: int = 50
    public_percent: int = 30
    mail_percent: int = 20


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    """What the daemon's log may say."""

    peers: bool = False


@dataclass(frozen=True, kw_only=True)
class Config:
    """The daemon's settings; command-line flags override them."""

    listen: str = DEFAULT_LISTEN
    announce: str | None = None
    bootstrap: tuple[str, ...] = ()
    network_key_file: str | None = None
    control_group: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    timing: Timing = field(default_factory=Timing)
    store: StoreSettings = field(default_factory=StoreSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def replace(self, **changes: Any) -> Config:
        """This configuration with some keys changed (flags given on the command line)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_DOCS: Final = {
    "listen": "host:port for sessions (TCP) and the DHT (UDP); port 0 picks a free port",
    "announce": "host:port other nodes should dial (your public address); never 0.0.0.0",
    "bootstrap": 'addresses of nodes to join the mesh through, as ["host:port", ...]',
    "network_key_file": "file with a private mesh's 32-byte network key (default: the open mesh)",
    "control_group": "Unix group that may use the control socket (mode 0660); default: owner only",
    "log_format": '"text" for people or "json" for log collectors',
    "log_level": '"debug", "info", "warning" or "error"',
}
_LIMIT_DOCS: Final = {
    "max_sessions": "sessions with other nodes, in total (handshakes not counted)",
    "max_sessions_per_ip": "sessions from one IP address",
    "max_handshakes": "accepted connections still in their handshake, in total",
    "max_handshakes_per_ip": "accepted connections still in their handshake, from one IP address",
    "mesh_degree": "peers per channel that get new bulletins at once (GossipSub's D)",
    "quota_mb_per_author": "megabytes of bulletins stored per author",
}
_TIMING_DOCS: Final = {
    "heartbeat": "seconds between gossip heartbeats (mesh upkeep, announcements of new ids)",
    "sync_interval": "seconds between two reconciliations with a peer of a shared channel",
    "overlay_interval": "seconds between looks for channel members in the DHT",
    "delivery_interval": "seconds between attempts to deliver queued direct bulletins",
    "mail_interval": "seconds between collections of mail that holders keep for us",
    "rpc_timeout": "seconds to wait for the answer to one DHT request",
    "handshake_timeout": "seconds a session's handshake may take, dialled or accepted",
}
_STORE_DOCS: Final = {
    "max_mb": "megabytes the store may hold in all (our own posts are always kept)",
    "channels_percent": "percent of max_mb for our channels' bulletins and direct ones to us",
    "public_percent": "percent of max_mb for the public topic (strangers are evicted first)",
    "mail_percent": "percent of max_mb for mail held for groups that are offline",
}
_LOG_DOCS: Final = {
    "peers": "true: name peers (fingerprints, keys, addresses) at INFO and above, for debugging",
}


def check_address(value: object, key: str, *, allow_zero_port: bool = True) -> str:
    """A ``host:port`` string, or ConfigError naming ``key``.

    Only the shape and the port are checked (:func:`meshnode.core.address.split_address`):
    the host is the system's to bind or resolve, and it says what is wrong with one.
    """
    bad = ConfigError(f'{key}: expected "host:port", got {codec.describe(value)}')
    if not isinstance(value, str):
        raise bad
    try:
        split_address(value, zero_port=allow_zero_port)
    except ValueError:
        raise bad from None
    return value


def load(path: Path) -> Config:
    """Read ``path``; a missing file means every default."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    return from_mapping(data, source=str(path))


def from_mapping(data: dict[str, Any], *, source: str = "configuration") -> Config:
    """A Config from parsed TOML, checking every key and type."""
    data = dict(data)
    limits_data = _table(data, "limits", _LIMIT_DOCS, source)
    timing_data = _table(data, "timing", _TIMING_DOCS, source)
    store_data = _table(data, "store", _STORE_DOCS, source)
    log_data = _table(data, "log", _LOG_DOCS, source)
    unknown = set(data) - set(_DOCS)
    if unknown:
        raise ConfigError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    for key, value in limits_data.items():
        if type(value) is not int or value < 1:
            raise ConfigError(f"{source}: limits.{key} must be a positive whole number")
    for key, value in timing_data.items():
        if type(value) not in (int, float) or not 0 < value <= 86400:
            raise ConfigError(f"{source}: timing.{key} must be a number of seconds, up to 86400")
    for key, value in store_data.items():
        if key == "max_mb" and (type(value) is not int or value < 1):
            raise ConfigError(f"{source}: store.max_mb must be a positive whole number")
        if key != "max_mb" and (type(value) is not int or not 0 <= value <= 100):
            raise ConfigError(f"{source}: store.{key} must be a whole number from 0 to 100")
    store = StoreSettings(**store_data)
    if store.channels_percent + store.public_percent + store.mail_percent > 100:
        raise ConfigError(f"{source}: the store's percentages add up to more than 100")
    for key, value in log_data.items():
        if type(value) is not bool:
            raise ConfigError(f"{source}: log.{key} must be true or false")
    timing = Timing(**{k: float(v) for k, v in timing_data.items()})
    config = Config(
        limits=Limits(**limits_data), timing=timing, store=store, log=LogSettings(**log_data)
    )
    changes: dict[str, Any] = {}
    if "listen" in data:
        changes["listen"] = check_address(data["listen"], "listen")
    if "announce" in data:
        changes["announce"] = check_address(data["announce"], "announce", allow_zero_port=False)
        if is_wildcard(split_address(data["announce"])[0]):
            raise ConfigError("announce: give the address other nodes can dial, not 0.0.0.0")
    if "bootstrap" in data:
        boot = data["bootstrap"]
        if not isinstance(boot, list):
            raise ConfigError('bootstrap: expected a list of "host:port"')
        changes["bootstrap"] = tuple(
            check_address(a, "bootstrap", allow_zero_port=False) for a in boot
        )
    for key in ("network_key_file", "control_group"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise ConfigError(f"{key}: expected a non-empty string")
            changes[key] = data[key]
    if "log_format" in data:
        if data["log_format"] not in ("text", "json"):
            raise ConfigError('log_format: expected "text" or "json"')
        changes["log_format"] = data["log_format"]
    if "log_level" in data:
        if data["log_level"] not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level: expected debug, info, warning or error")
        changes["log_level"] = data["log_level"]
    return config.replace(**changes)


def _table(data: dict[str, Any], name: str, docs: dict[str, str], source: str) -> dict[str, Any]:
    """Take the table ``[name]`` out of ``data``, refusing keys ``docs`` does not name."""
    table = data.pop(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    unknown = set(table) - set(docs)
    if unknown:
        raise ConfigError(f"{source}: unknown key {name}.{sorted(unknown)[0]}")
    return table


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def render(config: Config) -> str:
    """The text of ``meshnode.toml`` for ``config``: every key, with its meaning."""
    lines = ["# meshnode daemon configuration. Every key is optional.", ""]
    for key, doc in _DOCS.items():
        value = getattr(config, key)
        lines.append(f"# {doc}")
        if value is None or value == ():
            lines.append(f"# {key} = ")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    lines.append("[limits]")
    for key, doc in _LIMIT_DOCS.items():
        lines.append(f"# {doc}")
        lines.append(f"{key} = {getattr(config.limits, key)}")
    lines.extend(["", "[timing]"])
    for key, doc in _TIMING_DOCS.items():
        lines.append(f"# {doc}")
        lines.append(f"{key} = {getattr(config.timing, key)!r}")
    lines.extend(["", "[store]"])
    for key, doc in _STORE_DOCS.items():
        lines.append(f"# {doc}")
        lines.append(f"{key} = {getattr(config.store, key)}")
    lines.extend(["", "[log]"])
    for key, doc in _LOG_DOCS.items():
        lines.append(f"# {doc}")
        lines.append(f"{key} = {_toml_value(getattr(config.log, key))}")
    return "\n".join(lines) + "\n"
