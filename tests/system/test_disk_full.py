"""A daemon whose disk fills up: it keeps running, refuses new data, says so, loses
nothing it acknowledged, and takes new data again once there is room.

The store lives on a small tmpfs that the test mounts (so it needs root; CI runs as
root) and fills with a filler file; deleting the filler frees the space. The data
directory itself stays on the ordinary disk, its ``meshnode.db`` a symlink into the
tmpfs (SQLite keeps the log beside the real file), so the daemon's log goes on
being written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from meshnode.paths import STORE
from tests.system.daemons import CLI, Daemon, Mesh, clean_env, cli, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root"),
]

DISK = "4m"
TEXT = "x" * 30_000
"""About half the largest bulletin: a few fill the room the filler leaves."""
MAX_POSTS = 200


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def post(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--data-dir", str(daemon.data_dir), "post", "--public", TEXT, "--json"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no room left."""
    block = b"\0" * 65536
    with path.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(block)


def move_store(daemon: Daemon, disk: Path) -> None:
    """Put the stopped daemon's store on ``disk``, behind a symlink."""
    for suffix in ("", "-wal", "-shm"):
        path = daemon.data_dir / (STORE + suffix)
        if path.exists():
            shutil.move(path, disk / path.name)
    (daemon.data_dir / STORE).symlink_to(disk / STORE)


def test_a_full_disk_refuses_new_data_and_recovers(tmp_path: Path, disk: Path) -> None:
    net = Mesh(tmp_path / "mesh", first_host=190)
    try:
        node = net.add("full-disk")
        move_store(node, disk)
        node.start()
        assert node.client.status().storage == "ok"
        acknowledged = []
        for _ in range(3):
            done = post(node)
            assert done.returncode == 0, done.stderr
            acknowledged.append(json.loads(done.stdout)["id"])
        filler = disk / "filler"
        fill(filler)

        for _ in range(MAX_POSTS):  # until the log has no room left to grow into
            done = post(node)
            if done.returncode != 0:
                break
            acknowledged.append(json.loads(done.stdout)["id"])
        assert done.returncode == 1, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("meshnode: error: the disk holding the store is full")
        assert node.running
        wait_for(node.data_dir, lambda s: s.storage == "full", timeout=30, what="storage full")
        shown = cli("--data-dir", str(node.data_dir), "status").stdout
        assert "storage            full: the disk of the data directory has no room" in shown
        shown = cli("--data-dir", str(node.data_dir), "status", "--json").stdout
        assert json.loads(shown)["storage"] == "full"
        # It goes on serving what it holds.
        held = {r.id.hex() for r in node.client.read()}
        assert set(acknowledged) <= held

        filler.unlink()
        again = post(node)
        assert again.returncode == 0, again.stderr
        acknowledged.append(json.loads(again.stdout)["id"])
        wait_for(node.data_dir, lambda s: s.storage == "ok", timeout=30, what="storage ok")

        assert node.stop() == 0
        node.start()
        held = {r.id.hex() for r in node.client.read()}
        assert set(acknowledged) <= held
    finally:
        net.close()
        print(net.logs())
