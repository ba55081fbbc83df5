"""End to end: real ``meshnode daemon`` processes driven by the real command line.

Network-test rules for this module:
1. Only loopback: each daemon listens on its own 127.0.4.N (N unique in this
   module, from :data:`_HOSTS`) with port 0, so the kernel picks a free port.
2. Each daemon is a separate process with its own data directory under the
   test's ``tmp_path``; its stdout and stderr go to a log file there.
3. Readiness is the daemon's ``READY=1`` on a ``NOTIFY_SOCKET`` of the test's,
   and arrivals are awaited on a ``read --follow`` stream, each with a deadline;
   nothing waits on a clock.
4. Every process a test starts is registered with the ``procs`` fixture,
   which kills what is still running in teardown, whatever the test did.
5. Every subprocess call has a timeout.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import grp
import itertools
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest
import trio

from meshnode import Channel, Identity
from meshnode.cli import build_parser
from meshnode.client import MAX_TEXT, connect, connect_async
from meshnode.core.bulletin import MAX_SIZE
from meshnode.core.invite import make_code, parse_code
from meshnode.errors import AmbiguousChannel, UnknownChannel
from meshnode.supervise import follow_until, notify_socket, wait_notified
from tests.system.daemons import clean_env

if TYPE_CHECKING:
    from collections.abc import Iterator

_SCRIPT = Path(sys.executable).with_name("meshnode")
CLI: tuple[str, ...] = (
    (str(_SCRIPT),)
    if _SCRIPT.exists()
    else (sys.executable, "-c", "from meshnode.cli import main; main()")
)
ROOT = Path(__file__).resolve().parents[2]
_HOSTS = itertools.count(1)
READY = 30.0
STEP = 30.0


@dataclasses.dataclass
class Node:
    """A data directory, its loopback host and, while it runs, its daemon."""

    home: Path
    host: str
    key: str = ""
    fingerprint: str = ""
    process: subprocess.Popen[bytes] | None = None
    address: str = ""

    @property
    def log(self) -> Path:
        return self.home.parent / f"{self.home.name}.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Procs:
    """Starts nodes' daemons and CLI commands; kills whatever still runs at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen[bytes]] = []

    def cli(
        self,
        node: Node | Path,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = STEP,
    ) -> subprocess.CompletedProcess[str]:
        home = node.home if isinstance(node, Node) else node
        return subprocess.run(
            [*CLI, "--data-dir", str(home), *args],
            env=env or clean_env(),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, node: Node | Path, *args: str, env: dict[str, str] | None = None) -> str:
        done = self.cli(node, *args, env=env)
        assert done.returncode == 0, f"meshnode {' '.join(args)}: {done.stderr}"
        return done.stdout

    def init(self, name: str, *, env: dict[str, str] | None = None) -> Node:
        node = Node(home=self.root / name.lower().replace(" ", "-"), host=f"127.0.4.{next(_HOSTS)}")
        out = self.ok(node, "init", "--name", name, "--listen", f"{node.host}:0", "--json", env=env)
        view = json.loads(out)
        node.key, node.fingerprint = view["key"], view["fingerprint"]
        return node

    def spawn(self, node: Node, *args: str, env: dict[str, str] | None = None) -> None:
        with node.log.open("ab") as log:
            node.process = subprocess.Popen(
                [*CLI, "--data-dir", str(node.home), "daemon", *args],
                env=env or clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append(node.process)

    def learn_address(self, node: Node) -> None:
        node.address = connect(node.home, timeout=5).status().address

    def start(self, node: Node, *args: str, env: dict[str, str] | None = None) -> None:
        """Spawn the daemon and block until it says READY=1, as it tells systemd."""
        with notify_socket() as (sock, path):
            self.spawn(node, *args, env={**(env or clean_env()), "NOTIFY_SOCKET": path})
            assert node.process is not None
            wait_notified(sock, node.process, timeout=READY, explain=node.log_text)
        self.learn_address(node)

    def stop(self, node: Node, sig: int = signal.SIGTERM) -> int:
        assert node.process is not None
        node.process.send_signal(sig)
        code = node.process.wait(timeout=STEP)
        node.process = None
        return code

    def popen(self, node: Node, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [*CLI, "--data-dir", str(node.home), *args],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Ctrl-C as a terminal sends it, even when the tests themselves run in the
            # background of a shell, which starts them with SIGINT ignored.
            preexec_fn=_interruptible,
        )
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=STEP)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    running = Procs(tmp_path)
    try:
        yield running
    finally:
        running.close()


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_error_line(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """The documented shape of a mistake: one stderr line, no traceback, its exit code."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert done.stderr.startswith("meshnode: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


class Lines:
    """A process's stdout lines, read by a thread so the test can wait with a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._queue.put(line.decode())

    def next(self, timeout: float = STEP) -> str:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout:g} s") from None


# The whole path: two groups, a channel, a post, a read ---------------------------------------


def test_two_daemons_share_a_channel(procs: Procs) -> None:
    a = procs.init("Local 12")
    b = procs.init("Tenants United")
    procs.start(a)
    # B joins the DHT through A, so kademlia has plenty to say; in JSON its INFO lines
    # would be visible by their logger name.
    procs.start(b, "--bootstrap", a.address, "--log-format", "json")

    procs.ok(a, "channel", "create", "strike")
    code = procs.ok(a, "channel", "invite", "strike")
    assert code.count("\n") == 1, "invite prints the code alone"
    assert code.startswith("mni1")
    joined = json.loads(procs.ok(b, "channel", "join", code.strip(), "--json"))
    assert joined["name"] == "strike"

    posted = json.loads(procs.ok(a, "post", "strike", "Strike vote Friday 6pm", "--json"))

    follow_until(
        b.home, {bytes.fromhex(posted["id"])}, timeout=STEP, what="the bulletin to reach b"
    )
    found = [json.loads(line) for line in procs.ok(b, "read", "--json").splitlines()]
    record = next(r for r in found if r["id"] == posted["id"])
    assert record["text"] == "Strike vote Friday 6pm"
    assert record["channel"] == "strike"
    assert record["author"] == posted["author"]
    assert record["author_name"] == a.fingerprint, "an unnamed group shows as its fingerprint"
    status = json.loads(procs.ok(a, "status", "--json"))
    assert status["reachable"] is True, "Tenants United dialled Local 12"
    assert status["channels"] == 1
    assert status["peers"] >= 1
    shares = {s["name"]: s for s in status["shares"]}
    assert set(shares) == {"channels", "public", "mail"}
    assert shares["channels"]["budget"] == 2048 * 1024 * 1024 // 100 * 50  # [store] defaults
    assert 0 < shares["channels"]["used"] < shares["channels"]["budget"]
    shown = procs.ok(a, "status")
    assert "channels share   0.0 of 1074 MB (0 %)" in shown

    # --follow: the history first (so the stream is open), then what is posted later.
    follower = procs.popen(b, "read", "strike", "--follow", "--json")
    assert follower.stdout is not None
    lines = Lines(follower.stdout)
    assert json.loads(lines.next())["id"] == posted["id"]
    later = json.loads(procs.ok(a, "post", "strike", "Bring banners", "--json"))
    streamed = json.loads(lines.next())
    assert (streamed["id"], streamed["text"]) == (later["id"], "Bring banners")
    assert streamed["author"] == posted["author"]
    newest = [json.loads(x) for x in procs.ok(a, "read", "--limit", "1", "--json").splitlines()]
    assert [r["id"] for r in newest] == [later["id"]]  # the newest, not the oldest
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=STEP) == 130
    assert follower.stderr is not None
    assert follower.stderr.read().decode() == "meshnode: interrupted\n"

    # status --follow: the status now, then again at a change (here, a new channel).
    watcher = procs.popen(a, "status", "--follow", "--json")
    assert watcher.stdout is not None
    statuses = Lines(watcher.stdout)
    assert json.loads(statuses.next())["channels"] == 1
    procs.ok(a, "channel", "create", "banners")
    while (changed := json.loads(statuses.next()))["channels"] == 1:
        pass  # (a sync or a session may have changed first)
    assert changed["channels"] == 2
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(timeout=STEP) == 130

    assert procs.stop(a) == 0
    assert procs.stop(b) == 0
    assert a.log_text().rstrip().endswith("stopped")
    entries = [json.loads(line) for line in b.log_text().splitlines()]
    assert entries[-1]["message"] == "stopped"
    assert any("listening on" in e["message"] for e in entries)
    noisy = [e for e in entries if e["logger"].startswith(("kademlia", "rpcudp"))]
    assert all(e["level"] != "info" for e in noisy), noisy


# Mistakes: one line, a documented exit code ----------------------------------------------


def test_every_command_help_runs(procs: Procs, tmp_path: Path) -> None:
    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield prefix
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, (*prefix, name))

    commands = list(walk(build_parser(), ()))
    assert len(commands) > 15
    for command in commands:
        done = procs.cli(tmp_path, *command, "--help")
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.startswith("usage: meshnode"), command
        assert done.stderr == ""


def test_errors_are_one_line_with_their_exit_code(procs: Procs, tmp_path: Path) -> None:
    nobody = tmp_path / "no-daemon"
    procs.ok(nobody, "init", "--name", "Idle")
    one_error_line(procs.cli(nobody, "status"), 3, "no meshnode daemon", "meshnode daemon")
    one_error_line(procs.cli(nobody, "post", "x", "text"), 3, f"--data-dir {nobody}")

    a = procs.init("Local 12")
    procs.start(a)
    procs.ok(a, "channel", "create", "strike")
    one_error_line(procs.cli(a, "post", "nochan", "text"), 1, "no channel 'nochan'")
    one_error_line(procs.cli(a, "read", "nochan"), 1, "no channel 'nochan'")
    one_error_line(procs.cli(a, "channel", "invite", "nochan"), 1, "no channel")
    one_error_line(procs.cli(a, "channel", "join", "mni1garbage"), 1, "not a valid invite")
    one_error_line(procs.cli(a, "channel", "join", "hello"), 1, "not a valid invite")

    assert procs.ok(a, "channel", "invite", "strike", "--expires", "1s").startswith("mni1")
    # An invite that expired an hour ago, made as the CLI makes one, with no waiting.
    past = int(time.time()) - 3600
    expired = make_code(
        Identity.generate("Local 12"),
        channel=Channel.create("old"),
        token_seed=bytes(32),
        addresses=["127.0.0.1:7447"],
        now=past - 60,
        expires_at=past,
    )
    one_error_line(procs.cli(a, "channel", "join", expired), 1, "expired")
    old_format = Channel.create("old").make_invite(Identity.generate("Local 12"), now=past)
    one_error_line(procs.cli(a, "channel", "join", old_format), 1, "0.1.0", "new code")

    assert MAX_TEXT == MAX_SIZE
    for size in (70_000, 2_000_000):
        done = procs.cli(a, "post", "strike", "-", input="x" * size)
        one_error_line(done, 1, "too long for one bulletin", f"{size} bytes")
    one_error_line(procs.cli(a, "post"), 2, "give a channel")
    one_error_line(procs.cli(a, "read", "--limit", "0"), 2, "--limit")
    one_error_line(procs.cli(a, "post", "strike", "x", "--expires", "soon"), 2, "duration")
    one_error_line(procs.cli(a, "peer", "add", "127.0.4.250:1"), 5, "cannot connect")
    assert procs.stop(a) == 0


def test_the_client_names_a_channel_by_what_it_received(procs: Procs) -> None:
    a = procs.init("Local 12")
    procs.start(a)
    client = connect(a.home, timeout=STEP)
    ours = client.create_channel("strike")
    code = client.invite(ours)  # the record travels as its id
    assert parse_code(code, now=int(time.time())).channel_id == ours.id
    posted = [client.post(ref, "by record, id, prefix") for ref in (ours, ours.id)]
    posted.append(trio.run(connect_async(a.home, timeout=STEP).post, ours.id.hex()[:8], "async"))
    for ref in (ours, ours.id, ours.id.hex(), "strike"):
        assert [r.id for r in client.read(ref)] == [p.id for p in posted], ref
    # A join brings a second 'strike', another group's.
    b = procs.init("Tenants")
    procs.start(b)
    other = connect(b.home, timeout=STEP)
    theirs = client.join(other.invite(other.create_channel("strike")))
    with pytest.raises(AmbiguousChannel, match="2 channels are named 'strike'"):
        client.invite("strike")
    for argv in (("channel", "invite", "strike"), ("post", "strike", "x"), ("read", "strike")):
        one_error_line(procs.cli(a, *argv), 1, "named 'strike'", ours.id.hex(), theirs.id.hex())
    assert client.rekey(theirs).epoch == 2  # (a channel starts at its founder's epoch 1)
    client.leave(theirs)
    assert [c.id for c in client.channels()] == [ours.id]
    assert client.invite("strike").startswith("mni1")
    with pytest.raises(UnknownChannel, match=theirs.id.hex()):
        client.post(theirs, "gone")
    assert procs.stop(a) == 0
    assert procs.stop(b) == 0


def test_send_expires_flows_to_the_bulletin(procs: Procs) -> None:
    a = procs.init("Local 12")
    procs.start(a)
    for given, lifetime in (([], 7 * 86400), (["--expires", "1h"], 3600)):
        sent = json.loads(procs.ok(a, "send", a.key, "note to self", *given, "--json"))
        assert sent["kind"] == "direct"
        assert sent["expires_at"] - sent["created_at"] == lifetime
    record = connect(a.home, timeout=STEP).send([a.key], "by the client", expires=60)
    assert record.expires_at is not None
    assert record.expires_at - record.created_at == 60
    assert procs.stop(a) == 0


def test_wrong_passphrase(procs: Procs) -> None:
    a = procs.init("Local 12", env=clean_env(MESHNODE_PASSPHRASE="correct horse"))
    wrong = clean_env(MESHNODE_PASSPHRASE="battery staple")
    one_error_line(procs.cli(a, "id", env=wrong), 1, "wrong passphrase")
    one_error_line(procs.cli(a, "daemon", env=wrong), 1, "wrong passphrase")
    procs.start(a, env=clean_env(MESHNODE_PASSPHRASE="correct horse"))
    assert procs.stop(a) == 0


# Durability, the lock and the control socket ------------------------------------------------


def test_kill_9_right_after_post_keeps_the_bulletin(procs: Procs) -> None:
    a = procs.init("Local 12")
    procs.start(a)
    procs.ok(a, "channel", "create", "strike")
    posted = json.loads(procs.ok(a, "post", "strike", "durable before it returns", "--json"))
    assert a.process is not None
    a.process.kill()
    assert a.process.wait(timeout=STEP) == -signal.SIGKILL
    procs.start(a)  # the stale control socket is no obstacle
    texts = {
        json.loads(line)["id"]: json.loads(line)["text"]
        for line in procs.ok(a, "read", "--json").splitlines()
    }
    assert texts == {posted["id"]: "durable before it returns"}
    assert procs.stop(a) == 0


def test_second_daemon_on_the_same_data_dir_is_refused(procs: Procs) -> None:
    a = procs.init("Local 12")
    procs.start(a)
    done = procs.cli(a, "daemon")
    one_error_line(done, 1, "already running")
    assert connect(a.home, timeout=5).status().name == "Local 12", "the first one still serves"
    assert (a.home / "control.sock").exists()
    assert procs.stop(a) == 0
    assert not (a.home / "control.sock").exists()
    fd = os.open(a.home / "daemon.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(fd)


def test_control_socket_mode_0600_and_0660_with_control_group(procs: Procs) -> None:
    a = procs.init("Local 12")
    procs.start(a)
    info = (a.home / "control.sock").stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert procs.stop(a, signal.SIGINT) == 0, "SIGINT stops cleanly too"
    assert a.log_text().rstrip().endswith("stopped")

    group = grp.getgrgid(os.getgid()).gr_name
    config = a.home / "meshnode.toml"  # top-level keys go before the first [table]
    config.write_text(f'control_group = "{group}"\n' + config.read_text())
    procs.start(a)
    info = (a.home / "control.sock").stat()
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == os.getgid()
    assert procs.stop(a) == 0


def test_long_data_dir_keeps_its_socket_in_the_runtime_dir(procs: Procs) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="mn-rt-"))
    try:
        node = procs.init("Local 12")
        long_home = procs.root / ("d" * 60) / ("e" * 60)
        long_home.parent.mkdir()
        node.home.rename(long_home)
        node.home = long_home
        assert len(os.fsencode(long_home / "control.sock")) > 108
        procs.start(node, env=clean_env(XDG_RUNTIME_DIR=str(runtime)))
        pointer = Path((long_home / "control.path").read_text().strip())
        assert pointer.parent == runtime
        assert stat.S_ISSOCK(pointer.stat().st_mode)
        assert json.loads(procs.ok(node, "status", "--json"))["name"] == "Local 12"
        assert procs.stop(node) == 0
        assert not (long_home / "control.path").exists()
        assert not pointer.exists()
    finally:
        for leftover in runtime.iterdir():
            leftover.unlink()
        runtime.rmdir()


def test_sigterm_and_systemd_notify(procs: Procs) -> None:
    a = procs.init("Local 12")
    notify_path = Path(tempfile.mkdtemp(prefix="mn-notify-")) / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(READY)
        try:
            procs.spawn(a, env=clean_env(NOTIFY_SOCKET=str(notify_path)))
            ready = notify.recv(4096).decode()
            assert "READY=1" in ready.splitlines()
            procs.learn_address(a)
            assert f"STATUS=listening on {a.address.rpartition(':')[0]}" in ready
            assert procs.stop(a) == 0
            assert "STOPPING=1" in notify.recv(4096).decode()
        finally:
            notify_path.unlink()
            notify_path.parent.rmdir()
    log = a.log_text()
    assert "received SIGTERM: stopping" in log
    assert log.rstrip().endswith("stopped")


# docs/api.md's examples, run as written ------------------------------------------------------


def _example(heading: str) -> str:
    page = (ROOT / "docs" / "api.md").read_text()
    section = page.split(f"## {heading}", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_api_examples_run(procs: Procs, tmp_path: Path) -> None:
    host = f"127.0.4.{next(_HOSTS)}"
    embedded = _example("A node in your program").replace("127.0.0.1", host)
    done = subprocess.run(
        [sys.executable, "-c", embedded],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"listening on {host}:" in done.stdout
    assert "Local 12 Strike vote Friday 6pm" in done.stdout

    a = procs.init("Tenants United")
    procs.start(a)
    done = subprocess.run(
        [sys.executable, "-c", _example("A running daemon from Python")],
        env=clean_env(MESHNODE_HOME=str(a.home)),
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "0 peers",
        "Tenants United Strike vote Friday 6pm",
        "Strike vote Friday 6pm",
    ]
    assert procs.stop(a) == 0
