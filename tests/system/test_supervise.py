"""meshnode.supervise on stand-in processes: READY=1 awaited, a death or silence told
apart, a daemon that ignores SIGTERM still stopped. (The real daemons are awaited the
same way in every system test and in ``make demo``.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from meshnode.errors import DaemonUnreachable, OperationTimeout
from meshnode.supervise import notify_socket, terminate, wait_notified

if TYPE_CHECKING:
    from collections.abc import Iterator

NOTIFY = (
    "import os, signal, socket\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'STATUS=starting', os.environ['NOTIFY_SOCKET'])\n"
    "s.sendto(b'READY=1\\nSTATUS=listening', os.environ['NOTIFY_SOCKET'])\n"
    "signal.pause()\n"  # (lives until a signal ends it)
)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait(timeout=10)


def _spawn(
    code: str, env: dict[str, str], into: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code], env=env)
    into.append(process)
    return process


def test_ready_is_awaited(started: list[subprocess.Popen[bytes]]) -> None:
    with notify_socket() as (sock, path):
        process = _spawn(NOTIFY, {"NOTIFY_SOCKET": path}, started)
        wait_notified(sock, process, timeout=30)
    assert process.poll() is None
    assert terminate(process, timeout=10) == -signal.SIGTERM


def test_a_daemon_that_dies_starting_is_not_a_timeout(
    started: list[subprocess.Popen[bytes]],
) -> None:
    with notify_socket() as (sock, path):
        process = _spawn("raise SystemExit(3)", {"NOTIFY_SOCKET": path}, started)
        with pytest.raises(DaemonUnreachable, match="exited 3 while starting:\nits log"):
            wait_notified(sock, process, timeout=30, explain=lambda: "its log")


def test_silence_is_a_timeout(started: list[subprocess.Popen[bytes]]) -> None:
    with notify_socket() as (sock, path):
        process = _spawn("import signal; signal.pause()", {"NOTIFY_SOCKET": path}, started)
        with pytest.raises(OperationTimeout, match=r"no READY=1 within 0\.6 s"):
            wait_notified(sock, process, timeout=0.6)


def test_a_daemon_deaf_to_sigterm_is_killed(started: list[subprocess.Popen[bytes]]) -> None:
    deaf = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + NOTIFY
    with notify_socket() as (sock, path):
        process = _spawn(deaf, {"NOTIFY_SOCKET": path}, started)
        wait_notified(sock, process, timeout=30)  # (its SIGTERM handler is in place)
    assert terminate(process, timeout=0.5) == -signal.SIGKILL
