"""Issue 4 end to end: real ``meshnode daemon`` processes on loopback.

Network-test rules (see daemons.py): daemons on 127.0.3.1-199, our own hostile
peer on 127.0.3.200; every daemon is stopped in teardown; waiting is on the
daemons' own streams with a deadline (:func:`follow_until`, :func:`wait_for`),
never a fixed sleep.

Most tests share one module-wide mesh of twelve daemons (``mesh``); each makes
its own channel, so none depends on another's outcome, and a test that stops a
daemon starts it again. The sync-cost test runs two daemons of its own, whose
stores it fills before they start.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.core.gossip import Offence
from meshnode.errors import PeerDisconnected, UnknownChannel
from meshnode.net import connect, transport
from meshnode.supervise import follow_until
from tests.conftest import make_identity
from tests.inbox import received
from tests.system.conftest import MESH_SIZE
from tests.system.daemons import FAST, Daemon, Mesh, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from meshnode.core.identity import Identity
    from meshnode.core.views import BulletinRecord

pytestmark = pytest.mark.slow

HOSTILE_HOST = "127.0.3.200"
CONVERGE = 45.0
"""Seconds any convergence may take on a loaded two-core machine (it takes one or two)."""


def _read(d: Daemon, channel: str | None = None) -> list[BulletinRecord]:
    return d.client.read(channel)


def _explain(daemons: Sequence[Daemon], ids: set[bytes], channel: str) -> Callable[[], str]:
    def explain() -> str:
        lines = []
        for d in daemons:
            have = {r.id for r in _read(d, channel)} if d.running else set()
            lines.append(f"{d.name}: {len(have & ids)}/{len(ids)}, peers {len(d.client.peers())}")
        return "\n".join(lines) + "\n" + "\n".join(d.log_tail(15) for d in daemons)

    return explain


def _make_channel(members: Sequence[Daemon], name: str, rng: random.Random) -> None:
    """The first member creates ``name``; each next one joins with an invite from a
    random member who is already in."""
    members[0].client.create_channel(name)
    joined = [members[0]]
    for m in members[1:]:
        code = rng.choice(joined).client.invite(name)
        info = m.client.join(code)
        assert info.name == name
        joined.append(m)


# 1. Every member gets every bulletin; non-members read none ----------------------------


def test_twelve_nodes_eight_members_get_all_eighty_in_author_order(mesh: list[Daemon]) -> None:
    assert len(mesh) == MESH_SIZE
    rng = random.Random(1)
    members = rng.sample(mesh, 8)
    outsiders = [d for d in mesh if d not in members]
    _make_channel(members, "strike-support", rng)

    posted: dict[bytes, list[bytes]] = {}
    for n in range(10):
        for m in members:
            record = m.client.post("strike-support", f"{m.name}: update {n}")
            posted.setdefault(record.author, []).append(record.id)
    ids = {i for per_author in posted.values() for i in per_author}
    assert len(ids) == 80

    for m in members:
        follow_until(
            m.data_dir,
            ids,
            "strike-support",
            timeout=CONVERGE,
            what=f"{m.name} to hold all 80",
            explain=_explain(members, ids, "strike-support"),
        )
    for m in members:
        records = _read(m, "strike-support")
        assert {r.id for r in records} == ids
        for author, expected in posted.items():
            mine = [r for r in records if r.author == author]
            assert [r.id for r in mine] == expected
            assert [r.seq for r in mine] == sorted(r.seq for r in mine)
            assert len({r.seq for r in mine}) == 10
    for d in outsiders:
        assert not ids & {r.id for r in _read(d)}
        with pytest.raises(UnknownChannel):
            d.client.read("strike-support")
        assert all(c.name != "strike-support" for c in d.client.channels())


# 2. An offline member catches up without anyone re-posting -------------------------------


def test_stopped_member_catches_up_after_restart(mesh: list[Daemon]) -> None:
    rng = random.Random(2)
    members = rng.sample(mesh, 5)
    _make_channel(members, "night-shift", rng)
    sleeper, awake = members[-1], members[:-1]
    assert sleeper.stop() == 0, sleeper.log_tail()
    try:
        ids = {
            awake[n % len(awake)].client.post("night-shift", f"while you slept {n}").id
            for n in range(50)
        }
        for m in awake:
            follow_until(m.data_dir, ids, "night-shift", timeout=CONVERGE, what=f"{m.name}: all 50")
    finally:
        sleeper.start()
    follow_until(
        sleeper.data_dir,
        ids,
        "night-shift",
        timeout=CONVERGE,
        what="the restarted member to catch up",
        explain=_explain([sleeper, *awake], ids, "night-shift"),
    )
    assert {r.id for r in _read(sleeper, "night-shift")} == ids


# 3. Sync cost follows what is missing, not what is held ----------------------------------

HELD = 10_000
SYNC_BUDGET = 16 * 1024


def test_sync_cost_follows_what_is_missing(make_mesh: Callable[[int], Mesh]) -> None:
    net = make_mesh(100)
    # One reconciliation, on connect: the periodic one would only add to the count.
    quiet = dataclasses.replace(FAST, sync_interval=600.0)
    full, lacking = net.add("full", timing=quiet), net.add("lacking", timing=quiet)
    author = make_identity("Archivist")
    channel = Channel.from_secret("archive", hashlib.blake2b(b"archive", digest_size=32).digest())
    start = int(time.time()) - HELD - 60
    bulletins: list[Bulletin] = []
    for seq in range(1, HELD + 1):
        bulletins.append(
            Bulletin.seal(
                author,
                channel,
                f"record {seq}".encode(),
                seq=seq,
                prev=bulletins[-1].id if bulletins else None,
                now=start + seq,
                rng=os.urandom,
            )
        )
    missing = random.Random(3).choice(bulletins)
    full.fill(channel, bulletins)
    lacking.fill(channel, [b for b in bulletins if b is not missing])
    net.start([full, lacking])
    assert [c.bulletins for c in lacking.client.channels()] == [HELD - 1]
    assert not lacking.client.peers()
    assert not full.client.peers()

    lacking.client.add_peer(full.address)

    follow_until(
        lacking.data_dir,
        {missing.id},
        "archive",
        timeout=CONVERGE,
        what="the missing bulletin",
        explain=net.logs,
    )
    assert [c.bulletins for c in lacking.client.channels()] == [HELD]
    since = lacking.client.read("archive", since=missing.created_at)
    assert since[0].id == missing.id  # the one that was missing, and nothing else new
    opener = min((lacking, full), key=lambda d: d.key)  # (the smaller key opens)
    wait_for(
        opener.data_dir,
        lambda status: status.last_sync,
        timeout=CONVERGE,
        what="the reconciliation to finish (its opener reports it)",
    )
    (seen_by_lacking,) = lacking.client.peers()
    (seen_by_full,) = full.client.peers()
    exchanged = seen_by_lacking.bytes_sent + seen_by_lacking.bytes_received
    # Both ends count the same stream (handshake included), give or take what is in flight.
    assert abs(exchanged - (seen_by_full.bytes_sent + seen_by_full.bytes_received)) < 1024
    overhead = exchanged - len(missing.raw)
    print(f"sync of {HELD} held, 1 missing: {exchanged} bytes, {overhead} besides the bulletin")
    assert overhead < SYNC_BUDGET


# 4. Direct bulletins wait with holders for an offline recipient --------------------------


def test_direct_bulletin_reaches_a_restarted_recipient_after_the_sender_left(
    mesh: list[Daemon],
) -> None:
    rng = random.Random(4)
    sender, recipient = rng.sample(mesh, 2)
    holders = [d for d in mesh if d not in (sender, recipient)]
    assert recipient.stop() == 0
    try:
        try:
            sent = sender.client.send([recipient.key_text], "strike vote moved to 6 pm")
            assert sent.kind == "direct"
            wait_for(  # the sender's status changes as each holder acknowledges
                sender.data_dir,
                lambda _: sum(h.held_mail(recipient.key) for h in holders),
                timeout=CONVERGE,
                what="a holder to keep the bulletin",
                explain=sender.log_tail,
            )
        finally:
            assert sender.stop() == 0
        recipient.start()
        follow_until(
            recipient.data_dir,
            {sent.id},
            timeout=CONVERGE,
            what="the recipient to collect its mail",
            explain=lambda: (
                recipient.log_tail()
                + "\n"
                + "\n".join(f"{h.name}: holds {h.held_mail(recipient.key)}" for h in holders)
            ),
        )
        (got,) = [r for r in _read(recipient) if r.id == sent.id]
        assert got.text == "strike vote moved to 6 pm"
        assert got.author == sender.key
        assert got.kind == "direct"
    finally:
        for d in (recipient, sender):
            if not d.running:
                d.start()


# 5. A hostile peer is dropped; nothing invalid is stored or relayed -----------------------


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def _until(daemon: Daemon, probe: Callable[[], bool], what: str) -> None:
    """:func:`wait_for` on ``daemon``'s changes in a worker thread, so the trio loop
    keeps serving our sessions."""
    wait = functools.partial(
        wait_for, daemon.data_dir, lambda _: probe(), timeout=CONVERGE, what=what
    )
    await trio.to_thread.run_sync(wait)


async def _closed_by_peer(session: transport.Session) -> None:
    """The daemon ends the session: everything it still sends is read, then the close."""
    with trio.fail_after(CONVERGE):
        while True:
            try:
                await received(session)
            except PeerDisconnected:
                return


def _public(author: Identity, seq: int, text: str, prev: bytes | None = None) -> Bulletin:
    return Bulletin.seal(
        author, None, text.encode(), seq=seq, prev=prev, now=int(time.time()), rng=os.urandom
    )


def _broken_signature(b: Bulletin) -> bytes:
    raw = bytearray(b.raw)
    raw[-1] ^= 0x01
    return bytes(raw)


async def test_hostile_peer_is_dropped_and_nothing_invalid_spreads(mesh: list[Daemon]) -> None:
    target = random.Random(5).choice(mesh)
    host, port = target.host, target.port

    def connected(identity: Identity) -> bool:
        return any(p.key == identity.public_key for p in target.client.peers())

    def gone(identity: Identity) -> Callable[[], bool]:
        return lambda: not connected(identity)

    # Malformed frames before any session: the handshake fails and the socket closes.
    with trio.fail_after(CONVERGE):
        stream = await trio.open_tcp_stream(host, port, local_address=HOSTILE_HOST)
        async with stream:
            try:
                await stream.send_all(b"\x00\x20" + os.urandom(32) + os.urandom(256 * 1024))
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, ConnectionResetError):
                pass

    hello = wire.encode(wire.Hello(public=True, proofs=()))
    garbler = make_identity("hostile garbler")
    forger = make_identity("hostile forger")
    replayer = make_identity("hostile replayer")
    honest_text = "a valid bulletin, replayed"
    valid = _public(replayer, 1, honest_text)
    forged = [_public(forger, 1, "forged 1")]
    for seq in (2, 3):
        forged.append(_public(forger, seq, f"forged {seq}", prev=forged[-1].id))

    async def misbehave(who: Identity, name: str, messages: Iterable[bytes]) -> None:
        """As ``who``: a session with the target, HELLO, then ``messages`` until the
        daemon closes the session; then until it has dropped ``who``."""
        async with connect.open_session(
            target.address, identity=who, local_host=HOSTILE_HOST
        ) as session:
            await session.send(hello)
            await _until(target, lambda: connected(who), f"the {name}'s session to open")
            for message in messages:
                if not await _send_quietly(session, message):
                    break
            await _closed_by_peer(session)
        await _until(target, gone(who), f"the daemon to drop the {name}")

    # Malformed messages inside a valid session.
    await misbehave(garbler, "garbler", [b"\x92\x63\xc0", os.urandom(512), b"\xff"])
    # Bulletins with broken signatures.
    broken = [wire.encode(wire.Bulletins(raws=(_broken_signature(b),))) for b in forged]
    await misbehave(forger, "forger", broken)
    # One valid bulletin, then the same one again and again.
    await misbehave(replayer, "replayer", [wire.encode(wire.Bulletins(raws=(valid.raw,)))] * 200)
    # Each was dropped for what it did (the daemon logs the offence).
    log = target.log_path.read_text()
    for offence in (Offence.MALFORMED, Offence.INVALID_BULLETIN, Offence.REPLAY):
        assert f"dropping a peer: {offence.value}" in log, offence

    # The valid bulletin spreads over the public overlay, once; nothing forged anywhere.
    # (every node takes the public overlay: any of the target's peers gets it)
    by_key = {d.key: d for d in mesh}
    relay = next(by_key[p.key] for p in target.client.peers() if p.key in by_key)
    follow = functools.partial(
        follow_until, relay.data_dir, {valid.id}, timeout=CONVERGE, what="the valid bulletin"
    )
    await trio.to_thread.run_sync(follow)
    hostile = {garbler.public_key, forger.public_key, replayer.public_key}
    forged_ids = {b.id for b in forged} | {
        hashlib.blake2b(_broken_signature(b), digest_size=32).digest() for b in forged
    }
    for d in mesh:
        assert d.running, d.log_tail()
        records = await _call(_read, d)
        from_hostile = [r for r in records if r.author in hostile]
        assert [r.id for r in from_hostile] in ([], [valid.id]), d.name
        assert not forged_ids & {r.id for r in records}
    assert valid.id in {r.id for r in await _call(_read, target)}


async def _send_quietly(session: transport.Session, payload: bytes) -> bool:
    """Send unless the daemon has already closed the session; False once it has."""
    try:
        await session.send(payload)
    except PeerDisconnected:
        return False
    return True


# 6. Rekeying drops a member ---------------------------------------------------------------


def test_rekey_removes_a_member(mesh: list[Daemon]) -> None:
    rng = random.Random(6)
    members = rng.sample(mesh, 4)
    _make_channel(members, "organizers", rng)
    rekeyer, removed, stay = members[0], members[-1], members[1:-1]
    before = {m.client.post("organizers", f"{m.name} is here").id for m in members}
    follow_until(
        rekeyer.data_dir,
        before,
        "organizers",
        timeout=CONVERGE,
        what="the rekeyer to see every member post",
    )

    (old,) = [c.epoch for c in rekeyer.client.channels() if c.name == "organizers"]
    info = rekeyer.client.rekey("organizers", remove=[removed.key_text])
    new = info.epoch
    assert new == old + 1
    for m in stay:
        wait_for(  # (the key update changes its channels, so its status)
            m.data_dir,
            lambda _, m=m: (
                [c.epoch for c in m.client.channels() if c.name == "organizers"] == [new]
            ),
            timeout=CONVERGE,
            what=f"{m.name} to get the new key",
            explain=m.log_tail,
        )
    after = {m.client.post("organizers", f"{m.name} after the rekey").id for m in (rekeyer, *stay)}
    for m in (rekeyer, *stay):
        follow_until(m.data_dir, after, "organizers", timeout=CONVERGE, what=f"{m.name}: new posts")
        assert before <= {r.id for r in _read(m, "organizers")}
    # The removed member keeps the history it had and reads nothing newer.
    assert [c.epoch for c in removed.client.channels() if c.name == "organizers"] == [old]
    readable = {r.id for r in _read(removed, "organizers")}
    assert before <= readable
    assert not after & readable
    assert not after & {r.id for r in _read(removed)}
