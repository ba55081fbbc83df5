"""``python -m meshnode.demo`` (``make demo``): three groups on one machine.

Theory of operation:
1. Three data directories in a temporary folder, one per group, each made by
   ``meshnode init`` to listen on its own loopback address (port 0: a free port).
2. Three ``meshnode daemon`` processes, each with a ``NOTIFY_SOCKET`` of the
   demo's: each is ready when it sends ``READY=1`` there, as it tells systemd.
3. The first group creates a channel and invites the other two, who join with
   the codes; every group gives the other two a petname (``meshnode contact
   add``) and posts a bulletin.
4. Once every group's ``read --follow`` stream has shown all three bulletins,
   ``meshnode read`` shows what each one sees. Then every daemon gets SIGTERM and
   must exit 0.

Every step runs the real command line, echoed the way an organizer types it;
each group's commands run with ``MESHNODE_HOME`` set to its data directory.
Nothing polls or sleeps: the waits are on the daemons' own events
(:mod:`meshnode.supervise`), each with a deadline. Whatever happens, no daemon
outlives the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from meshnode.client import connect
from meshnode.errors import MeshError
from meshnode.supervise import follow_until, notify_socket, terminate, wait_notified

if TYPE_CHECKING:
    from collections.abc import Sequence

GROUPS: Final = ("Local 12", "Tenants United", "Food Bank")
DEFAULT_HOSTS: Final = ("127.0.0.41", "127.0.0.42", "127.0.0.43")
CHANNEL: Final = "strike-support"
POSTS: Final = (
    "Strike vote Friday 6pm at the union hall",
    "Tenants United will bring 20 people to the picket line",
    "Hot soup at the picket line from noon, all week",
)


@dataclass
class Group:
    """One group of the demo: its name, loopback host, data directory and daemon."""

    name: str
    host: str
    home: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    key: str = ""
    address: str = ""
    logfile: TextIO | None = field(default=None, repr=False)


def _meshnode() -> list[str]:
    """The ``meshnode`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("meshnode")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from meshnode.cli import main; main()"]


def _env(group: Group) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MESHNODE_PASSPHRASE"}
    env["MESHNODE_HOME"] = str(group.home)
    return env


def _say(text: str = "") -> None:
    print(text, flush=True)


def _run(
    group: Group, *args: str, timeout: float, show: bool = True, echo: str | None = None
) -> str:
    """Run ``meshnode ARGS`` for ``group``, echoing the command (or ``echo``); its stdout."""
    if show:
        _say(f"[{group.name}] $ meshnode {echo or shlex.join(args)}")
    done = subprocess.run(
        [*_meshnode(), *args],
        env=_env(group),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise MeshError(
            f"'meshnode {shlex.join(args)}' for {group.name} exited {done.returncode}: "
            f"{done.stderr.strip()}"
        )
    return done.stdout


def _start(group: Group, notify: str) -> subprocess.Popen[bytes]:
    """``meshnode daemon`` for ``group``, told to send ``READY=1`` to ``notify``."""
    group.logfile = group.log.open("w")
    group.process = subprocess.Popen(
        [*_meshnode(), "daemon"],
        env={**_env(group), "NOTIFY_SOCKET": notify},
        stdin=subprocess.DEVNULL,
        stdout=group.logfile,
        stderr=subprocess.STDOUT,
    )
    return group.process


def _tail(group: Group, lines: int = 15) -> str:
    try:
        text = group.log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _stop(group: Group, timeout: float) -> None:
    """SIGTERM, then the daemon must exit 0 (it is killed if it does not stop in time)."""
    assert group.process is not None
    status = terminate(group.process, timeout)
    if status == -signal.SIGKILL:
        raise MeshError(f"the daemon of {group.name} did not stop within {timeout:g} s")
    if status != 0:
        raise MeshError(f"the daemon of {group.name} exited {status}:\n{_tail(group)}")


def _kill_all(groups: Sequence[Group]) -> None:
    for group in groups:
        if group.process is not None and group.process.poll() is None:
            group.process.kill()
            group.process.wait()
        if group.logfile is not None:
            group.logfile.close()


def run_demo(root: Path, hosts: Sequence[str], *, timeout: float = 30.0) -> None:
    """The whole demo in ``root`` (an empty folder); raises MeshError when a step fails."""
    groups = [
        Group(
            name=name,
            host=host,
            home=root / name.lower().replace(" ", "-"),
            log=root / f"{name.lower().replace(' ', '-')}.log",
        )
        for name, host in zip(GROUPS, hosts, strict=True)
    ]
    try:
        _say("== 1. Three groups, each with its own node and data directory")
        for g in groups:
            _run(g, "init", "--name", g.name, "--listen", f"{g.host}:0", timeout=timeout)
            g.key = json.loads(_run(g, "id", "--json", timeout=timeout, show=False))["key"]
        _say()
        _say("== 2. Their daemons (each one's data directory is its MESHNODE_HOME)")
        with contextlib.ExitStack() as sockets:
            started = []
            for g in groups:
                _say(f"[{g.name}] $ meshnode daemon &")
                ready, path = sockets.enter_context(notify_socket())
                started.append((g, ready, _start(g, path)))
            for g, ready, process in started:
                wait_notified(ready, process, timeout=timeout, explain=functools.partial(_tail, g))
                g.address = connect(g.home, timeout=timeout).status().address
                _say(f"    {g.name} listens on {g.address} (data in {g.home})")
        _say()
        first, *others = groups
        _say(f"== 3. {first.name} creates a channel and invites the others")
        _run(first, "channel", "create", CHANNEL, timeout=timeout)
        for g in others:
            code = _run(first, "channel", "invite", CHANNEL, "--expires", "1d", timeout=timeout)
            _say(f"    {code.strip()[:32]}... (handed to {g.name})")
            _run(g, "channel", "join", code.strip(), timeout=timeout, echo="channel join CODE")
        _say()
        _say("== 4. Each group names the others' keys (fingerprints compared in person)")
        for g in groups:
            for other in groups:
                if other is not g:
                    _run(g, "contact", "add", other.name, other.key, timeout=timeout)
        _say()
        _say("== 5. Everyone posts")
        posted = set()
        for g, text in zip(groups, POSTS, strict=True):
            said = _run(g, "post", CHANNEL, text, timeout=timeout)  # "Posted <id>"
            posted.add(bytes.fromhex(said.split()[-1]))
        for g in groups:
            follow_until(
                g.home, posted, CHANNEL, timeout=timeout, what=f"{g.name} to hold every post"
            )
        _say()
        _say("== 6. What each group sees")
        for g in groups:
            _say(f"--- {g.name}")
            for line in _run(g, "read", CHANNEL, timeout=timeout).splitlines():
                _say(f"    {line}")
        _say()
        _say("== 7. Stopping the daemons (SIGTERM)")
        for g in groups:
            _stop(g, timeout)
            _say(f"    {g.name}: stopped cleanly (exit 0)")
    except MeshError:
        for g in groups:
            if g.log.exists():
                print(f"--- log of {g.name}:\n{_tail(g)}", file=sys.stderr)
        raise
    finally:
        _kill_all(groups)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m meshnode.demo [--hosts A,B,C] [--keep]``."""
    parser = argparse.ArgumentParser(
        prog="python -m meshnode.demo",
        description="Three meshnode daemons on loopback: a channel, invites, posts, reads.",
    )
    parser.add_argument(
        "--hosts",
        default=",".join(DEFAULT_HOSTS),
        help="three loopback addresses for the daemons (default: %(default)s)",
    )
    parser.add_argument("--root", help="folder for the data directories (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per step")
    args = parser.parse_args(argv)
    hosts = [h.strip() for h in args.hosts.split(",")]
    if len(hosts) != len(GROUPS) or not all(h.startswith("127.") for h in hosts):
        parser.error(f"--hosts takes {len(GROUPS)} loopback addresses (127.x.y.z)")
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="meshnode-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        run_demo(root, hosts, timeout=args.timeout)
    except MeshError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep or args.root:
            _say(f"Data directories and logs: {root}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(root)
    _say("Done: three groups shared a channel without any server.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
