"""Fetching is not starved: a peer on the public topic that announces thousands of ids it
never sends holds at most its share of the victim's want table, an honest peer's
announcements are still fetched meanwhile, and the flooder's broken promises cost it
its session (issue 11, "Fetching starved"). A few throw-away keys together still fill
the public topic's share: that test is marked as failing until the want table holds.

Network rules: those of tests/hostile/attacker.py; every test under ``trio.fail_after``.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from meshnode.core.gossip import GossipConfig
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId, PeerId
from meshnode.net.node import NodeConfig
from tests.conftest import make_identity
from tests.hostile.attacker import (
    SUBNET,
    announcements,
    open_wire_peer,
    public_bulletin,
    throwaway,
)
from tests.hostile.victim import disk_bytes, wait_arrived, wal_allowance
from tests.integration.test_node import CONFIG, node

if TYPE_CHECKING:
    from pathlib import Path

VICTIM = NodeConfig(dht=CONFIG.dht, gossip=GossipConfig(heartbeat=0.2, want_timeout=2.0))
"""The default want bounds; a short heartbeat and want timeout, so broken promises
come due within the test."""
ANNOUNCER = NodeConfig(
    dht=CONFIG.dht, gossip=GossipConfig(d=0, d_low=0, d_high=0, flood_publish=False, heartbeat=0.2)
)
"""An honest node with no mesh: it never pushes, it announces, so whatever reaches
the victim from it went through the victim's want table."""
DEADLINE = 10.0


async def test_a_flood_of_announcements_holds_only_its_share_and_honest_ids_are_fetched(
    tmp_path: Path,
) -> None:
    bounds = VICTIM.gossip
    flood = [os.urandom(32) for _ in range(bounds.max_wants)]  # the whole table, if it could
    flooder = throwaway("announcer", 0)
    data_dir = tmp_path / "node1"
    with trio.fail_after(30):
        async with (
            node(tmp_path, 1, config=VICTIM) as victim,
            node(tmp_path, 2, victim, config=ANNOUNCER) as honest,
        ):
            gossip = victim.gossip
            disk_before = disk_bytes(data_dir)
            async with open_wire_peer(victim.address, flooder, f"{SUBNET}.3") as attacker:
                await attacker.send(*announcements(flood))
                await attacker.barrier()
                held = gossip._wants.owned_by(PeerId(flooder.public_key))
                refused = gossip.statistics().want_overflows
                assert held == bounds.max_wants_per_peer
                assert refused == len(flood) - held
                # Meanwhile the honest node's posts reach the victim, by announcement.
                posted = [await honest.post_public(f"honest {n}") for n in range(3)]
                await wait_arrived(victim, [p.id for p in posted], "the honest posts")
                during = attacker.closed is None
                assert honest.gossip.statistics().pushed == 0
                assert len(gossip._wants) <= bounds.max_wants
                assert gossip._wants.held_in(PUBLIC_TOPIC) <= bounds.max_wants_per_topic
                # What it was asked for and never sent costs it, until it is dropped.
                with trio.move_on_after(DEADLINE):
                    await attacker.wait_closed()
                assert attacker.closed is not None, "the flooder was never dropped"
                asked = len(set(attacker.wanted))
            assert gossip._wants.owned_by(PeerId(flooder.public_key)) == 0
            assert [p.key for p in victim.peers()] == [honest.identity.public_key]
            assert gossip.score(PeerId(honest.identity.public_key)) >= 0
            assert gossip.statistics().drops == 1
            grown = disk_bytes(data_dir) - disk_before
            stored = sum(len(victim.archive.store.get(p.id).raw) for p in posted)
            allowance = wal_allowance(data_dir)
    print(
        f"\nwant flood: {len(flood)} ids announced; {held} wants held "
        f"(max_wants_per_peer {bounds.max_wants_per_peer}), {refused} refused; "
        f"3 honest ids fetched {'during' if during else 'after'} the flood; the flooder "
        f"was asked for {asked} and dropped; disk +{grown} B ({stored} B of honest posts)"
    )
    # Nothing announced is kept on disk: the store grows by the honest posts, and by
    # what the write-ahead log takes before a checkpoint.
    assert grown <= stored + allowance


async def test_announcements_of_a_few_throw_away_keys_do_not_refuse_an_honest_one(
    tmp_path: Path,
) -> None:
    """Four throw-away keys (from one address: it may hold 8 sessions) fill the public
    topic's want share between them; then an honest peer announces one id: it takes
    the place of one of the hungriest owner's wants not yet asked."""
    bounds = VICTIM.gossip
    sybils = bounds.max_wants_per_topic // bounds.max_wants_per_peer
    announcer = make_identity("an honest announcer")
    fresh = public_bulletin(announcer, b"announced once")
    with trio.fail_after(30):
        async with node(tmp_path, 4, config=VICTIM) as victim, AsyncExitStack() as stack:
            for n in range(sybils):
                flooder = throwaway("sybil", n)
                attacker = await stack.enter_async_context(
                    open_wire_peer(victim.address, flooder, f"{SUBNET}.50")
                )
                ids = [os.urandom(32) for _ in range(bounds.max_wants_per_peer)]
                await attacker.send(*announcements(ids))
                await attacker.barrier()
            full = victim.gossip._wants.held_in(PUBLIC_TOPIC)
            honest = await stack.enter_async_context(
                open_wire_peer(victim.address, announcer, f"{SUBNET}.5")
            )
            honest.serving[BulletinId(fresh.id)] = fresh.raw
            await honest.send(*announcements([fresh.id]))
            await honest.barrier()  # a WANT for an accepted announcement comes before the PONG
            wanted = fresh.id in honest.wanted
    print(f"\nwant flood, {sybils} keys: {full} public wants held; honest id wanted: {wanted}")
    assert full == bounds.max_wants_per_topic
    assert wanted
