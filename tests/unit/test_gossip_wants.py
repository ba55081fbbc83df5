"""The want scheduler on its own: fair shares, in-flight slots, retries and departures.

Peers are plain ids; ``reachable`` is a set the tests change. WANTs come back as
(peer, topic, ids) so the assertions compare exact lists.
"""

from __future__ import annotations

from meshnode.core import wire
from meshnode.core.gossip import GossipConfig
from meshnode.core.gossip._wants import WantScheduler
from meshnode.core.wire import BulletinId, PeerId, Topic

T1, T2 = Topic(b"\x11" * 32), Topic(b"\x22" * 32)
A, B, C = (PeerId(bytes([n]) * 32) for n in (1, 2, 3))


def ids(n: int, salt: int = 0) -> list[BulletinId]:
    return [BulletinId(bytes([salt]) + i.to_bytes(2, "big") + b"\x00" * 29) for i in range(n)]


class Harness:
    def __init__(self, config: GossipConfig | None = None) -> None:
        self.live: set[tuple[PeerId, Topic]] = {(p, t) for p in (A, B, C) for t in (T1, T2)}
        self.wants = WantScheduler(
            config or GossipConfig(), lambda peer, topic: (peer, topic) in self.live
        )
        for peer in (A, B, C):
            self.wants.add_peer(peer)
        self.broken: list[PeerId] = []

    def dispatch(self, now: float = 0.0) -> list[tuple[PeerId, Topic, tuple[BulletinId, ...]]]:
        return [(peer, m.topic, m.ids) for peer, m in self.wants.dispatch(now)]

    def expire(self, now: float) -> int:
        return self.wants.expire(now, self.broken.append)


def test_no_owner_takes_more_than_its_share_nor_any_topic_more_than_its_own() -> None:
    h = Harness(GossipConfig(max_wants=6, max_wants_per_peer=3, max_wants_per_topic=4))
    flood = ids(10, salt=1)
    assert [h.wants.want(i, T1, (A,), eager=True) for i in flood] == [True] * 3 + [False] * 7
    honest = ids(4, salt=2)
    # The topic fills at B's first; its second takes the place of A's newest (A held
    # 3 to B's 1); at 2 each, neither is hungrier: B's third is refused.
    assert [h.wants.want(i, T1, (B,), eager=True) for i in honest[:3]] == [True, True, False]
    assert (h.wants.owned_by(A), h.wants.owned_by(B), h.wants.held_in(T1)) == (2, 2, 4)
    assert h.wants.want(honest[3], T2, (B,), eager=True)  # another topic has room
    assert len(h.wants) == 5
    assert h.dispatch() == [
        (A, T1, tuple(flood[:2])), (B, T1, tuple(honest[:2])), (B, T2, (honest[3],))
    ]  # fmt: skip
    h.wants.arrived(flood[0])  # arrival frees the owner's share and the topic's
    assert h.wants.want(ids(1, salt=3)[0], T1, (A,), eager=True)
    assert h.wants.want(ids(1, salt=4)[0], T2, (C,), eager=True)
    # The table is full, and what the hungriest owner (B) holds is in flight: refused.
    assert not h.wants.want(ids(1, salt=5)[0], T2, (C,), eager=True)


def test_many_flooders_cannot_keep_a_peer_with_few_wants_out() -> None:
    """Keys that flood a topic's share even out between them, and a peer with one want
    takes the place of the newest want not yet asked of the hungriest: a few throw-away
    keys fill the share, never to the exclusion of anyone."""
    h = Harness(GossipConfig(max_wants_per_peer=4, max_wants_per_topic=8))
    sybils = [PeerId(bytes([n]) * 32) for n in (40, 41, 42)]
    for s in sybils:
        h.wants.add_peer(s)
        h.live |= {(s, T1)}
    flood = [ids(4, salt=10 + n) for n in range(3)]
    for s, f in zip(sybils, flood, strict=True):
        for i in f:
            h.wants.want(i, T1, (s,), eager=True)
    assert [h.wants.owned_by(s) for s in sybils] == [3, 3, 2]  # the third displaced two
    assert h.wants.held_in(T1) == 8
    (honest,) = ids(1, salt=99)
    assert h.wants.want(honest, T1, (C,), eager=True)
    assert h.wants.held_in(T1) == 8
    assert [h.wants.owned_by(s) for s in sybils] == [2, 3, 2]
    asked = [i for _, _, batch in h.dispatch() for i in batch]
    assert honest in asked
    assert flood[0][2] not in asked  # displaced before it was asked: never asked


def test_a_known_id_gains_candidates_and_eagerness_without_a_second_want() -> None:
    h = Harness(GossipConfig(max_wants_per_peer=1))
    (bid,) = ids(1)
    assert h.wants.want(bid, T1, (A,), eager=False)
    assert h.wants.want(bid, T1, [PeerId(bytes([n]) * 32) for n in range(10, 20)], eager=True)
    assert len(h.wants) == 1
    want = h.wants.arrived(bid)
    assert want is not None
    assert (want.owner, want.eager, len(want.candidates)) == (A, True, 8)  # at most 8
    assert h.wants.arrived(bid) is None
    orphan = BulletinId(b"\x07" * 32)
    assert h.wants.want(orphan, T1, (), eager=False)
    assert orphan not in h.wants  # no candidate: given up at once


def test_in_flight_slots_per_peer_and_batches_of_at_most_max_want() -> None:
    h = Harness(GossipConfig(max_inflight=300))
    many = ids(301)
    for bid in many:
        h.wants.want(bid, T1, (A,), eager=True)
    sent = h.dispatch()
    assert [(p, t, len(i)) for p, t, i in sent] == [(A, T1, wire.MAX_WANT), (A, T1, 44)]
    assert h.dispatch() == []  # 300 in flight, one queued behind them
    h.wants.arrived(many[5])
    assert h.dispatch() == [(A, T1, (many[300],))]


def test_timeouts_move_round_robin_then_give_up_and_only_eager_owners_break_promises() -> None:
    h = Harness(GossipConfig(want_timeout=3.0, want_attempts=3))
    announced, synced = ids(2)
    h.wants.want(announced, T1, (A, B), eager=True)
    h.wants.want(synced, T1, (C,), eager=False)
    assert h.dispatch(0.0) == [(A, T1, (announced,)), (C, T1, (synced,))]
    assert h.expire(2.9) == 0
    assert h.expire(3.0) == 2
    assert h.broken == [A]  # C's want came from sync: no promise was made
    assert h.dispatch(3.0) == [(B, T1, (announced,)), (C, T1, (synced,))]
    assert h.expire(6.0) == 2
    assert h.dispatch(6.0) == [(A, T1, (announced,)), (C, T1, (synced,))]
    assert h.expire(9.0) == 2
    assert h.broken == [A, A]  # B asked, but the want is A's
    assert len(h.wants) == 0  # three attempts each: given up
    assert h.dispatch(9.0) == []


def test_a_peer_that_leaves_hands_its_wants_on_at_once() -> None:
    h = Harness(GossipConfig(max_inflight=1))
    asked, queued, only_a = ids(3)
    h.wants.want(asked, T1, (A, B), eager=True)
    h.wants.want(queued, T1, (A, C), eager=True)
    h.wants.want(only_a, T1, (A,), eager=True)
    assert h.dispatch() == [(A, T1, (asked,))]
    h.live -= {(A, T1), (A, T2)}
    h.wants.remove_peer(A)
    assert h.dispatch() == [(B, T1, (asked,)), (C, T1, (queued,))]
    assert only_a not in h.wants  # no candidate left
    h.wants.remove_peer(A)  # twice is harmless
    assert h.expire(10.0) == 2  # B's and C's; the stale deadline of A's ask is skipped


def test_unreachable_candidates_are_skipped() -> None:
    h = Harness()
    (bid,) = ids(1)
    h.live.discard((A, T2))
    h.wants.want(bid, T2, (A, B), eager=True)
    assert h.dispatch() == [(B, T2, (bid,))]
