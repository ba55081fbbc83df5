"""Attack: fill a node's disk with bulletins from keys that cost nothing (issue 11, item 1).

The attacker is a real node on loopback whose sessions carry what a hostile
implementation would send: public bulletins signed by hundreds of throw-away
authors, and deposits of direct mail for groups the victim is no holder for. The
victim runs with a small budget so that the flood outgrows it many times over.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import trio
from kademlia.node import Node as KademliaNode

from meshnode.core import records, wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.wire import PeerId
from meshnode.net.node import Node, NodeConfig
from meshnode.store import Budget
from tests.conftest import make_identity
from tests.integration.test_node import CONFIG, arrived, node, settle

if TYPE_CHECKING:
    from pathlib import Path

PUBLIC = 256 * 1024
"""The victim's public share: a 64th of it per stranger (4 KiB), a 16th per peer."""
FLOOD = 2000
"""Bulletins of 1 KiB the attacker pushes: eight times the whole public share."""
TEXT = b"x" * 1024
RATE = 100
"""Bulletins the attacker pushes per 50 ms: 2 MB/s, within every rate limit."""


def store_bytes(n: Node, tmp_path: Path, name: str) -> int:
    """What the victim's store takes on disk: the database and its log."""
    return sum(p.stat().st_size for p in (tmp_path / name).glob("meshnode.db*"))


async def test_throw_away_authors_fill_only_their_bounds_and_evict_no_known_group(
    tmp_path: Path,
) -> None:
    """The honest group reaches the victim only through the attacker's session, so
    when its post sent after the flood arrives, the victim has taken or refused
    everything the flood carried."""
    budget = Budget(channels=1 << 20, public=PUBLIC, mail=1 << 20)
    quiet = NodeConfig(dht=CONFIG.dht, overlay_interval=3600.0)
    victim_config = NodeConfig(dht=CONFIG.dht, overlay_interval=3600.0, budget=budget)
    with trio.fail_after(60):
        async with (
            node(tmp_path, 1, config=quiet) as attacker,
            node(tmp_path, 2, config=victim_config) as victim,
            node(tmp_path, 3, config=quiet) as honest,
        ):
            victim.add_contact("honest", honest.identity.public_key)
            await attacker.connect(victim.address)
            await honest.connect(attacker.address)
            known = [await honest.post_public(f"honest {n}") for n in range(20)]
            await arrived(victim, [k.id for k in known])
            before = store_bytes(victim, tmp_path, "node2")
            now = int(time.time())
            authors = [make_identity(f"throw-away {n}") for n in range(FLOOD // 4)]
            sent, last = 0, dict.fromkeys((a.public_key for a in authors), None)
            for seq in range(1, 5):
                for author in authors:
                    b = Bulletin.seal(
                        author, None, TEXT, seq=seq, prev=last[author.public_key], now=now,
                        rng=os.urandom,
                    )  # fmt: skip
                    last[author.public_key] = b.id
                    attacker.archive.store.add(b, now=now)  # (so that it may serve them)
                    attacker.gossip.publish(b, trio.current_time())
                    sent += 1
                    if sent % RATE == 0:  # the attacker's pace: what a session carries
                        attacker._peers.flush()
                        await trio.sleep(0.05)
            attacker._peers.flush()
            later = await honest.post_public("after the flood")
            await arrived(victim, [later.id])

            use = {s.name: s for s in victim.status().shares}
            strangers = sum(
                len(row[0])
                for row in victim.archive.store._db.execute(
                    "SELECT raw FROM bulletins WHERE trust = 3"
                )
            )
            grown = store_bytes(victim, tmp_path, "node2") - before
            print(
                f"\nflood {sent} bulletins, {sent * len(TEXT) >> 10} KiB: victim holds "
                f"{strangers >> 10} KiB of strangers' (bound per peer "
                f"{budget.stranger_per_source >> 10} KiB), public share "
                f"{use['public'].used >> 10} of {use['public'].budget >> 10} KiB; "
                f"store grew {grown >> 10} KiB"
            )
            # The attacker is one peer on one /24: it made us hold a 16th of the share.
            assert strangers <= budget.stranger_per_source
            assert use["public"].used <= use["public"].budget
            assert all(victim.archive.store.has(k.id) for k in known)
            assert grown < sent * len(TEXT) // 8
            assert victim.status().peers == 1  # the attacker kept within every rate


async def test_mail_deposited_with_a_node_that_is_no_holder_is_refused_and_charged(
    tmp_path: Path,
) -> None:
    """The victim knows twenty nodes nearer the recipient than itself: it is none of
    the recipient's holders, so a deposit for it is refused and costs the depositor
    until it is dropped; none is kept."""
    recipient = make_identity("somebody far away").public_key
    target = int.from_bytes(records.node_id(recipient))
    with trio.fail_after(30):
        async with node(tmp_path, 1) as attacker, node(tmp_path, 2, attacker) as victim:
            ours = int.from_bytes(victim.dht.node_id) ^ target
            router = victim.dht._protocol.router
            for n in range(1, 21):
                nearer = (target ^ (ours >> (n + 2))).to_bytes(20)  # XOR distance < ours
                router.add_contact(KademliaNode(nearer, "127.0.0.99", 9000 + n))
            assert not victim._delivery.holds_for(recipient)
            await attacker.connect(victim.address)
            key = victim.identity.public_key
            for n in range(40):
                raw = Bulletin.seal(
                    make_identity(f"sender {n}"), [recipient], b"for you", seq=1, prev=None,
                    now=int(time.time()), rng=os.urandom,
                ).raw  # fmt: skip
                deposit = wire.Deposit(recipient=recipient, raws=(raw,))
                if not attacker.gossip.send(PeerId(key), deposit):
                    break
                attacker._peers.flush()
            await settle(lambda: victim.status().peers == 0, victim)
            assert victim.gossip.statistics().drops == 1
            assert victim.status().held_mail == 0
            assert victim.gossip.statistics().offences >= 20
