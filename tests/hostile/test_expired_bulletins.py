"""Bulletins created in 1970 and long expired, pushed over a real session, go nowhere: the
victim stores none, relays none to a third node and serves none when asked, while an
honest post behind them passes (issue 11, "Expired bulletins"; docs/spec/gossip.md,
"Expiry").

Network rules: those of tests/hostile/attacker.py; every test under ``trio.fail_after``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from meshnode.core import wire
from meshnode.core.bulletin import MAX_SIZE
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId
from tests.hostile.attacker import SUBNET, filler, open_wire_peer, public_bulletin, throwaway
from tests.hostile.victim import disk_bytes, wait_arrived, wal_allowance
from tests.integration.test_node import node

if TYPE_CHECKING:
    from pathlib import Path

TEXT = MAX_SIZE - 1024
"""Text of each expired bulletin: as large as a bulletin goes, with room for its header."""


async def test_bulletins_from_1970_are_neither_stored_relayed_nor_served(tmp_path: Path) -> None:
    data_dir = tmp_path / "node11"
    with trio.fail_after(30):
        async with (
            node(tmp_path, 11) as victim,
            node(tmp_path, 12, victim) as honest,
            open_wire_peer(victim.address, throwaway("witness", 0), f"{SUBNET}.14") as witness,
            open_wire_peer(victim.address, throwaway("1970", 0), f"{SUBNET}.13") as attacker,
        ):
            # Twice what the write-ahead log holds before a checkpoint: stored, it could
            # not hide in the log's slack.
            allowance = wal_allowance(data_dir)
            count = math.ceil(2 * allowance / TEXT)
            old = [
                public_bulletin(
                    throwaway("1970 author", n), filler(TEXT), created_at=100, expires_at=200
                )
                for n in range(count)
            ]
            disk_before = disk_bytes(data_dir)
            for b in old:
                await attacker.send(wire.Bulletins(raws=(b.raw,)))
            await attacker.barrier()
            posted = await honest.post_public("fresh, behind the old ones")
            await wait_arrived(victim, [posted.id], "the fresh post")
            # The victim relays in the order it decided: what it would have passed on
            # of the old ones reaches the witness (pushed, or announced) before the fresh one.
            await witness.wait_until(lambda: posted.id in {*witness.relayed, *witness.announced})
            asked = tuple(BulletinId(b.id) for b in old[: wire.MAX_WANT])
            await witness.send(wire.Want(topic=PUBLIC_TOPIC, ids=asked))
            await witness.barrier()
            old_ids = {b.id for b in old}
            relayed = len(old_ids & set(witness.relayed))
            announced = len(old_ids & witness.announced)
            stored = sum(victim.archive.has(i) for i in old_ids)
            assert (relayed, announced, stored) == (0, 0, 0)
            assert not any(honest.archive.has(i) for i in old_ids)
            assert victim.gossip.statistics().received >= count
            assert not victim.gossip._intake.pending  # every verdict given: nothing waits in memory
            grown = disk_bytes(data_dir) - disk_before
            pushed = sum(len(b.raw) for b in old)
            fresh = len(victim.archive.store.get(posted.id).raw)
            print(
                f"\nexpired: {count} bulletins from 1970 pushed ({pushed} B), 0 stored, "
                f"0 relayed, 0 served of {len(asked)} asked; the fresh post arrived; "
                f"disk +{grown} B"
            )
            assert grown <= fresh + allowance < pushed
