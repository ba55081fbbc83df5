"""``meshnode daemon``: process glue around a node.

Theory of operation:
1. Take an exclusive lock on ``<data dir>/daemon.lock`` (flock): a second daemon
   on the same data directory is refused with a clear message.
2. Read ``meshnode.toml``; flags override it. Load the identity and the
   network key.
3. In one trio nursery: the node (:func:`meshnode.launch.open_node`), the
   control socket, and a signal watcher. SIGTERM and SIGINT cancel the
   nursery; the node closes its sessions and the store finishes its writes.
4. Once everything listens, tell systemd (``READY=1`` on ``$NOTIFY_SOCKET``)
   and log the node's identity and address.

The control socket is ``<data dir>/control.sock``, mode 0600 (0660 with
``control_group``). Where that path is too long for a Unix socket (108 bytes)
it lives under the runtime directory and ``<data dir>/control.path`` says where.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import grp
import hashlib
import json
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final, TextIO

import trio

from meshnode import control
from meshnode.config import Config
from meshnode.config import load as load_config
from meshnode.core import views
from meshnode.core.crypto import KEY_SIZE
from meshnode.errors import AlreadyRunning, ConfigError, MeshError
from meshnode.net import redact
from meshnode.paths import resolve_data_dir

log = logging.getLogger("meshnode")

LOCK_NAME: Final = "daemon.lock"
SOCKET_POINTER: Final = "control.path"
MAX_UNIX_PATH: Final = 107
MAX_CONTROL_CLIENTS: Final = 64
QUIET_LOGGERS: Final = ("kademlia", "rpcudp")


# Logging ---------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(
    fmt: str, level: str, stream: TextIO | None = None, *, peers: bool = False
) -> None:
    """Logs to stderr: human-readable lines, or one JSON object per line. Peers are
    named at INFO and above only with ``peers`` (``[log] peers = true``; see
    :mod:`meshnode.net.redact`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(redact.PeerFilter(peers=peers, foreign=QUIET_LOGGERS))
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kademlia and rpcudp log every RPC and crawl at INFO; keep their warnings,
    # and everything they say only when the operator asks for debug logs.
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(
            logging.DEBUG if level.lower() == "debug" else logging.WARNING
        )


# The lock and the socket path ---------------------------------------------------------


@contextlib.contextmanager
def hold_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's daemon lock, or raise AlreadyRunning."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another meshnode daemon is already running on {data_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def control_socket_path(data_dir: Path) -> Path:
    """Where to bind the control socket, short enough for AF_UNIX."""
    path = data_dir.resolve() / control.SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        base = Path(runtime)
    else:
        base = Path(f"/tmp/meshnode-{os.getuid()}")
        with contextlib.suppress(FileExistsError):
            base.mkdir(mode=0o700)
        # Another user may have made this path first, to take over the socket:
        # use it only if it is our own private folder, not a link.
        info = base.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise ConfigError(
                f"{base} is not a folder of this user's: remove it, or set XDG_RUNTIME_DIR "
                "(the data directory's path is too long for a control socket)"
            )
        os.chmod(base, 0o700)
    digest = hashlib.blake2b(os.fsencode(data_dir.resolve()), digest_size=8).hexdigest()
    return base / f"meshnode-{digest}.sock"


# The control server --------------------------------------------------------------------

Handler = Callable[[Any, dict[str, Any]], Awaitable[Any]]
StreamHandler = Callable[[Any, dict[str, Any]], AsyncIterator[Any]]


MAX_INT_ARG: Final = 2**63 - 1
"""Integer arguments (times, counts) fit SQLite's signed 64 bits, as the store needs."""


def _typed(name: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    """``value`` if its type is exactly ``kind`` (or one of them), else a protocol error.

    Exact, because msgpack's ``true`` is a Python bool and bool is a subclass of int.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if type(value) not in kinds:
        wanted = " or ".join(k.__name__ for k in kinds)
        raise control.ControlProtocolError(
            f"argument {name!r} must be {wanted}, not {type(value).__name__}"
        )
    if type(value) is int and not 0 <= value <= MAX_INT_ARG:
        raise control.ControlProtocolError(f"argument {name!r} is out of range")
    return value


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return _typed(name, args.get(name), kind)


def _opt(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = args.get(name)
    return None if value is None else _typed(name, value, kind)


def _group(name: str, value: Any) -> str | bytes:
    """A group named by petname, key text or fingerprint (str) or by key (bytes)."""
    group: str | bytes = _typed(name, value, (str, bytes))
    if type(group) is bytes and len(group) != KEY_SIZE:
        raise control.ControlProtocolError(f"a group key in {name!r} is {KEY_SIZE} bytes")
    return group


def _opt_group(args: dict[str, Any], name: str) -> str | bytes | None:
    value = args.get(name)
    return None if value is None else _group(name, value)


def _groups(args: dict[str, Any], name: str) -> list[str | bytes]:
    return [_group(name, value) for value in _arg(args, name, list)]


def _channel(args: dict[str, Any]) -> str | bytes:
    """A channel argument: a text (name or id in hex) or an id (bytes), resolved by
    the node as any API caller's (``Archive.find_channel``)."""
    value: str | bytes = _arg(args, "channel", (str, bytes))
    return value


def _identity(node: Any) -> dict[str, str]:
    return {
        "name": node.identity.name,
        "fingerprint": node.identity.fingerprint,
        "key": node.identity.key_text,
        "address": node.address,
    }


OPERATIONS: Final[dict[str, Handler]] = {
    "status": lambda n, a: _value(n.status()),
    "identity": lambda n, a: _value(_identity(n)),
    "peers": lambda n, a: _value(n.peers()),
    "peer_add": lambda n, a: n.connect(_arg(a, "address", str)),
    "channels": lambda n, a: _value(n.channels()),
    "channel_create": lambda n, a: n.create_channel(_arg(a, "name", str)),
    "channel_invite": lambda n, a: n.invite(
        _channel(a),
        expires=_opt(a, "expires", int),
        offline=bool(_opt(a, "offline", bool)),
        with_history=bool(_opt(a, "with_history", bool)),
        for_group=_opt_group(a, "for_group"),
    ),
    "channel_members": lambda n, a: _value(n.members(_channel(a))),
    "channel_remove": lambda n, a: n.remove(_channel(a), _groups(a, "groups")),
    "channel_invites": lambda n, a: _value(n.invites(_channel(a))),
    "channel_revoke": lambda n, a: n.revoke_invite(_channel(a), _arg(a, "invite_id", (str, bytes))),
    "channel_log": lambda n, a: _value(n.log(_channel(a))),
    "channel_upgrade": lambda n, a: n.upgrade(_channel(a), keep=_groups(a, "keep")),
    "channel_join": lambda n, a: n.join(_arg(a, "code", str)),
    "channel_leave": lambda n, a: n.leave(_channel(a)),
    "channel_rekey": lambda n, a: n.rekey(_channel(a), remove=_groups(a, "remove")),
    "post": lambda n, a: n.post(
        _channel(a),
        _arg(a, "text", str),
        reply_to=_opt(a, "reply_to", bytes),
        expires=_opt(a, "expires", int),
    ),
    "post_public": lambda n, a: n.post_public(
        _arg(a, "text", str), expires=_opt(a, "expires", int)
    ),
    "send": lambda n, a: n.send(_groups(a, "recipients"), _arg(a, "text", str)),
    "endorse": lambda n, a: n.endorse(_arg(a, "id", bytes)),
    "contacts": lambda n, a: _value(n.contacts()),
    "contact_add": lambda n, a: _value(n.add_contact(_arg(a, "petname", str), _arg(a, "key", str))),
    "contact_verify": lambda n, a: _value(n.verify_contact(_arg(a, "petname", str))),
    "contact_block": lambda n, a: _value(n.block_contact(_arg(a, "petname", str))),
}


async def _value(value: Any) -> Any:
    return value


async def _read(node: Any, args: dict[str, Any]) -> AsyncIterator[views.BulletinRecord]:
    channel = _opt(args, "channel", (str, bytes))
    limit = _opt(args, "limit", int)
    follow = bool(_opt(args, "follow", bool))
    since = _opt(args, "since", int)
    if follow or limit is None:
        async for record in node.bulletins(channel, since=since, follow=follow):
            yield record
        return
    # The newest ``limit`` bulletins, oldest first: what an organizer catching up wants.
    newest: collections.deque[views.BulletinRecord] = collections.deque(maxlen=max(limit, 0))
    async for record in node.bulletins(channel, since=since, follow=False):
        newest.append(record)
    for record in newest:
        yield record


async def _each(values: list[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


def _streamed(node: Any, op: str, args: dict[str, Any]) -> AsyncIterator[Any] | None:
    """The items of a streaming request, or None for a one-answer one. ``read`` and
    ``unreadable`` always stream (a channel's whole history, or what an attacker left,
    would not fit one control message);
    ``status`` streams with ``follow``: the status, then again at each change."""
    if op == "read":
        return _read(node, args)
    if op == "unreadable":
        return _each(node.unreadable())
    if op == "status" and _opt(args, "follow", bool):
        changes: AsyncIterator[views.NodeStatus] = node.changes()
        return changes
    return None


async def _receive_exact(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise control.ControlProtocolError("the client closed the connection mid-request")
        data += chunk
    return bytes(data)


async def answer(node: Any, body: bytes) -> AsyncGenerator[bytes, None]:
    """The frames that answer one request frame's ``body``: items, then a result or a failure.

    Whatever the bytes, a refusal is a failure frame naming a :class:`MeshError` class
    (a :class:`~meshnode.control.ControlProtocolError` for a malformed request or
    argument); only a bug in the daemon raises, and the server loop catches that.
    """
    op = "(unparsed)"
    try:
        op, args = control.parse_request(control.parse_frame(body))
        items = _streamed(node, op, args)
        if items is not None:
            async for value in items:
                yield control.frame(control.item(value))
            yield control.frame(control.result(None))
            return
        handler = OPERATIONS.get(op)
        if handler is None:
            raise control.ControlProtocolError(f"unknown operation {op!r}")
        yield control.frame(control.result(await handler(node, args)))
    except MeshError as exc:
        log.info("control: %s failed: %s", op, redact.peer(exc))
        yield control.frame(control.failure(exc))
    except (ValueError, TypeError) as exc:
        log.info("control: %s refused: %s", op, redact.peer(exc))
        yield control.frame(control.failure(MeshError(str(exc))))


async def _serve_control_client(node: Any, stream: trio.abc.Stream) -> None:
    """Answer one request on ``stream``, then close it. Nothing a client sends stops the
    daemon: an unexpected exception is logged and answered with a generic error, and
    only this connection closes."""
    async with stream:
        try:
            await _serve_request(node, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except Exception as exc:  # the daemon outlives a bug met by any one request
            log.error("control: internal error answering a request", exc_info=exc)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(control.frame(control.failure(exc)))


async def _serve_request(node: Any, stream: trio.abc.Stream) -> None:
    try:
        with trio.fail_after(30):
            header = await _receive_exact(stream, 4)
            body = await _receive_exact(stream, control.frame_length(header))
    except (MeshError, trio.TooSlowError) as exc:
        log.debug("control: bad request: %s", exc)
        failure = exc if isinstance(exc, MeshError) else MeshError("no request")
        await stream.send_all(control.frame(control.failure(failure)))
        return
    async with contextlib.aclosing(answer(node, body)) as frames:
        async for data in frames:
            await stream.send_all(data)


def bind_control_socket(data_dir: Path, control_group: str | None) -> tuple[socket.socket, Path]:
    """Bind the control socket with its mode (0600, or 0660 for ``control_group``)."""
    path = control_socket_path(data_dir)
    pointer = data_dir / SOCKET_POINTER
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    mode = 0o600
    if control_group is not None:
        try:
            gid = grp.getgrnam(control_group).gr_gid
        except KeyError:
            sock.close()
            raise ConfigError(f"control_group: no Unix group named {control_group!r}") from None
        os.chown(path, -1, gid)
        mode = 0o660
    os.chmod(path, mode)
    if path.parent != data_dir.resolve():
        pointer.write_text(f"{path}\n")
    elif pointer.exists():
        pointer.unlink()
    sock.listen(64)
    return sock, path


def _remove_control_files(data_dir: Path, path: Path) -> None:
    for leftover in (path, data_dir / SOCKET_POINTER):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


async def serve_control(
    node: Any,
    data_dir: Path,
    *,
    control_group: str | None = None,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket until cancelled; ``task_status`` gets its path."""
    raw, path = bind_control_socket(data_dir, control_group)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
    limiter = trio.CapacityLimiter(MAX_CONTROL_CLIENTS)

    async def guarded(stream: trio.SocketStream) -> None:
        async with limiter:
            await _serve_control_client(node, stream)

    try:
        async with listener, trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                stream = await listener.accept()
                nursery.start_soon(guarded, stream)
    finally:
        _remove_control_files(data_dir, path)


# systemd and signals -------------------------------------------------------------------


def notify_systemd(message: str) -> None:
    """Send ``message`` (e.g. ``READY=1``) to systemd when it supervises us."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            log.warning("could not notify systemd: %s", exc)


async def _stop_on_signals(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping", signal.Signals(signum).name)
            notify_systemd("STOPPING=1")
            cancel_scope.cancel()
            return


# The daemon ----------------------------------------------------------------------------


def read_network_key(path: str | None) -> bytes | None:
    """The 32-byte network key in ``path`` (hex text or raw bytes), or None for the open mesh."""
    if path is None:
        return None
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"network_key_file: cannot read {path}: {exc.strerror}") from None
    text = data.strip()
    try:
        key = bytes.fromhex(text.decode("ascii")) if len(text) == 64 else data
    except (UnicodeDecodeError, ValueError):
        key = data
    if len(key) != 32:
        raise ConfigError(f"network_key_file: {path} does not hold a 32-byte key (64 hex digits)")
    return key


async def serve_daemon(
    data_dir: Path,
    config: Config,
    *,
    passphrase: str | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the node and its control socket until cancelled or signalled."""
    from meshnode.launch import node_config, open_node

    network_key = read_network_key(config.network_key_file)
    with trio.CancelScope() as scope:
        async with (
            open_node(
                data_dir,
                listen=config.listen,
                announce=config.announce,
                bootstrap=config.bootstrap,
                network_key=network_key,
                passphrase=passphrase,
                config=node_config(config.limits, config.timing, config.store),
            ) as node,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_stop_on_signals, scope)
            path = await nursery.start(
                lambda task_status: serve_control(
                    node, data_dir, control_group=config.control_group, task_status=task_status
                )
            )
            log.info(
                "meshnode %s (%s) listening on %s",
                node.identity.name,
                node.identity.fingerprint,
                node.address,
            )
            log.info("control socket: %s", path)
            notify_systemd(f"READY=1\nSTATUS=listening on {node.address}")
            task_status.started(node)
    log.info("stopped")


def run_daemon(
    data_dir: str | os.PathLike[str] | None,
    *,
    listen: str | None = None,
    bootstrap: tuple[str, ...] | None = None,
    log_format: str | None = None,
    passphrase: str | None = None,
) -> None:
    """The whole daemon, from the command line's options to a clean stop."""
    home = resolve_data_dir(data_dir)
    from meshnode.paths import CONFIG

    config = load_config(home / CONFIG).replace(
        listen=listen, bootstrap=bootstrap or None, log_format=log_format
    )
    setup_logging(config.log_format, config.log_level, peers=config.log.peers)
    with hold_lock(home):
        started = time.monotonic()
        trio.run(lambda: serve_daemon(home, config, passphrase=passphrase))
        log.debug("ran for %.1f s", time.monotonic() - started)
