"""``make demo`` and ``make run`` as a newcomer runs them, with bounded time.

Network-test rules for this module: only loopback (127.0.4.101 and up, port 0);
every process started here is killed in teardown; every wait has a deadline.
"""

from __future__ import annotations

import ast
import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from meshnode import demo
from meshnode.demo import GROUPS, POSTS
from tests.system.daemons import clean_env

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
DEMO_HOSTS = ("127.0.4.101", "127.0.4.102", "127.0.4.103")
RUN_HOST = "127.0.4.104"
DEADLINE = 120.0
MAKE = ("make", "-s", "-C", str(ROOT))


def _sections(out: str) -> dict[str, str]:
    """What the demo printed under each group's ``--- NAME`` heading."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^--- (.+)\n((?:    .*\n|\[.*\n)*)", out, re.MULTILINE):
        found[match.group(1)] = match.group(2)
    return found


def test_make_demo(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshnode.demo",
            "--hosts",
            ",".join(DEMO_HOSTS),
            "--root",
            str(root),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = _sections(done.stdout)
    assert sorted(seen) == sorted(GROUPS)
    for group, shown in seen.items():
        for name, text in zip(GROUPS, POSTS, strict=True):
            assert f"{name}: {text}" in shown, f"{group} does not see {name}'s bulletin"
    assert done.stdout.count("stopped cleanly (exit 0)") == len(GROUPS)
    for home in (p for p in root.iterdir() if p.is_dir()):
        fd = os.open(home / "daemon.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no daemon left holding it
        finally:
            os.close(fd)


def test_the_demo_waits_on_events_not_on_a_clock() -> None:
    """READY=1 and read --follow (meshnode.supervise), never a poll: no time, no sleep."""
    source = Path(demo.__file__).read_text()
    imported = {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "time" not in imported
    assert {"notify_socket", "wait_notified", "follow_until"} <= imported


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """``make run`` in its own process group, as a terminal would run it."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "meshnode").exists(), "run the tests with the virtualenv's python"
    process = subprocess.Popen(
        # -o: the virtualenv is the one running these tests, so make need not install.
        [*MAKE, "-o", ".venv/.installed", f"BIN={bin_dir}", "run", f"LISTEN={RUN_HOST}:0"],
        env=clean_env(MESHNODE_HOME=str(tmp_path / "home")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def test_make_run_initialises_then_runs_the_daemon(
    make_run: subprocess.Popen[str], tmp_path: Path
) -> None:
    lines: list[str] = []
    listening = threading.Event()
    finished = threading.Event()

    def pump() -> None:
        assert make_run.stdout is not None
        for line in make_run.stdout:
            lines.append(line)
            if f"listening on {RUN_HOST}:" in line:
                listening.set()
        finished.set()

    threading.Thread(target=pump, daemon=True).start()
    assert listening.wait(DEADLINE), "".join(lines)
    out = "".join(lines)
    assert "fingerprint" in out  # the identity, from 'meshnode id'
    assert "meshnode post NAME" in out  # how to post
    assert (tmp_path / "home" / "identity.key").exists()
    os.killpg(make_run.pid, signal.SIGINT)  # Ctrl-C
    assert finished.wait(30), "".join(lines)
    assert "stopped" in lines[-1] or any(line.rstrip().endswith("stopped") for line in lines)
