"""kill -9 while writing: every bulletin whose ``add`` had returned is still there.

A real child process writes to a real SQLite file and reports each bulletin id
on stdout only after the store acknowledged it; the parent kills it with
SIGKILL mid-stream and reopens the file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meshnode.store import Store
from meshnode.supervise import notify_socket, wait_notified
from tests.system.daemons import CLI, clean_env, cli

WRITER = textwrap.dedent(
    """
    import hashlib, os, sys
    from meshnode.core.bulletin import Bulletin
    from meshnode.core.channel import Channel
    from meshnode.core.identity import Identity
    from meshnode.store import Store

    author = Identity.from_seed(bytes(32), "Local 12")
    channel = Channel.from_secret("strike-support", bytes(range(32)))
    store = Store.open(sys.argv[1], seal_key=bytes(32))
    prev = None
    for seq in range(1, 100_000):
        b = Bulletin.seal(author, channel, b"x" * 1024, seq=seq, prev=prev, now=1_800_000_000,
                          rng=os.urandom)
        store.add(b, now=1_800_000_000)
        prev = b.id
        sys.stdout.write(b.id.hex() + "\\n")
        sys.stdout.flush()
    """
)

ACKS_BEFORE_KILL = 200


def test_acknowledged_bulletins_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "meshnode.db"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert child.stdout is not None
    acked = []
    try:
        for line in child.stdout:
            acked.append(bytes.fromhex(line.strip()))
            if len(acked) >= ACKS_BEFORE_KILL:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acked) == ACKS_BEFORE_KILL
    with Store.open(path, seal_key=bytes(32)) as store:
        missing = [i.hex() for i in acked if not store.has(i)]
        assert missing == []
        assert store.count() >= len(acked)


# -- the fsync behind an acknowledged post, and the pragmas behind each kind of write --------

STRACE = shutil.which("strace")


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (.ci/run installs it)")
def test_post_returns_only_after_its_commit_is_synced(tmp_path: Path) -> None:
    """kill -9 cannot show a missing fsync (the page cache survives it), so watch the
    syscalls: between the daemon's answer to the command before and its answer to the
    post, it syncs the store's write-ahead log."""
    home = tmp_path / "local12"
    cli("--data-dir", str(home), "init", "--name", "Local 12", "--listen", "127.0.3.250:0")
    trace = tmp_path / "strace.log"
    assert STRACE is not None
    with notify_socket() as (ready, path):
        process = subprocess.Popen(
            [STRACE, "-f", "-qq", "-yy", "-s", "0", "-o", str(trace),
             "-e", "trace=fsync,fdatasync,write,sendto,sendmsg",
             *CLI, "--data-dir", str(home), "daemon"],
            env=clean_env(NOTIFY_SOCKET=path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_notified(ready, process, timeout=60, explain=lambda: trace.read_text()[-2000:])
            cli("--data-dir", str(home), "channel", "create", "strike")
            cli("--data-dir", str(home), "post", "strike", "Strike vote Friday")
        finally:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            for pid in children.split():
                os.kill(int(pid), signal.SIGTERM)
            process.wait(timeout=60)
    lines = trace.read_text().splitlines()
    answers = [i for i, line in enumerate(lines) if "control.sock" in line and "(" in line]
    assert len(answers) >= 2, "the daemon answered both commands on its control socket"
    last_two = [i for i in answers if "write" in lines[i] or "send" in lines[i]][-2:]
    between = lines[last_two[0] : last_two[1]]
    assert any(
        ("fdatasync(" in line or "fsync(" in line) and "meshnode.db-wal" in line
        for line in between
    ), "the post was answered before its commit was synced"


def test_each_kind_of_write_commits_with_its_pragmas(tmp_path: Path) -> None:
    """WAL always; synchronous=FULL for everything acknowledged, NORMAL only for
    bulletins relayed by peers (docs/spec/store.md)."""
    from meshnode.core.bulletin import Bulletin
    from meshnode.core.channel import Channel
    from meshnode.core.identity import Identity

    author = Identity.from_seed(bytes(32), "Local 12")
    channel = Channel.from_secret("strike-support", bytes(range(32)))
    with Store.open(tmp_path / "s.db", seal_key=bytes(32)) as store:
        db = store._db

        def pragmas() -> tuple[str, int]:
            return db.execute("PRAGMA journal_mode").fetchone()[0], db.execute(
                "PRAGMA synchronous"
            ).fetchone()[0]

        def sealed(seq: int) -> Bulletin:
            return Bulletin.seal(author, channel, b"x", seq=seq, prev=None if seq == 1 else
                                 bytes(32), now=1_800_000_000, rng=os.urandom)  # fmt: skip

        assert pragmas() == ("wal", 2)
        store.add_unsynced([sealed(1)], now=1_800_000_000)
        assert pragmas() == ("wal", 1)  # relayed: a power loss may take it back
        store.add(sealed(2), now=1_800_000_000)
        assert pragmas() == ("wal", 2)  # ours, acknowledged: FULL again
        store.set_meta("x", b"y")
        assert pragmas() == ("wal", 2)
