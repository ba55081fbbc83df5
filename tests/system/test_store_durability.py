"""kill -9 while writing: every bulletin whose ``add`` had returned is still there.

A real child process writes to a real SQLite file and reports each bulletin id
on stdout only after the store acknowledged it; the parent kills it with
SIGKILL mid-stream and reopens the file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from meshnode.store import Store

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
