"""Six real ``meshnode daemon`` processes, each in its own network namespace.

Network-test rules for every test that uses this module:
- the network is ``../shared/tools/netns-lab.sh``: hosts 10.231.0.1..6 on a bridge
  with no route out, so traffic stays in 10.231.0.0/24 (the control sockets are unix
  sockets in the data directories, reached from the root namespace);
- one lab per machine: the module fixture brings it ``up`` and always takes it
  ``down``; a test that impairs links (netem, partition) undoes it in ``finally``;
- each daemon runs inside its namespace through ``netns-lab.sh exec``, so its pid is
  the daemon's own (``ip netns exec`` execs it) and ``kill -9`` reaches it;
- readiness is the daemon's ``READY=1`` on a ``NOTIFY_SOCKET`` of the test's; what
  arrived is what the CLI's ``read --follow --json`` prints, other state the
  daemon's ``status --follow`` stream, all with a deadline, never a sleep;
- the daemons run with the short ``[timing]`` of tests/system/daemons.py (FAST).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from meshnode.config import load, render
from meshnode.paths import CONFIG
from meshnode.supervise import terminate
from tests.system.daemons import (
    CLI,
    FAST,
    READY_TIMEOUT,
    await_ready,
    clean_env,
    launch,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterable, Iterator, Sequence

# tests/netlab/lab.py -> the repository is parents[2]; shared/ sits beside it.
LAB = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "netns-lab.sh"
NET = "10.231.0"
PORT = 7447


def lab(*args: str, timeout: float = 60.0) -> str:
    """Run one ``netns-lab.sh`` command; raise with its output if it failed."""
    done = subprocess.run(
        ["bash", str(LAB), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"netns-lab.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def meshnode(data_dir: Path, *args: str, timeout: float = 60.0) -> str:
    """One CLI command against a data directory, from the root namespace; its stdout."""
    done = subprocess.run(
        [*CLI, "--data-dir", str(data_dir), *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"meshnode {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclasses.dataclass
class LabNode:
    """A node of the lab: host 10.231.0.N, its data directory, its daemon process."""

    index: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _notify: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)
    _ready: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"{NET}.{self.index}:{PORT}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "daemon.log"

    def cli(self, *args: str) -> str:
        return meshnode(self.data_dir, *args)

    def init(self) -> None:
        """``meshnode init`` on the lab address, then the short timings."""
        meshnode(
            self.data_dir,
            "init",
            "--name",
            f"n{self.index}",
            "--listen",
            self.address,
            "--bootstrap",
            f"{NET}.1:{PORT}",
        )
        path = self.data_dir / CONFIG
        path.write_text(render(dataclasses.replace(load(path), timing=FAST)))

    def spawn(self) -> None:
        """Start ``meshnode daemon`` inside the node's namespace."""
        assert self.process is None or self.process.poll() is not None
        args = ["bash", str(LAB), "exec", str(self.index), *CLI]
        args += ["--data-dir", str(self.data_dir), "daemon"]
        self.process, self._ready = launch(args, self.log_path, self.starts, self._notify)
        self.starts += 1

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.process is not None
        assert self._ready is not None
        await_ready(self.process, self._ready, self._notify, timeout, self.log_tail)
        self._ready = None
        # netns-lab.sh and ip netns exec exec the daemon: its pid is the one we signal.
        cmdline = Path(f"/proc/{self.process.pid}/cmdline").read_bytes()
        assert b"meshnode.cli" in cmdline, cmdline

    def kill9(self) -> None:
        """SIGKILL the daemon (no chance to flush or close anything) and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it does not exit."""
        self._notify.close()
        if self.process is not None:
            terminate(self.process, 10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(n{self.index}: no log)"
        return f"--- n{self.index} log ---\n" + "\n".join(text.splitlines()[-lines:])


def start_all(nodes: Iterable[LabNode]) -> None:
    batch = list(nodes)
    for node in batch:
        node.spawn()
    for node in batch:
        node.wait_ready()


class Arrivals:
    """What each node's ``meshnode read --follow --json CHANNEL`` printed, as it printed
    it: one follower process per node, a thread per follower feeding one condition."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.seen: dict[int, dict[str, float]] = {}
        self._cond = threading.Condition()
        self._procs: dict[int, tuple[subprocess.Popen[str], threading.Thread]] = {}

    def follow(self, node: LabNode) -> None:
        """(Re)start the follower of ``node``; it first replays what the node holds."""
        old = self._procs.pop(node.index, None)
        if old is not None:
            _end(*old)
        proc = subprocess.Popen(
            [*CLI, "--data-dir", str(node.data_dir), "read", "--follow", "--json", self.channel],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        pump = threading.Thread(target=self._pump, args=(node.index, proc), daemon=True)
        self._procs[node.index] = (proc, pump)
        with self._cond:
            self.seen.setdefault(node.index, {})
        pump.start()

    def _pump(self, index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            record = json.loads(line)
            with self._cond:
                self.seen[index].setdefault(record["id"], time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def ids(self, node: int) -> set[str]:
        """The ids ``node``'s follower printed so far."""
        with self._cond:
            return set(self.seen.get(node, {}))

    def wait(self, nodes: Sequence[int], ids: set[str], *, timeout: float, what: str) -> float:
        """Block until every node in ``nodes`` printed every id; the time of the last
        of those arrivals (monotonic). Fails after ``timeout`` s, or when a follower
        exits, naming what is missing where."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                gaps = {n: ids - self.seen.get(n, {}).keys() for n in nodes}
                if not any(gaps.values()):
                    return max(self.seen[n][i] for n in nodes for i in ids)
                dead = [n for n in nodes if self._procs[n][0].poll() is not None]
                remaining = deadline - time.monotonic()
                if dead or remaining <= 0:
                    lacking = {n: len(g) for n, g in gaps.items() if g}
                    why = f"the follower of {dead} exited" if dead else f"{timeout:g} s passed"
                    raise AssertionError(f"{what}: {why}; ids missing per node: {lacking}")
                self._cond.wait(remaining)

    def close(self) -> None:
        for proc, pump in self._procs.values():
            _end(proc, pump)
        self._procs.clear()


def _end(proc: subprocess.Popen[str], pump: threading.Thread) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    pump.join(timeout=5)  # it reads to EOF now that the process is gone
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def following(channel: str, nodes: Iterable[LabNode]) -> Iterator[Arrivals]:
    arrivals = Arrivals(channel)
    try:
        for node in nodes:
            arrivals.follow(node)
        yield arrivals
    finally:
        arrivals.close()
