"""Silent connections take handshake slots only: many TCP connections that never say a
word, from several loopback addresses, hold at most ``max_handshakes_per_ip`` each and
``max_handshakes`` in all of a real daemon's listener; an honest node still opens a
session beside them and its bulletins arrive, the sessions already open keep carrying
bulletins, and the daemon's own dials still get sessions (issue 11, "Slots").

Network rules: those of tests/system/daemons.py for the victim (127.0.3.180) and of
tests/hostile/attacker.py for the honest nodes; the silent connections come from
127.0.6.N. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from meshnode.client import connect_async
from meshnode.config import load
from meshnode.core.session import LENGTH_SIZE, MAX_RECORD
from meshnode.net.transport import SessionConfig
from meshnode.paths import CONFIG
from meshnode.supervise import follow_until
from tests.hostile.victim import rss, start_daemon
from tests.integration.test_node import node
from tests.integration.test_transport import _silent_connections
from tests.system.daemons import FAST, Daemon, Mesh

if TYPE_CHECKING:
    from collections.abc import Callable

DEADLINE = 20.0
PER_ADDRESS = 6
"""Silent connections from each attacking address: more than it may hold."""
TIMING = dataclasses.replace(FAST, handshake_timeout=120.0)
"""The silent connections stay in their slots for the whole test (a timeout frees a
slot, and the attacker only dials again: the slots, not the timeout, are under test)."""


def _connections(pid: int) -> int:
    """TCP connections the process holds open (not its listener, not its control or DHT
    sockets): /proc/PID/net/tcp's rows whose inode is one of the process's descriptors."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # (closed meanwhile)
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    rows = [r.split() for r in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]]
    listening = "0A"
    return sum(r[3] != listening and r[9] in inodes for r in rows)


async def _arrived(daemon: Daemon, ids: set[bytes], what: str) -> None:
    wait = functools.partial(
        follow_until, daemon.data_dir, ids, timeout=DEADLINE, what=what, explain=daemon.log_tail
    )
    await trio.to_thread.run_sync(wait)


async def test_silent_connections_hold_only_handshake_slots(
    make_mesh: Callable[[int], Mesh], tmp_path: Path
) -> None:
    victim = start_daemon(make_mesh, 180, TIMING)
    assert victim.process is not None
    pid = victim.process.pid
    limits = load(victim.data_dir / CONFIG).limits
    few = [f"127.0.6.{n}" for n in range(1, 9)]  # together under max_handshakes
    many = [f"127.0.6.{n}" for n in range(9, 33)]  # enough to pass it
    assert len(few) * limits.max_handshakes_per_ip < limits.max_handshakes
    assert len(few + many) * limits.max_handshakes_per_ip > limits.max_handshakes
    refused: list[str] = []
    tcp_before, rss_before = _connections(pid), rss(pid)
    with trio.fail_after(60):
        async with (
            node(tmp_path, 41) as dialled,
            trio.open_nursery() as attack,
        ):
            # Several addresses: each holds its share, the rest are closed at once.
            expected = len(few) * (PER_ADDRESS - limits.max_handshakes_per_ip)
            done = await _silent_connections(
                attack, victim.address, few * PER_ADDRESS, refused, expected
            )
            with trio.move_on_after(DEADLINE):
                await done.wait()
            assert Counter(refused) == dict.fromkeys(few, expected // len(few)), refused
            # An honest node opens a session beside them, and its post arrives.
            async with node(tmp_path, 42) as honest:
                await honest.connect(victim.address)
                first = await honest.post_public("beside the silent connections")
                await _arrived(victim, {first.id}, "the honest post")
                # Many addresses: the handshake slots fill up to their total.
                expected = len(few + many) * PER_ADDRESS - limits.max_handshakes
                done = await _silent_connections(
                    attack, victim.address, many * PER_ADDRESS, refused, expected
                )
                with trio.move_on_after(DEADLINE):
                    await done.wait()
                assert len(refused) == expected, Counter(refused)
                per_address = PER_ADDRESS - limits.max_handshakes_per_ip
                assert all(n >= per_address for n in Counter(refused).values())
                # The session already open still carries bulletins, and the daemon's
                # own dial gets a session though every handshake slot is taken.
                second = await honest.post_public("while every handshake slot is taken")
                await connect_async(victim.data_dir).add_peer(dialled.address)
                third = await dialled.post_public("over the daemon's own dial")
                await _arrived(victim, {second.id, third.id}, "the honest posts")
                tcp_after, rss_after = _connections(pid), rss(pid)
                status = victim.client.status()
            attack.cancel_scope.cancel()
    assert victim.running, victim.log_tail()
    sent = len(few + many) * PER_ADDRESS
    print(
        f"\nsession slots: {sent} silent connections from {len(few + many)} addresses: "
        f"{sent - len(refused)} held (max_handshakes {limits.max_handshakes}, "
        f"{limits.max_handshakes_per_ip} per address), {len(refused)} refused; "
        f"{status.peers} honest sessions; TCP connections {tcp_before} -> {tcp_after}; "
        f"RSS {rss_before} -> {rss_after} B (+{rss_after - rss_before})"
    )
    assert status.peers == 2
    # A seized journal names none of them (docs/operator-guide.md, "[log]").
    journal = victim.log_path.read_text(errors="replace")
    assert "refused a connection from [peer hidden]" in journal
    assert "127.0.6." not in journal
    # The victim holds a connection for each handshake slot and each session, no more;
    # a handshake buffers one record at most, a session its send queue of messages.
    assert tcp_after - tcp_before == limits.max_handshakes + status.peers
    session = SessionConfig()
    queues = session.send_queue_size * session.max_message
    record = LENGTH_SIZE + MAX_RECORD
    assert rss_after - rss_before <= limits.max_handshakes * record + status.peers * queues
