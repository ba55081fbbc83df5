"""The victims of the hostile suite and what a test measures of them.

A victim is a real node: in process (a :class:`Node` from ``open_node``, through the
integration tests' ``node()``, on 127.0.0.4N) or a ``meshnode daemon`` started with the
launcher of tests/system/daemons.py. Its disk is the size of its store's files (the database
and its write-ahead log); its memory is the bounded structures a test names (in
process) or the daemon's resident set (:func:`rss`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from meshnode.paths import STORE
from tests.integration.test_node import arrived
from tests.system.daemons import FAST, Daemon, Mesh

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from meshnode.config import Timing
    from meshnode.net.node import Node

DEADLINE = 10.0
"""Seconds an honest bulletin may take to reach a victim before the test fails."""


def start_daemon(make_mesh: Callable[[int], Mesh], host: int, timing: Timing = FAST) -> Daemon:
    """A ``meshnode daemon`` victim, running, on 127.0.3.``host`` (the system tests'
    launcher; the ``make_mesh`` fixture stops it after the test)."""
    net = make_mesh(host)
    daemon = net.add("victim", timing=timing)
    net.start([daemon])
    assert daemon.process is not None
    return daemon


def disk_bytes(data_dir: Path) -> int:
    """Bytes of the store on disk: the SQLite file and its write-ahead log."""
    total = 0
    for name in (STORE, f"{STORE}-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += (data_dir / name).stat().st_size
    return total


def read_store(data_dir: Path) -> contextlib.closing[sqlite3.Connection]:
    """The victim's store, opened read-only beside the running node."""
    uri = f"file:{data_dir / STORE}?mode=ro"
    return contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5))


def wal_allowance(data_dir: Path) -> int:
    """The most the write-ahead log holds before SQLite checkpoints it into the
    database (``wal_autocheckpoint`` pages, each with its 24-byte frame header): a
    file that grows by this much may hold nothing new yet."""
    with read_store(data_dir) as db:
        pages = int(db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return pages * (size + 24)


def rss(pid: int) -> int:
    """A process's resident set in bytes (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def wait_arrived(node: Node, ids: Collection[bytes], what: str) -> None:
    """:func:`arrived`, failing with ``what`` did not arrive after :data:`DEADLINE`."""
    with trio.move_on_after(DEADLINE):
        await arrived(node, ids)
        return
    raise AssertionError(f"{what} never reached the node ({DEADLINE:g} s)")
