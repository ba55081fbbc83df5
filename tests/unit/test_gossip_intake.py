"""Intake on its own: the seen-cache's bounds, verdicts and their timeout, each step's answer.

The machine's tests (test_gossip.py) drive the same steps through sessions;
these pin the room's own contract: what ``check`` returns and counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.core.gossip import BulletinReceived, ForkDetected, GossipConfig, Offence
from meshnode.core.gossip._events import Counters, Event
from meshnode.core.gossip._intake import Intake, Pending, PendingVerdicts, SeenCache, SeenState
from meshnode.core.identity import Identity
from meshnode.core.sync import MemoryHoldings
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId, PeerId, Topic

if TYPE_CHECKING:
    from collections.abc import Collection

A, B = PeerId(b"\x01" * 32), PeerId(b"\x02" * 32)
AUTHOR = Identity.from_seed(b"\x05" * 32, "author")
READER = Identity.from_seed(b"\x06" * 32, "reader")
CHANNEL = Channel.from_secret("c", b"\x33" * 32)


def seal(audience: Channel | list[bytes] | None, text: bytes) -> Bulletin:
    return Bulletin.seal(AUTHOR, audience, text, seq=1, prev=None, now=1_700_000_000, rng=bytes)


def public(n: int) -> Bulletin:
    return seal(None, b"#%d" % n)


def bid(n: int) -> BulletinId:
    return BulletinId(bytes([n]) * 32)


def test_the_seen_cache_forgets_the_oldest_but_never_what_is_kept() -> None:
    seen = SeenCache(size=3, ttl=10.0)
    keep = {bid(1)}
    for n in range(1, 6):
        seen.remember(bid(n), SeenState.PENDING, (A,), float(n), keep=keep)
    assert len(seen) == 3
    assert [n for n in range(1, 6) if bid(n) in seen] == [1, 4, 5]
    seen.expire(13.9)
    assert len(seen) == 3
    seen.expire(14.0)  # bid(4) was remembered at 4.0, and bid(1) kept (renewed) then
    assert [n for n in range(1, 6) if bid(n) in seen] == [5]
    seen.expire(15.0)
    assert len(seen) == 0
    assert seen.get(bid(5)) is None


def test_overdue_verdicts_come_out_once_and_only_if_still_waiting() -> None:
    pending = PendingVerdicts()
    b = public(1)
    pending.add(bid(1), Pending(b, PUBLIC_TOPIC, 0.0, True))
    pending.add(bid(2), Pending(b, PUBLIC_TOPIC, 1.0, True))
    assert pending.pop(bid(2)) is not None
    pending.add(bid(2), Pending(b, PUBLIC_TOPIC, 5.0, True))  # pending again, later
    assert pending.overdue(29.9, 30.0) == []
    assert pending.overdue(31.0, 30.0) == [bid(1)]  # bid(2)'s first entry is stale
    assert pending.overdue(34.9, 30.0) == []
    assert pending.overdue(35.0, 30.0) == [bid(2)]
    assert pending.overdue(40.0, 30.0) == []  # reported once
    assert len(pending) == 2  # overdue only reports: the verdict (a rejection) pops


def intake(max_pending: int = 4) -> tuple[Intake, MemoryHoldings, Counters]:
    holdings, counters = MemoryHoldings(), Counters()
    config = GossipConfig(max_pending=max_pending, max_seen=max_pending + 4)
    return Intake(config, holdings, counters), holdings, counters


def check(
    room: Intake,
    peer: PeerId,
    b: Bulletin | bytes,
    events: list[Event],
    *,
    shared: Collection[Topic] = (PUBLIC_TOPIC,),
    asked: PeerId | None = None,
) -> tuple[Offence, str] | None:
    raw = b.raw if isinstance(b, Bulletin) else b
    bulletin_id = BulletinId(b.id) if isinstance(b, Bulletin) else bid(99)
    return room.check(
        peer, bulletin_id, raw, shared, asked=asked, eager=True, now=0.0, events=events
    )


def test_each_step_answers_with_the_offence_to_charge() -> None:
    room, holdings, n = intake()
    events: list[Event] = []
    first = public(1)
    assert check(room, A, first, events, asked=B) is None
    assert events == [BulletinReceived(peer=A, bulletin=first, topic=PUBLIC_TOPIC)]
    assert check(room, B, first, events) is None  # a second sender, remembered
    assert check(room, B, first, events) is None  # B was asked: one more copy is excused
    assert check(room, B, first, events) == (Offence.REPLAY, "")
    invalid = check(room, A, b"\x00" * 80, events)
    assert invalid is not None
    assert invalid[0] is Offence.INVALID_BULLETIN
    assert check(room, B, b"\x00" * 80, events) == (Offence.INVALID_BULLETIN, "")  # the copy
    assert check(room, A, public(2), events, shared=()) == (Offence.WRONG_TOPIC, "")
    assert check(room, A, seal(CHANNEL, b"c"), events) == (Offence.WRONG_TOPIC, "")
    assert check(room, A, seal([READER.public_key], b"d"), events) == (Offence.WRONG_KIND, "")
    for k in range(3, 12):  # senders are remembered up to 8
        assert check(room, PeerId(bytes([k]) * 32), first, events) is None
    seen = room.seen.get(BulletinId(first.id))
    assert seen is not None
    assert len(seen.senders) == 8
    held = public(3)
    holdings.add(held)
    assert check(room, A, held, events) is None
    assert (n.received, n.duplicates, n.invalid) == (1, 14, 1)


def test_forks_are_reported_and_a_full_table_drops_unverified() -> None:
    room, holdings, n = intake(max_pending=1)
    events: list[Event] = []
    held, fork = public(1), public(2)  # both seq 1
    holdings.add(held)
    assert check(room, A, fork, events) is None
    assert events[0] == ForkDetected(
        topic=Topic(PUBLIC_TOPIC), author=AUTHOR.public_key, seq=1,
        held=BulletinId(held.id), received=BulletinId(fork.id),
    )  # fmt: skip
    assert check(room, A, public(3), events) is None
    assert n.overloaded == 1
    assert len(events) == 2


def test_verdicts_and_own_bulletins() -> None:
    room, _, n = intake()
    events: list[Event] = []
    received, mine = public(1), public(2)
    check(room, A, received, events)
    check(room, B, received, events)
    assert room.reject(BulletinId(mine.id)) is None  # never pending
    assert room.accept(BulletinId(received.id)) is not None
    assert room.accept(BulletinId(received.id)) is None  # the verdict is given once
    seen = room.seen.get(BulletinId(received.id))
    assert seen is not None
    assert seen.state is SeenState.ACCEPTED
    assert room.own(BulletinId(received.id), 0.0) is False  # already accepted
    assert room.own(BulletinId(mine.id), 0.0) is True
    check(room, A, public(3), events)
    assert room.reject(BulletinId(public(3).id)) == (A,)
    assert room.overdue(1000.0) == []
    assert (n.accepted, n.rejected) == (1, 1)
