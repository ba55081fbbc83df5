"""Mesh upkeep on its own: joins, GRAFT and PRUNE, the heartbeat, the message cache.

The shuffle is the identity, so every choice is the first peers in order; what
the heartbeat asks to send comes back as (peer, message) and is compared exactly.
"""

from __future__ import annotations

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.gossip import GossipConfig
from meshnode.core.gossip._mesh import GraftVerdict, Mesh
from meshnode.core.identity import Identity
from meshnode.core.sync import MemoryHoldings
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId, PeerId, Topic

T = Topic(b"\x11" * 32)
PEERS = [PeerId(bytes([n]) * 32) for n in range(1, 9)]
CONFIG = GossipConfig(d=3, d_low=2, d_high=4, d_lazy=2, prune_backoff=10, history_length=3)


def mesh(config: GossipConfig = CONFIG, topics: tuple[Topic, ...] = (T,)) -> Mesh:
    m = Mesh(config, lambda items: None)
    for topic in topics:
        m.add(topic)
    return m


def bid(n: int) -> BulletinId:
    return BulletinId(bytes([n]) * 32)


def test_peers_join_the_mesh_up_to_d_unless_in_backoff() -> None:
    m = mesh()
    assert [m.join(T, p, 0.0) for p in PEERS[:4]] == [True, True, True, False]
    assert m.members(T) == PEERS[:3]
    m.prune(T, PEERS[0], 30, 0.0)
    assert m.members(T) == PEERS[1:3]
    m.leave(T, PEERS[0])  # leaving ends its backoff too
    assert m.join(T, PEERS[0], 1.0)
    m.prune(T, PEERS[0], 30, 1.0)
    m.leave(T, PEERS[1])
    assert not m.join(T, PEERS[0], 2.0)  # room, but in backoff
    assert m.members(Topic(b"\x99" * 32)) == []


def test_graft_verdicts() -> None:
    m = mesh()
    for p in PEERS[:3]:
        m.join(T, p, 0.0)
    assert m.graft(T, PEERS[0], 0.0) is GraftVerdict.IGNORED
    assert m.graft(T, PEERS[3], 0.0) is GraftVerdict.JOINED  # d_high is 4
    assert m.graft(T, PEERS[4], 0.0) is GraftVerdict.FULL
    assert m.graft(T, PEERS[4], 5.0) is GraftVerdict.IN_BACKOFF  # FULL put it in backoff
    assert m.graft(T, PEERS[4], 10.0) is GraftVerdict.FULL  # backoff over, mesh still full
    m.prune(T, PEERS[0], 60, 0.0)
    assert m.graft(T, PEERS[0], 59.0) is GraftVerdict.IN_BACKOFF
    assert len(m.members(T)) == 3


def test_heartbeat_tops_up_with_peers_in_good_standing_once_backoffs_end() -> None:
    m = mesh()
    for p in PEERS[:5]:
        m.join(T, p, 0.0)
    for p in PEERS[:3]:
        m.prune(T, p, 5, 0.0)
    assert m.members(T) == []
    bad = {PEERS[3]}
    sent = m.heartbeat(1.0, lambda p: p not in bad)
    assert sent == [(PEERS[4], wire.Graft(topic=T))]  # the others are in backoff or bad
    assert m.heartbeat(2.0, lambda p: p not in bad) == []  # below d_low, nobody to take
    sent = m.heartbeat(5.0, lambda p: p not in bad)  # the backoffs are over
    assert sent == [(PEERS[0], wire.Graft(topic=T)), (PEERS[1], wire.Graft(topic=T))]
    assert m.members(T) == [PEERS[4], PEERS[0], PEERS[1]]
    assert m.heartbeat(6.0, lambda p: p not in bad) == []  # d peers: nothing to do


def test_announces_go_to_peers_outside_the_mesh_and_caught_up_ids_to_the_mesh() -> None:
    m = mesh(GossipConfig(d=2, d_low=1, d_high=4, d_lazy=2, history_length=3, history_gossip=2))
    for p in PEERS[:5]:
        m.join(T, p, 0.0)
    assert list(m.relay(T, bid(1), b"one", flood=False)) == PEERS[:2]
    assert list(m.relay(T, bid(2), b"two", flood=True)) == PEERS[:5]
    m.catch_up(T, bid(3), b"three")
    good = {PEERS[2], PEERS[4], *PEERS[:2]}
    sent = m.heartbeat(1.0, good.__contains__)
    lazy = wire.Announce(topic=T, ids=(bid(1), bid(2), bid(3)))
    caught_up = wire.Announce(topic=T, ids=(bid(3),))
    assert sent == [
        (PEERS[2], lazy),
        (PEERS[4], lazy),  # PEERS[3] is not in good standing
        (PEERS[0], caught_up),
        (PEERS[1], caught_up),
    ]
    sent = m.heartbeat(2.0, good.__contains__)
    assert sent == [(PEERS[2], lazy), (PEERS[4], lazy)]  # still in the newest 2 windows
    assert m.heartbeat(3.0, good.__contains__) == []


def test_windows_rotate_out_of_the_cache_which_is_bounded_in_bytes() -> None:
    m = mesh(GossipConfig(history_length=2, history_gossip=1, max_cache_bytes=10))
    holdings = MemoryHoldings()
    m.relay(T, bid(1), b"x" * 6, flood=False)
    m.relay(T, bid(2), b"y" * 6, flood=False)  # listed, but over the byte budget
    assert m.cached_bytes == 6
    assert m.serve(T, [bid(1), bid(2)], holdings) == [b"x" * 6]
    m.heartbeat(1.0, lambda p: True)
    assert m.cached_bytes == 6  # two windows are kept
    m.heartbeat(2.0, lambda p: True)
    assert m.cached_bytes == 0
    assert m.serve(T, [bid(1)], holdings) == []


def test_serving_takes_the_cache_for_its_topic_and_the_store_for_the_rest() -> None:
    author = Identity.from_seed(b"\x05" * 32, "author")
    stored = Bulletin.seal(author, None, b"hi", seq=1, prev=None, now=1_700_000_000, rng=bytes)
    holdings = MemoryHoldings()
    holdings.add(stored)
    m = mesh(topics=(T, PUBLIC_TOPIC))
    m.relay(T, bid(1), b"on T", flood=False)
    m.relay(PUBLIC_TOPIC, bid(2), b"public", flood=False)
    wanted = [bid(1), bid(2), BulletinId(stored.id)]
    assert m.serve(T, wanted, holdings) == [b"on T"]  # bid(2) is cached on another topic
    assert m.serve(PUBLIC_TOPIC, wanted, holdings) == [b"public", stored.raw]


def test_unsubscribing_uncaches_and_stops_relaying() -> None:
    m = mesh(GossipConfig(max_catchup=1))
    m.join(T, PEERS[0], 0.0)
    m.catch_up(T, bid(1), b"one")
    m.catch_up(T, bid(2), b"two")  # over max_catchup: cached, not announced
    sent = m.heartbeat(1.0, lambda p: True)
    assert sent[-1] == (PEERS[0], wire.Announce(topic=T, ids=(bid(1),)))
    m.remove(T)
    assert m.cached_bytes == 0
    assert T not in m
    assert list(m.relay(T, bid(3), b"three", flood=True)) == []
    m.catch_up(T, bid(3), b"three")
    m.leave(T, PEERS[0])
    m.remove(T)
    assert m.cached_bytes == 0


def test_relays_are_counted_per_topic_and_forgotten_when_a_peer_leaves() -> None:
    m = mesh(topics=(T, PUBLIC_TOPIC))
    for p in PEERS[:3]:
        m.join(T, p, 0.0)
    m.join(PUBLIC_TOPIC, PEERS[0], 0.0)
    m.credit(T, [PEERS[0], PEERS[1], PEERS[5]])  # PEERS[5] does not share T: no credit
    m.credit(T, [PEERS[1]])
    assert m.relayers(T) == PEERS[:2]
    assert m.relayers(PUBLIC_TOPIC) == []
    m.credit(Topic(b"\x99" * 32), [PEERS[0]])  # not subscribed: nothing to count
    assert m.relayers(Topic(b"\x99" * 32)) == []
    m.leave(T, PEERS[1])
    m.join(T, PEERS[1], 1.0)  # a new session starts from nothing
    assert m.relayers(T) == [PEERS[0]]
