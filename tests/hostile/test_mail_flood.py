"""Mail held for others stays within its configured bounds however many keys deposit it:
throw-away authors, each in its own session, DEPOSIT direct bulletins for two offline
recipients until the victim refuses them; they fill at most half of each recipient's
share and half of the budget's mail share, the halves kept for senders with standing,
and mail from a contact of the victim is still held (issue 11, "Holding mail";
docs/spec/gossip.md, "Direct delivery").

Network rules: those of tests/hostile/attacker.py; every test under ``trio.fail_after``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from meshnode.core.bulletin import MAX_SIZE
from meshnode.net.node import NodeConfig
from meshnode.store import MAIL_BYTES_PER_SENDER, MAIL_PER_SENDER, Budget
from tests.conftest import make_identity
from tests.hostile.attacker import SUBNET, direct_bulletins, filler, open_wire_peer, throwaway
from tests.hostile.victim import disk_bytes, read_store, wal_allowance
from tests.integration.test_node import CONFIG, node

if TYPE_CHECKING:
    from pathlib import Path

BUDGET = Budget(mail=20 * 1024 * 1024)
"""A mail share larger than one recipient's (16 MiB), so that strangers meet both bounds:
8 MiB for the first recipient, the 2 MiB left of the share's half for the second."""
TEXT = MAX_SIZE - 4096
"""Text of each deposited bulletin: near the largest a bulletin may be (the box and
header take the rest)."""

Usage = dict[tuple[bytes, bytes], tuple[int, int, int]]


def _usage(data_dir: Path) -> Usage:
    """The victim's running mail totals: (recipient, author) -> (bulletins, bytes,
    strangers' bytes); an empty key is the sum over that column."""
    with read_store(data_dir) as db:
        rows = db.execute("SELECT recipient, author, count, bytes, strangers FROM mail_usage")
        return {(bytes(r), bytes(a)): (c, b, s) for r, a, c, b, s in rows}


async def test_throw_away_depositors_fill_half_the_mail_bounds_and_a_contacts_mail_is_held(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node21"
    recipients = [make_identity(f"an offline recipient {n}").public_key for n in (1, 2)]
    contact = make_identity("a contact of the victim")
    size = len(direct_bulletins(contact, recipients[0], [filler(TEXT)])[0].raw)
    share = BUDGET.mail_per_recipient
    # Each author deposits one more than its per-sender bound takes; authors come until
    # one finds nothing kept (at most enough to pass the recipient's half, and two more).
    per_author = min(MAIL_PER_SENDER, MAIL_BYTES_PER_SENDER // size) + 1
    most = math.ceil(share // 2 / (MAIL_BYTES_PER_SENDER - size)) + 2
    kept: list[list[int]] = [[], []]
    authors = 0
    with trio.fail_after(60):
        async with node(tmp_path, 21, config=NodeConfig(dht=CONFIG.dht, budget=BUDGET)) as victim:
            victim.add_contact("contact", contact.public_key)
            disk_before = disk_bytes(data_dir)
            for recipient, counts in zip(recipients, kept, strict=True):
                while len(counts) < most and not (counts and counts[-1] == 0):
                    author = throwaway("mail", authors)
                    address = f"{SUBNET}.{30 + authors}"
                    authors += 1
                    async with open_wire_peer(victim.address, author, address, public=False) as p:
                        mail = direct_bulletins(author, recipient, [filler(TEXT)] * per_author)
                        counts.append(sum(await p.deposit(recipient, mail)))
            flood = _usage(data_dir)
            # After the flood, the contact's mail for each still has the reserved half.
            async with open_wire_peer(victim.address, contact, f"{SUBNET}.29", public=False) as p:
                for recipient in recipients:
                    mail = direct_bulletins(contact, recipient, [b"from a contact"] * 4)
                    assert await p.deposit(recipient, mail) == [True] * len(mail)
            usage = _usage(data_dir)
            held = victim.status().held_mail
            grown = disk_bytes(data_dir) - disk_before
            allowance = wal_allowance(data_dir)
            with read_store(data_dir) as db:
                page = int(db.execute("PRAGMA page_size").fetchone()[0])
    first, second = (flood.get((r, b""), (0, 0, 0))[2] for r in recipients)
    total = usage[(b"", b"")]
    print(
        f"\nmail flood: {authors} throw-away authors, {per_author} deposits of {size} B each "
        f"({authors * per_author * size} B offered); kept per author {kept[0]} for the first "
        f"recipient, {kept[1]} for the second; strangers hold {first} B of the first's "
        f"{share // 2} B half, {second} B for the second, {first + second} B of the mail "
        f"share's {BUDGET.mail // 2} B half; the contact's 8 held; {held} bulletins held "
        f"({total[1]} B); disk +{grown} B"
    )
    for (r, a), (count, nbytes, strangers) in usage.items():
        if r and a:
            assert count <= MAIL_PER_SENDER
            assert nbytes <= MAIL_BYTES_PER_SENDER
        elif r:
            assert nbytes <= share
            assert strangers <= share // 2
    assert total[1] <= BUDGET.mail
    assert total[2] <= BUDGET.mail // 2
    # The flood reached each bound (within one bulletin of it): the first recipient's
    # half, then the mail share's half through the second; the contact's mail came on top.
    assert first > share // 2 - size
    assert first + second > BUDGET.mail // 2 - size
    assert kept[0][-1] == kept[1][-1] == 0
    assert total[1] > total[2] == first + second
    assert held == total[0] == sum(map(sum, kept)) + 8
    # On disk: what is held, a page of slack per bulletin (the end of its overflow
    # chain, its index entries), and what the write-ahead log takes before a checkpoint.
    assert grown <= total[1] + held * page + allowance
