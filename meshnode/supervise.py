"""Daemons run as child processes, waited on by events: what ``make demo`` does, and
the system tests.

Theory of operation:
1. Readiness: the parent binds a datagram socket (:func:`notify_socket`) and starts
   ``meshnode daemon`` with ``NOTIFY_SOCKET`` naming it; the daemon sends
   ``READY=1`` there once its node and control socket listen, as it tells systemd
   (:func:`meshnode.daemon.notify_systemd`). :func:`wait_notified` blocks on that
   datagram, so nothing polls the control socket.
2. Arrivals and changes: :func:`follow_until` reads the daemon's ``read --follow``
   stream until it has shown every bulletin asked for; :func:`wait_on` reads any of
   the client's streams (``follow``, ``watch``) until a condition holds. The daemon
   announces each item, so these wait on events; a deadline bounds every wait.
3. Stopping: :func:`terminate` sends SIGTERM and waits, and SIGKILLs a daemon that
   does not exit in time.

Every wait ends in time: a daemon that is silent too long raises
:class:`~meshnode.errors.OperationTimeout`, one that exits while starting
:class:`~meshnode.errors.DaemonUnreachable`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Any, TypeVar

from meshnode.client import connect
from meshnode.errors import DaemonUnreachable, MeshError, OperationTimeout

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from meshnode.core.views import BulletinRecord

T = TypeVar("T")

NOTIFY_WAKE = 0.5
"""Seconds between two looks at a starting daemon's process, to notice one that died."""


@contextlib.contextmanager
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in a short private folder (a Unix socket's path is at most 107
    bytes), and its path for a daemon's ``NOTIFY_SOCKET``."""
    folder = tempfile.mkdtemp(prefix="mn-notify-")
    path = os.path.join(folder, "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def wait_notified(
    sock: socket.socket,
    process: subprocess.Popen[Any],
    *,
    timeout: float,
    explain: Callable[[], str] | None = None,
) -> None:
    """Block until the daemon ``process`` sends ``READY=1`` on ``sock``.

    Raises:
        OperationTimeout: no ``READY=1`` within ``timeout`` seconds.
        DaemonUnreachable: the daemon exited while starting.
        Both messages end with what ``explain`` returns (say, its log's tail).
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OperationTimeout(f"no READY=1 within {timeout:g} s{_detail(explain)}")
        sock.settimeout(min(remaining, NOTIFY_WAKE))
        try:
            if b"READY=1" in sock.recv(4096).split(b"\n"):
                return
        except TimeoutError:
            if process.poll() is not None:
                raise DaemonUnreachable(
                    f"the daemon exited {process.returncode} while starting{_detail(explain)}"
                ) from None


def terminate(process: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM a daemon and wait for it, SIGKILL if it does not exit in time; its code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return int(process.returncode)


def follow_until(
    data_dir: str | os.PathLike[str],
    ids: set[bytes],
    channel: str | None = None,
    *,
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> None:
    """Block on the daemon's ``read --follow`` stream until it has shown every id.

    Raises:
        OperationTimeout: ``timeout`` seconds passed first; the message says ``what``
            was awaited, how many are missing, then what ``explain`` returns.
    """
    seen: set[bytes] = set()

    def has_all(record: BulletinRecord) -> bool:
        seen.add(record.id)
        return ids <= seen

    stream = connect(data_dir, timeout=timeout).follow(channel)
    if not wait_on(stream, has_all, timeout=timeout):
        missing = len(ids - seen)
        raise OperationTimeout(
            f"timed out after {timeout:g} s waiting for {what} ({missing} missing)"
            + _detail(explain)
        )


def wait_on(stream: Generator[T, None, None], done: Callable[[T], bool], *, timeout: float) -> bool:
    """Read a daemon's stream until ``done`` says so (True) or ``timeout`` passed (False).

    The daemon announces each item, so this waits on events; the client's timeout,
    the same, bounds the silence between two items. The stream is closed either way.
    """
    deadline = time.monotonic() + timeout
    try:
        for item in stream:
            if done(item):
                return True
            if time.monotonic() > deadline:
                return False
    except MeshError:
        pass  # the stream's silence outlasted the timeout
    finally:
        stream.close()
    return False


def _detail(explain: Callable[[], str] | None) -> str:
    return f":\n{explain()}" if explain is not None else ""
