"""Real ``meshnode daemon`` processes for system tests.

Network-test rules for every test that uses this module:
- only loopback: each daemon has its own 127.0.3.N (N from 1) and port 0 on
  its first start, then keeps the port it got, so peers find it again after
  a restart; test peers of our own use 127.0.3.200 and up;
- every daemon is started by :class:`Daemon` and stopped (SIGTERM, then
  SIGKILL) in the fixture's teardown, whatever the test did;
- readiness is the daemon's ``READY=1`` on a ``NOTIFY_SOCKET`` of the test's,
  arrivals on the daemon's ``read --follow`` stream and other state on its
  ``status --follow`` stream, all with a deadline (the waits are those of
  :mod:`meshnode.supervise`, which ``make demo`` uses too);
- the daemons run with the short ``[timing]`` of :data:`FAST`, so a lost
  message or a restart costs a second, not a minute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from meshnode import control
from meshnode.client import Client, connect
from meshnode.config import Timing, load, render
from meshnode.core.identity import parse_key
from meshnode.home import DataDir
from meshnode.paths import CONFIG, STORE
from meshnode.supervise import notify_socket, terminate, wait_notified, wait_on

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterable, Sequence

    from meshnode.core.bulletin import Bulletin
    from meshnode.core.channel import Channel
    from meshnode.core.views import NodeStatus

T = TypeVar("T")

# The console script is ``meshnode = "meshnode.cli:main"`` (pyproject.toml).
CLI: tuple[str, ...] = (sys.executable, "-c", "from meshnode.cli import main; main()")
ROOT = Path(__file__).resolve().parents[2]
SUBNET = "127.0.3"
FAST = Timing(
    heartbeat=0.2,
    sync_interval=2.0,
    overlay_interval=1.0,
    delivery_interval=0.5,
    mail_interval=1.0,
    rpc_timeout=0.5,
)
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would point a daemon or the CLI
    elsewhere (data dir, passphrase, systemd, runtime dir, make), plus ``extra``."""
    dropped = ("MESHNODE_HOME", "MESHNODE_PASSPHRASE", "NOTIFY_SOCKET", "XDG_RUNTIME_DIR")
    env = {k: v for k, v in os.environ.items() if k not in (*dropped, "MAKEFLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def launch(
    args: Sequence[str], log_path: Path, start: int, notify: contextlib.ExitStack
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start a daemon's command with a ``NOTIFY_SOCKET`` of ours (kept in ``notify``),
    its output appended to ``log_path`` under a ``--- start N ---`` line."""
    notify.close()
    sock, path = notify.enter_context(notify_socket())
    with log_path.open("ab") as log:
        log.write(f"--- start {start} ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            args,
            env=clean_env(NOTIFY_SOCKET=path),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return process, sock


def await_ready(
    process: subprocess.Popen[bytes],
    sock: socket.socket,
    notify: contextlib.ExitStack,
    timeout: float,
    explain: Callable[[], str],
) -> None:
    """Until a daemon started by :func:`launch` says ``READY=1``; then its socket goes."""
    try:
        wait_notified(sock, process, timeout=timeout, explain=explain)
    finally:
        notify.close()


def control_frames(data: bytes) -> list[dict[str, Any]]:
    """The control-socket messages in ``data``, the whole of what a daemon sent."""
    frames = []
    while data:
        length = control.frame_length(data[:4])
        frames.append(control.parse_frame(data[4 : 4 + length]))
        data = data[4 + length :]
    return frames


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one ``meshnode`` command to completion; raise with its stderr if it failed."""
    done = subprocess.run(
        [*CLI, *args], env=clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"meshnode {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def wait_for(
    data_dir: Path,
    condition: Callable[[NodeStatus], object],
    *,
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> None:
    """Block on the daemon's ``status --follow`` stream until ``condition`` holds: it is
    checked on the status now and again at each change the daemon announces (its
    sessions, channels, syncs, deliveries, held mail), never on a clock."""
    stream = connect(data_dir, timeout=timeout).watch()
    if not wait_on(stream, lambda status: bool(condition(status)), timeout=timeout):
        detail = f"\n{explain()}" if explain is not None else ""
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")


@dataclasses.dataclass
class Daemon:
    """One node: its data directory, address and (while running) its process."""

    name: str
    data_dir: Path
    host: str
    port: int = 0
    key_text: str = ""
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _notify: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)
    _ready: socket.socket | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "daemon.log"

    @property
    def address(self) -> str:
        assert self.port, f"{self.name} has not started yet"
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> bytes:
        return parse_key(self.key_text)

    @property
    def client(self) -> Client:
        return connect(self.data_dir, timeout=30.0)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def init(self, *, bootstrap: Sequence[str] = (), timing: Timing = FAST) -> None:
        """``meshnode init`` on ``host:0``, then the short timings in meshnode.toml."""
        args = ["--data-dir", str(self.data_dir), "init", "--name", self.name]
        args += ["--listen", f"{self.host}:0", "--json"]
        if bootstrap:
            args += ["--bootstrap", *bootstrap]
        self.key_text = json.loads(cli(*args).stdout)["key"]
        path = self.data_dir / CONFIG
        path.write_text(render(dataclasses.replace(load(path), timing=timing)))

    def spawn(self) -> None:
        """Start ``meshnode daemon`` (on the port of its first start, after that)."""
        assert not self.running, f"{self.name} is already running"
        args = [*CLI, "--data-dir", str(self.data_dir), "daemon"]
        if self.port:
            args += ["--listen", self.address]
        self.process, self._ready = launch(args, self.log_path, self.restarts, self._notify)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the daemon says ``READY=1``; then learn the bound port."""
        assert self.process is not None
        assert self._ready is not None
        await_ready(self.process, self._ready, self._notify, timeout, self.log_tail)
        self._ready = None
        self.port = int(self.client.status().address.rpartition(":")[2])

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait for a clean exit (SIGKILL if it does not come); the exit code."""
        process = self.process
        if process is None:
            return 0
        terminate(process, timeout)
        self.process = None
        self.restarts += 1
        self._notify.close()
        return process.returncode

    def kill(self) -> None:
        """Teardown: no daemon outlives its test, however it ended."""
        self._notify.close()
        if self.process is not None:
            terminate(self.process, 5)
        self.process = None

    def fill(self, channel: Channel, bulletins: Sequence[Bulletin]) -> None:
        """Write straight into the stopped daemon's store, as the node itself would keep
        them: ``channel`` joined, ``bulletins`` held."""
        home = DataDir(self.data_dir)
        with home.open_store(home.load_identity()) as store:
            store.save_channel(channel, now=int(time.time()))
            assert all(r.stored for r in store.add_many(bulletins, now=int(time.time())))

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"({self.name}: no log)"
        return f"--- {self.name} log ---\n" + "\n".join(text.splitlines()[-lines:])

    def held_mail(self, recipient: bytes) -> int:
        """Bulletins this node holds for ``recipient`` while it is offline, read from
        its SQLite file (read-only; the daemon keeps writing)."""
        uri = f"file:{self.data_dir / STORE}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            row = db.execute("SELECT count(*) FROM mail WHERE recipient = ?", (recipient,))
            return int(row.fetchone()[0])


class Mesh:
    """Daemons on 127.0.3.N under one directory; :meth:`close` stops them all."""

    def __init__(self, root: Path, *, first_host: int = 1) -> None:
        self.root = root
        self.daemons: list[Daemon] = []
        self._next_host = first_host

    def add(self, name: str, *, bootstrap: Sequence[str] = (), timing: Timing = FAST) -> Daemon:
        assert self._next_host < 200, "127.0.3.200 and up are for test peers"
        daemon = Daemon(
            name=name,
            data_dir=self.root / f"node-{self._next_host:03d}",
            host=f"{SUBNET}.{self._next_host}",
        )
        self._next_host += 1
        daemon.init(bootstrap=bootstrap, timing=timing)
        self.daemons.append(daemon)
        return daemon

    def start(self, daemons: Iterable[Daemon]) -> None:
        """Start several daemons at once and wait until every one answers."""
        batch = list(daemons)
        for d in batch:
            d.spawn()
        for d in batch:
            d.wait_ready()

    def close(self) -> None:
        for d in self.daemons:
            d.kill()

    def logs(self) -> str:
        return "\n".join(d.log_tail() for d in self.daemons)
