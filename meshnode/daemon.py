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
import inspect
import json
import logging
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import trio

from meshnode import control, redact
from meshnode.config import Config
from meshnode.config import load as load_config
from meshnode.errors import AlreadyRunning, ConfigError, MeshError
from meshnode.paths import resolve_data_dir

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator

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
    :mod:`meshnode.redact`)."""
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


def _identity(node: Any) -> dict[str, str]:
    return {
        "name": node.identity.name,
        "fingerprint": node.identity.fingerprint,
        "key": node.identity.key_text,
        "address": node.address,
    }


LOCAL: Final[dict[str, Callable[[Any], Any]]] = {"identity": _identity}
"""The operations the daemon answers from the node's attributes (``node`` None in
:data:`meshnode.control.OPERATIONS`); every other op calls the node's method its row names."""


def _call(node: Any, row: control.Operation[Any], args: dict[str, Any]) -> Any:
    """What the row's Node method returns for the checked ``args``: a value, an awaitable,
    or a streamed answer's items (a list or an async iterator)."""
    if row.node is None:
        return LOCAL[row.name](node)
    return getattr(node, row.node)(**args)


async def _newest(items: AsyncIterator[Any], limit: int | None) -> AsyncIterator[Any]:
    """``items``, or with ``limit`` only the newest ``limit`` of them, oldest first: what an
    organizer catching up wants."""
    if limit is None:
        async for value in items:
            yield value
        return
    newest: collections.deque[Any] = collections.deque(maxlen=limit)
    async for value in items:
        newest.append(value)
    for value in newest:
        yield value


async def _each(values: Iterable[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


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
        message = control.parse_frame(body, max_containers=control.MAX_REQUEST_CONTAINERS)
        op, args = control.parse_request(message)
        row = control.find_operation(op, args)
        for_node, for_daemon = row.bind(args)
        value = _call(node, row, for_node)
        if row.answer is control.Answer.ONE:
            if inspect.isawaitable(value):
                value = await value
            yield control.frame(control.result(value))
            return
        items = value if hasattr(value, "__aiter__") else _each(value)
        async for item in _newest(items, for_daemon.get("limit")):
            yield control.frame(control.item(item))
        yield control.frame(control.result(None))
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
            body = await _receive_exact(stream, control.frame_length(header, control.MAX_REQUEST))
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
