"""Issue 10, item 6 end to end: a bulletin that does not open never breaks reading.

Network-test rules (see daemons.py): one daemon on 127.0.3.120, our own peer
(a stranger carrying a forger's bulletins) on 127.0.3.200; the daemon is stopped in
teardown; waiting is on the daemon's own streams with a deadline
(:func:`follow_until`, :func:`wait_for`), never a fixed sleep.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING

import pytest
import trio

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.net import connect
from meshnode.redact import HIDDEN
from meshnode.supervise import follow_until
from tests.conftest import corrupt_box, make_identity, seeded_rng
from tests.system.daemons import Mesh, cli, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.slow

STRANGER_HOST = "127.0.3.200"
STEP = 45.0
"""Seconds any step may take on a loaded two-core machine (it takes one or two)."""


async def test_unreadable_bulletins_never_break_reading(
    make_mesh: Callable[[int], Mesh],
) -> None:
    target = make_mesh(120).add("target")
    member, forger, stranger = (make_identity(n) for n in ("member", "forger", "stranger"))
    channel = Channel.from_secret("night-shift", hashlib.blake2b(b"night", digest_size=32).digest())
    later = channel
    for _ in range(3):
        later = later.next_epoch(seeded_rng("epochs"))
    now = int(time.time()) - 60
    readable = Bulletin.seal(
        member, channel, b"shift starts 6am", seq=1, prev=None, now=now, rng=os.urandom
    )
    unknown_epoch = Bulletin.seal(
        member, later, b"epoch 3 news", seq=2, prev=readable.id, now=now + 1, rng=os.urandom
    )
    target.fill(channel, [readable, unknown_epoch])
    target.start()

    def direct(seq: int, text: str) -> Bulletin:
        return Bulletin.seal(
            forger,
            [target.key],
            text.encode(),
            seq=seq,
            prev=None if seq == 1 else sent[-1].id,
            now=now + 1 + seq,
            rng=os.urandom,
        )

    sent: list[Bulletin] = []
    sent.append(corrupt_box(forger, direct(1, "a box that does not open")))
    sent.append(direct(2, "a direct bulletin that opens"))
    corrupted, valid = sent

    def carrier_connected() -> bool:
        return any(p.key == stranger.public_key for p in target.client.peers())

    follow = functools.partial(
        follow_until,
        target.data_dir,
        {readable.id, valid.id},
        timeout=STEP,
        what="read --follow to go past the unreadable bulletins",
        explain=target.log_tail,
    )
    async with connect.open_session(
        target.address, identity=stranger, local_host=STRANGER_HOST
    ) as session:
        await session.send(wire.encode(wire.Hello(public=True, proofs=())))
        await trio.to_thread.run_sync(
            functools.partial(
                wait_for,
                target.data_dir,
                lambda _: carrier_connected(),
                timeout=STEP,
                what="the stranger's session",
            )
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, follow)
            deposit = wire.Deposit(recipient=target.key, raws=(corrupted.raw, valid.raw))
            await session.send(wire.encode(deposit))
        await trio.to_thread.run_sync(
            functools.partial(
                wait_for,
                target.data_dir,
                lambda s: s.unreadable == 2,
                timeout=STEP,
                what="status to count both unreadable bulletins",
                explain=target.log_tail,
            )
        )
        # The stranger only carried the forger's bulletin: it is not charged for a box it
        # could not open, so its session stays.
        assert await trio.to_thread.run_sync(carrier_connected)

    home = ("--data-dir", str(target.data_dir))
    shown = [json.loads(line) for line in cli(*home, "read", "--json").stdout.splitlines()]
    assert [r["id"] for r in shown] == [readable.id.hex(), valid.id.hex()]
    assert json.loads(cli(*home, "status", "--json").stdout)["unreadable"] == 2
    assert "unreadable         2" in cli(*home, "status").stdout
    listed = [
        json.loads(line)
        for line in cli(*home, "read", "--json", "--unreadable").stdout.splitlines()
    ]
    assert [(u["id"], u["kind"], u["reason"]) for u in listed] == [
        (unknown_epoch.id.hex(), "channel", "unknown epoch 3"),
        (corrupted.id.hex(), "direct", "direct content does not decrypt: altered"),
    ]
    assert listed[0]["channel"] == "night-shift"
    assert listed[0]["channel_id"] == channel.id.hex()
    assert [u["author"] for u in listed] == [member.public_key.hex(), forger.public_key.hex()]
    assert [u["created_at"] for u in listed] == [now + 1, now + 2]
    assert [u["author_at_fault"] for u in listed] == [False, True]
    # The forger is flagged in the daemon's log, once, and not named at INFO (issue 11).
    log = target.log_path.read_text()
    assert log.count(f"bad content: {HIDDEN} signed") == 1
    assert forger.fingerprint not in log
    text = cli(*home, "read", "--unreadable").stdout
    assert "unknown epoch 3" in text
    assert "direct content does not decrypt: altered" in text
