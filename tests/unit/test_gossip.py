"""The gossip machine without any network: machines wired back to back, a manual clock.

Honest nodes are real Gossip machines over MemoryHoldings whose node policy
(hold, then accept or reject) is a callable; a hostile peer is a scripted
``Rogue`` that sends whatever bytes a test gives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.core.gossip import (
    BulletinReceived,
    DeliveryReceived,
    DropPeer,
    Event,
    ForkDetected,
    Gossip,
    GossipConfig,
    GossipStatistics,
    Offence,
    PongReceived,
    SyncCompleted,
    TopicsShared,
    channel_keys,
)
from meshnode.core.identity import Identity
from meshnode.core.sync import MemoryHoldings, SyncConfig
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId, PeerId, Topic
from meshnode.errors import LocalProtocolError
from sim import SeededRng

if TYPE_CHECKING:
    from collections.abc import Callable

CHANNEL = Channel.from_secret("strike", b"\x33" * 32)
TC = Topic(CHANNEL.id)
KEYS = channel_keys(CHANNEL)
OTHER = Channel.from_secret("other", b"\x44" * 32)
RNG = SeededRng(b"bulletins")
T0 = 1_700_000_000


def identity(n: int) -> Identity:
    return Identity.from_seed(bytes([n]) * 32, f"group {n}")


AUTHOR = identity(200)


def seal(
    author: Identity = AUTHOR,
    audience: Channel | list[bytes] | None = CHANNEL,
    seq: int = 1,
    prev: bytes | None = None,
    text: str = "hello",
    now: int = T0,
) -> Bulletin:
    return Bulletin.seal(author, audience, text.encode(), seq=seq, prev=prev, now=now, rng=RNG)


def chain(
    n: int, author: Identity = AUTHOR, audience: Channel | None = CHANNEL, size: int = 0
) -> list[Bulletin]:
    out: list[Bulletin] = []
    for i in range(n):
        text = f"#{i}".ljust(size, ".")
        out.append(seal(author, audience, seq=i + 1, prev=out[-1].id if out else None, text=text))
    return out


def corrupt(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


@dataclass(eq=False)
class Node:
    key: PeerId
    gossip: Gossip
    holdings: MemoryHoldings
    events: list[Event] = field(default_factory=list)
    verdict: Callable[[Bulletin], bool] | None = lambda b: True

    def received(self) -> list[Bulletin]:
        return [e.bulletin for e in self.events if isinstance(e, BulletinReceived)]

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass(eq=False)
class Rogue:
    """A scripted peer: records what it is sent, sends what it is told."""

    key: PeerId
    inbox: list[wire.Message] = field(default_factory=list)
    session: bytes = b""

    def hello(self, channels: tuple[Channel, ...] = (CHANNEL,), public: bool = True) -> bytes:
        keys = [k for c in channels for k in channel_keys(c)]
        proofs = tuple(wire.membership_proof(k, self.session, self.key) for k in keys)
        return wire.encode(wire.Hello(public=public, proofs=proofs))


class Net:
    """Machines back to back; ``drop`` decides which payloads are lost."""

    def __init__(self, config: GossipConfig | None = None) -> None:
        self.now = 0.0
        self.config = config or GossipConfig()
        self.nodes: dict[PeerId, Node] = {}
        self.rogues: dict[PeerId, Rogue] = {}
        self.log: list[tuple[PeerId, PeerId, bytes]] = []
        self.drop: Callable[[PeerId, PeerId, bytes], bool] = lambda src, dst, data: False
        self._sessions = 0

    def node(
        self,
        n: int,
        topics: dict[Topic, tuple[bytes, ...]] | None = None,
        config: GossipConfig | None = None,
    ) -> Node:
        key = PeerId(identity(n).public_key)
        holdings = MemoryHoldings()
        gossip = Gossip(
            local=key,
            holdings=holdings,
            rng=SeededRng(b"node" + key),
            now=self.now,
            config=config or self.config,
        )
        for topic, keys in (topics if topics is not None else {TC: KEYS, PUBLIC_TOPIC: ()}).items():
            gossip.subscribe(topic, keys, now=self.now)
        node = self.nodes[key] = Node(key, gossip, holdings)
        return node

    def rogue(self, n: int) -> Rogue:
        rogue = Rogue(PeerId(identity(n).public_key))
        self.rogues[rogue.key] = rogue
        return rogue

    def connect(self, a: Node, b: Node | Rogue) -> None:
        self._sessions += 1
        session = b"session-%d" % self._sessions
        a.gossip.add_peer(b.key, session, self.now)
        if isinstance(b, Node):
            b.gossip.add_peer(a.key, session, self.now)
        else:
            b.session = session
        self.pump()

    def handle(self, node: Node, events: list[Event]) -> None:
        node.events.extend(events)
        for event in events:
            if isinstance(event, BulletinReceived) and node.verdict is not None:
                if node.verdict(event.bulletin):
                    node.holdings.add(event.bulletin)
                    node.gossip.accept(event.bulletin.id, self.now)
                else:
                    node.gossip.reject(event.bulletin.id, self.now)

    def send(self, rogue: Rogue, node: Node, data: bytes) -> list[Event]:
        events = node.gossip.receive_data(rogue.key, data, self.now)
        self.handle(node, events)
        self.pump()
        return events

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            for node in list(self.nodes.values()):
                for dst, data in node.gossip.data_to_send():
                    moved = True
                    self.log.append((node.key, dst, data))
                    if self.drop(node.key, dst, data):
                        continue
                    if dst in self.rogues:
                        self.rogues[dst].inbox.append(wire.decode(data))
                    elif dst in self.nodes:
                        target = self.nodes[dst]
                        self.handle(target, target.gossip.receive_data(node.key, data, self.now))
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for node in list(self.nodes.values()):
                self.handle(node, node.gossip.tick(self.now))
            self.pump()

    def sent_to(self, dst: PeerId) -> list[bytes]:
        return [data for _, d, data in self.log if d == dst]


def bulletins_in(frames: list[bytes]) -> set[bytes]:
    out: set[bytes] = set()
    for data in frames:
        message = wire.decode(data)
        if isinstance(message, wire.Bulletins):
            out.update(message.raws)
    return out


# -- topics and membership proofs --------------------------------------------------


def test_members_share_their_channel_and_the_public_topic() -> None:
    net = Net()
    a, b = net.node(1), net.node(2)
    c = net.node(3, {PUBLIC_TOPIC: ()})
    net.connect(a, b)
    net.connect(a, c)
    assert a.gossip.shared_topics(b.key) == {TC, PUBLIC_TOPIC}
    assert b.gossip.shared_topics(a.key) == {TC, PUBLIC_TOPIC}
    assert a.gossip.shared_topics(c.key) == {PUBLIC_TOPIC}
    assert c.gossip.shared_topics(a.key) == {PUBLIC_TOPIC}
    assert TopicsShared(peer=b.key, topics=frozenset({TC, PUBLIC_TOPIC})) in a.events


def test_a_non_member_never_sees_the_channel_id() -> None:
    net = Net()
    hub, member = net.node(1), net.node(2)
    outsider = net.node(3, {PUBLIC_TOPIC: ()})
    net.connect(hub, member)
    net.connect(hub, outsider)
    for b in chain(3, identity(2)):
        member.holdings.add(b)
        member.gossip.publish(b, net.now)
    public = seal(identity(2), None)
    member.holdings.add(public)
    member.gossip.publish(public, net.now)
    net.pump()
    net.advance(5)
    assert len(hub.holdings) == 4
    assert outsider.holdings.ids(PUBLIC_TOPIC) == {public.id}
    for data in net.sent_to(outsider.key):
        assert CHANNEL.id not in data


def test_echoed_proofs_prove_nothing() -> None:
    net = Net()
    hub, rogue = net.node(1), net.rogue(9)
    net.connect(hub, rogue)
    hello = rogue.inbox[0]
    assert isinstance(hello, wire.Hello)
    assert len(hello.proofs) % net.config.hello_padding == 0
    net.send(rogue, hub, wire.encode(hello))
    assert hub.gossip.shared_topics(rogue.key) == {PUBLIC_TOPIC}
    net.send(rogue, hub, rogue.hello())
    assert hub.gossip.shared_topics(rogue.key) == {TC, PUBLIC_TOPIC}


def test_after_a_rekey_only_the_new_epoch_matches() -> None:
    rekeyed = CHANNEL.next_epoch(SeededRng(b"rekey"))
    net = Net()
    a = net.node(1, {TC: channel_keys(rekeyed)})
    b = net.node(2, {TC: channel_keys(rekeyed, epochs=2)})
    stale = net.node(3, {TC: channel_keys(CHANNEL)})
    net.connect(a, b)
    net.connect(a, stale)
    net.connect(b, stale)
    assert a.gossip.shared_topics(b.key) == {TC}
    assert a.gossip.shared_topics(stale.key) == frozenset()
    assert b.gossip.shared_topics(stale.key) == {TC}  # b still presents the old epoch
    b.events.clear()
    b.gossip.subscribe(TC, channel_keys(rekeyed), now=net.now)
    net.pump()
    assert b.gossip.shared_topics(stale.key) == frozenset()
    assert stale.gossip.shared_topics(b.key) == frozenset()


def test_subscribe_and_unsubscribe_update_peers() -> None:
    net = Net()
    a = net.node(1, {PUBLIC_TOPIC: ()})
    b = net.node(2)
    net.connect(a, b)
    assert a.gossip.shared_topics(b.key) == {PUBLIC_TOPIC}
    events = a.gossip.subscribe(TC, KEYS, now=net.now)
    net.pump()
    assert TopicsShared(peer=b.key, topics=frozenset({TC, PUBLIC_TOPIC})) in events
    assert b.gossip.shared_topics(a.key) == {TC, PUBLIC_TOPIC}
    assert a.gossip.mesh(TC) == [b.key]
    posted = seal(identity(1))
    a.holdings.add(posted)
    a.gossip.publish(posted, net.now)
    assert a.gossip._mesh.cached_bytes > 0
    a.gossip.unsubscribe(TC, now=net.now)
    assert a.gossip._mesh.cached_bytes == 0
    net.pump()
    assert b.gossip.shared_topics(a.key) == {PUBLIC_TOPIC}
    assert b.gossip.mesh(TC) == []
    assert a.gossip.unsubscribe(TC, now=net.now) == []
    assert a.gossip.topics() == [PUBLIC_TOPIC]


# -- mesh maintenance --------------------------------------------------------------

SMALL = GossipConfig(d=3, d_low=2, d_high=4, d_lazy=2)


def star(leaves: int, config: GossipConfig = SMALL) -> tuple[Net, Node, list[Node]]:
    net = Net(config)
    hub = net.node(1)
    others = [net.node(10 + i) for i in range(leaves)]
    for leaf in others:
        net.connect(hub, leaf)
    return net, hub, others


def test_mesh_stays_between_watermarks() -> None:
    net, hub, leaves = star(8)
    mesh = hub.gossip.mesh(TC)
    assert SMALL.d <= len(mesh) <= SMALL.d_high
    for leaf in leaves:
        in_hub = leaf.key in mesh
        assert (hub.key in leaf.gossip.mesh(TC)) == in_hub
    net.advance(3)
    assert SMALL.d <= len(hub.gossip.mesh(TC)) <= SMALL.d_high


def test_mesh_is_refilled_after_peers_leave_and_backoff_expires() -> None:
    net, hub, _leaves = star(8)
    for peer in hub.gossip.mesh(TC)[:3]:
        hub.gossip.remove_peer(peer, net.now)
        net.nodes[peer].gossip.remove_peer(hub.key, net.now)
    assert len(hub.gossip.mesh(TC)) == 1
    net.advance(2)
    # the refused leaves are in backoff both ways: nobody grafts yet
    assert len(hub.gossip.mesh(TC)) == 1
    net.advance(SMALL.prune_backoff + 2)
    assert len(hub.gossip.mesh(TC)) >= SMALL.d_low


def test_graft_during_backoff_is_penalised_and_pruned() -> None:
    net = Net()
    hub, rogue = net.node(1), net.rogue(9)
    net.connect(hub, rogue)
    net.send(rogue, hub, rogue.hello())
    assert rogue.key in hub.gossip.mesh(TC)
    assert any(isinstance(m, wire.Graft) for m in rogue.inbox)
    net.send(rogue, hub, wire.encode(wire.Prune(topic=TC, backoff=30)))
    assert rogue.key not in hub.gossip.mesh(TC)
    rogue.inbox.clear()
    net.send(rogue, hub, wire.encode(wire.Graft(topic=TC)))
    assert rogue.key not in hub.gossip.mesh(TC)
    assert hub.gossip.score(rogue.key) < 0
    assert any(isinstance(m, wire.Prune) for m in rogue.inbox)
    net.advance(31)
    net.send(rogue, hub, wire.encode(wire.Graft(topic=TC)))
    assert rogue.key in hub.gossip.mesh(TC)
    net.send(rogue, hub, wire.encode(wire.Graft(topic=TC)))  # already there: nothing


# -- propagation -------------------------------------------------------------------


def test_eager_push_to_the_mesh_then_lazy_announce_to_the_rest() -> None:
    config = GossipConfig(d=2, d_low=1, d_high=2, d_lazy=8, flood_publish=False)
    net, hub, leaves = star(6, config)
    source = leaves[0]
    b = seal(identity(10))
    source.holdings.add(b)
    source.gossip.publish(b, net.now)
    net.pump()
    have = {leaf.key for leaf in leaves if leaf.holdings.has(b.id)}
    assert hub.holdings.has(b.id)
    assert have == {source.key} | (set(hub.gossip.mesh(TC)) - {source.key})
    assert len(have) < len(leaves)
    net.advance(config.heartbeat)
    assert all(leaf.holdings.has(b.id) for leaf in leaves)
    stats = hub.gossip.statistics()
    assert stats.announced > 0
    assert stats.served > 0


def test_flood_publish_reaches_every_topic_peer_at_once() -> None:
    net, hub, leaves = star(6)
    b = seal(identity(1))
    hub.holdings.add(b)
    hub.gossip.publish(b, net.now)
    hub.gossip.publish(b, net.now)  # twice: once
    net.pump()
    assert all(leaf.holdings.has(b.id) for leaf in leaves)
    assert hub.gossip.statistics().published == 1


def test_pull_retries_another_announcer() -> None:
    config = GossipConfig(d=0, d_low=0, d_high=0, flood_publish=False)
    net = Net(config)
    a, b, x = net.node(1), net.node(2), net.node(3)
    net.connect(a, b)
    net.connect(a, x)
    net.connect(b, x)
    bulletin = seal(identity(1))
    a.holdings.add(bulletin)
    a.gossip.publish(bulletin, net.now)

    def lose_from_a_to_x(src: PeerId, dst: PeerId, data: bytes) -> bool:
        return src == a.key and dst == x.key and data[1] == wire.MessageType.BULLETINS

    net.drop = lose_from_a_to_x
    net.advance(config.heartbeat)
    assert b.holdings.has(bulletin.id)
    assert not x.holdings.has(bulletin.id)
    net.advance(config.want_timeout + 2 * config.heartbeat)
    assert x.holdings.has(bulletin.id)
    assert x.gossip.statistics().want_timeouts == 1


def test_duplicates_are_verified_once() -> None:
    net = Net()
    a, b, x = net.node(1), net.node(2), net.node(3)
    net.connect(a, x)
    net.connect(b, x)
    bulletin = seal()
    for n in (a, b):
        n.holdings.add(bulletin)
        n.gossip.publish(bulletin, net.now)
    net.pump()
    assert len(x.received()) == 1
    stats = x.gossip.statistics()
    assert (stats.received, stats.duplicates) == (1, 1)
    assert x.gossip.score(a.key) == x.gossip.score(b.key) == 0


def test_gaps_are_walked_back() -> None:
    net = Net()
    a, x = net.node(1), net.node(2)
    net.connect(a, x)
    bulletins = chain(4, identity(1))
    net.drop = lambda src, dst, data: data[1] == wire.MessageType.BULLETINS
    for b in bulletins[:3]:
        a.holdings.add(b)
        a.gossip.publish(b, net.now)
        net.pump()  # one push per payload, each lost
    assert x.holdings.ids(TC) == set()
    net.drop = lambda src, dst, data: False
    a.holdings.add(bulletins[3])
    a.gossip.publish(bulletins[3], net.now)
    net.pump()
    assert x.holdings.ids(TC) == {b.id for b in bulletins}
    assert x.gossip.statistics().wanted == 3


def test_forks_are_reported_and_kept() -> None:
    net = Net()
    a, x = net.node(1), net.node(2)
    net.connect(a, x)
    first = seal(identity(1), text="one")
    second = seal(identity(1), text="two")
    for b in (first, second):
        a.holdings.add(b)
        a.gossip.publish(b, net.now)
        net.pump()  # the first is held when the second arrives
    assert x.holdings.has(first.id)
    assert x.holdings.has(second.id)
    (fork,) = x.of(ForkDetected)
    assert fork == ForkDetected(
        topic=TC, author=identity(1).public_key, seq=1, held=first.id, received=second.id
    )


def test_caught_up_bulletins_are_announced_not_pushed() -> None:
    net = Net()
    a, x = net.node(1), net.node(2)
    y = net.node(3)
    history = chain(5, identity(1))
    for b in history:
        a.holdings.add(b)
    net.connect(x, y)
    net.connect(a, x)
    assert {b.id for b in history} <= x.holdings.ids(TC)
    assert not bulletins_in(net.sent_to(y.key))
    net.advance(net.config.heartbeat)
    assert y.holdings.ids(TC) == {b.id for b in history}
    assert x.of(SyncCompleted) or a.of(SyncCompleted)


def test_late_joiner_converges_by_sync() -> None:
    net = Net()
    a, b = net.node(1), net.node(2)
    history = chain(40, identity(1)) + chain(10, identity(2), None)
    for bulletin in history:
        a.holdings.add(bulletin)
    net.connect(a, b)
    assert len(b.holdings) == 50
    opener, answerer = (a, b) if a.key < b.key else (b, a)
    assert len(opener.of(SyncCompleted)) == 2  # one per shared topic
    assert answerer.of(SyncCompleted) == []  # the answerer opens only to retry (see below)


# -- validation, verdicts and scores -----------------------------------------------


def member_rogue(net: Net, hub: Node, n: int = 9) -> Rogue:
    rogue = net.rogue(n)
    net.connect(hub, rogue)
    net.send(rogue, hub, rogue.hello())
    return rogue


def test_relayers_sent_an_accepted_bulletin_before_the_verdict() -> None:
    net = Net()
    hub, source = net.node(1), net.node(2)
    net.connect(hub, source)
    rogue = member_rogue(net, hub)
    post = seal(identity(2))
    source.holdings.add(post)
    source.gossip.publish(post, net.now)
    net.pump()
    assert hub.holdings.has(post.id)
    assert hub.gossip.relayers(TC) == [source.key]
    assert hub.gossip.relayers(PUBLIC_TOPIC) == []
    # The rogue echoes what the hub pushed to it: a copy after the verdict earns nothing.
    assert post.raw in {r for m in rogue.inbox if isinstance(m, wire.Bulletins) for r in m.raws}
    net.send(rogue, hub, wire.encode_bulletins([post.raw]))
    assert hub.gossip.relayers(TC) == [source.key]
    # A bulletin the node refuses earns nothing either.
    hub.verdict = lambda b: False
    net.send(rogue, hub, wire.encode_bulletins([seal(identity(9)).raw]))
    assert hub.gossip.relayers(TC) == [source.key]
    hub.gossip.remove_peer(source.key, net.now)
    assert hub.gossip.relayers(TC) == []


def test_invalid_bulletins_are_never_stored_or_relayed_and_drop_the_sender() -> None:
    net = Net()
    hub, leaf = net.node(1), net.node(2)
    net.connect(hub, leaf)
    rogue = member_rogue(net, hub)
    bad = corrupt(seal(identity(9)).raw)
    events = net.send(rogue, hub, wire.encode_bulletins([bad]))
    (drop,) = [e for e in events if isinstance(e, DropPeer)]
    assert drop.peer == rogue.key
    assert "invalid bulletin" in drop.reason
    assert not hub.received()
    assert len(hub.holdings) == 0
    assert bad not in bulletins_in(net.sent_to(leaf.key))
    assert net.send(rogue, hub, wire.encode_bulletins([bad])) == []  # ignored once dropped
    assert rogue.key not in hub.gossip.peers()
    hub.gossip.remove_peer(rogue.key, net.now)
    net.connect(hub, rogue)  # a new session starts clean
    assert hub.gossip.score(rogue.key) == 0


def test_an_invalid_bulletin_relayed_by_another_peer_costs_it_too() -> None:
    config = GossipConfig(penalties={**GossipConfig().penalties, Offence.INVALID_BULLETIN: 30.0})
    net = Net(config)
    hub = net.node(1)
    r1, r2 = member_rogue(net, hub, 8), member_rogue(net, hub, 9)
    bad = corrupt(seal(identity(9)).raw)
    net.send(r1, hub, wire.encode_bulletins([bad]))
    net.send(r2, hub, wire.encode_bulletins([bad]))
    assert hub.gossip.score(r1.key) == hub.gossip.score(r2.key) == -30.0
    assert hub.gossip.statistics().invalid == 1


def test_malformed_messages_drop_the_peer() -> None:
    net = Net()
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    events = net.send(rogue, hub, b"\x01\x04\xc1")
    assert [type(e) for e in events] == [DropPeer]


def test_rejected_and_pending_bulletins_are_never_relayed() -> None:
    net = Net()
    hub, leaf = net.node(1), net.node(2)
    net.connect(hub, leaf)
    rogue = member_rogue(net, hub)
    refused, held_back = chain(2, identity(9))
    hub.verdict = None  # the node decides by hand
    net.send(rogue, hub, wire.encode_bulletins([refused.raw, held_back.raw]))
    assert {b.id for b in hub.received()} == {refused.id, held_back.id}
    assert hub.gossip.reject(refused.id, net.now) == []
    net.advance(2 * net.config.heartbeat)
    assert not bulletins_in(net.sent_to(leaf.key))
    # the leaf cannot pull them either
    hub.gossip.receive_data(
        leaf.key, wire.encode(wire.Want(topic=TC, ids=(refused.id, held_back.id))), net.now
    )
    net.pump()
    assert not bulletins_in(net.sent_to(leaf.key))
    assert hub.gossip.accept(held_back.id, net.now)
    assert not hub.gossip.accept(refused.id, net.now)
    net.pump()
    assert bulletins_in(net.sent_to(leaf.key)) == {held_back.raw}


def test_reject_with_penalty_charges_the_sender() -> None:
    net = Net()
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    hub.verdict = None
    b = seal(identity(9))
    net.send(rogue, hub, wire.encode_bulletins([b.raw]))
    hub.gossip.reject(b.id, net.now, penalize=True)
    assert hub.gossip.score(rogue.key) == -GossipConfig().penalties[Offence.REJECTED]
    assert hub.gossip.reject(b.id, net.now) == []


def test_verdicts_time_out_as_rejections() -> None:
    net = Net()
    hub, leaf = net.node(1), net.node(2)
    net.connect(hub, leaf)
    rogue = member_rogue(net, hub)
    hub.verdict = None
    b = seal(identity(9))
    net.send(rogue, hub, wire.encode_bulletins([b.raw]))
    net.advance(net.config.verdict_timeout + 2)
    assert not hub.gossip.accept(b.id, net.now)
    assert hub.gossip.statistics().rejected == 1
    assert not bulletins_in(net.sent_to(leaf.key))


def test_replays_beyond_the_threshold_drop_the_peer() -> None:
    net = Net()
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    data = wire.encode_bulletins([seal(identity(9)).raw])
    for _ in range(5):
        net.send(rogue, hub, data)
    assert hub.gossip.score(rogue.key) == -40.0
    net.advance(40)  # scores decay
    assert hub.gossip.score(rogue.key) > -1
    events: list[Event] = []
    for _ in range(11):
        events += net.send(rogue, hub, data)
    (drop,) = events
    assert isinstance(drop, DropPeer)
    assert "same bulletin" in drop.reason
    assert len(hub.received()) == 1


def test_unrequested_bulletin_floods_are_limited_then_dropped() -> None:
    config = GossipConfig(bulletin_rate=1.0, bulletin_burst=5.0)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    flood = chain(40, identity(9))
    events = net.send(rogue, hub, wire.encode_bulletins([b.raw for b in flood[:10]]))
    assert len(hub.received()) == 5
    assert not any(isinstance(e, DropPeer) for e in events)
    assert hub.gossip.score(rogue.key) == -25.0
    events = net.send(rogue, hub, wire.encode_bulletins([b.raw for b in flood[10:]]))
    assert isinstance(events[-1], DropPeer)
    assert "rate limit" in events[-1].reason


def test_message_rate_limit() -> None:
    config = GossipConfig(message_rate=1.0, message_burst=3.0)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)  # the HELLO took one token
    ping = wire.encode(wire.Ping(nonce=1))
    net.send(rogue, hub, ping)
    net.send(rogue, hub, ping)
    assert hub.gossip.score(rogue.key) == 0
    net.send(rogue, hub, ping)
    assert hub.gossip.score(rogue.key) == -config.penalties[Offence.FLOOD]
    assert sum(isinstance(m, wire.Pong) for m in rogue.inbox) == 2


def test_direct_bulletins_are_not_gossiped() -> None:
    net = Net()
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    direct = seal(identity(9), [identity(1).public_key])
    net.send(rogue, hub, wire.encode_bulletins([direct.raw]))
    assert hub.gossip.score(rogue.key) == -50.0
    assert not hub.received()
    events = net.send(rogue, hub, wire.encode_bulletins([direct.raw]))
    assert [type(e) for e in events] == [DropPeer]
    with pytest.raises(LocalProtocolError, match="direct"):
        hub.gossip.publish(direct, net.now)


def test_topics_not_shared_are_refused_and_served_nothing() -> None:
    net = Net()
    hub = net.node(1)
    member = net.node(2)
    net.connect(hub, member)
    b = seal(identity(2))
    member.holdings.add(b)
    member.gossip.publish(b, net.now)
    net.pump()
    outsider = net.rogue(9)
    net.connect(hub, outsider)
    net.send(outsider, hub, outsider.hello(channels=()))
    assert hub.gossip.shared_topics(outsider.key) == {PUBLIC_TOPIC}
    penalty = net.config.penalties[Offence.WRONG_TOPIC]
    for message in (
        wire.encode_bulletins([seal(identity(9)).raw]),
        wire.encode(wire.Want(topic=TC, ids=(BulletinId(b.id),))),
        wire.encode(wire.Announce(topic=TC, ids=(BulletinId(b"\x01" * 32),))),
        wire.encode(wire.Graft(topic=TC)),
        wire.encode(wire.Prune(topic=TC, backoff=1)),
        wire.encode(wire.Sync(topic=TC, opened_by_sender=True, ranges=())),
    ):
        before = hub.gossip.score(outsider.key)
        net.send(outsider, hub, message)
        assert hub.gossip.score(outsider.key) == pytest.approx(before - penalty)
    assert not any(isinstance(m, wire.Bulletins) for m in outsider.inbox)
    assert len(hub.received()) == 1
    silent = net.rogue(10)
    net.connect(hub, silent)  # no HELLO at all: shares nothing
    net.send(silent, hub, wire.encode_bulletins([seal(identity(10)).raw]))
    assert hub.gossip.score(silent.key) == -penalty


def test_penalize_from_the_node() -> None:
    net = Net()
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    assert hub.gossip.penalize(rogue.key, Offence.REJECTED, net.now) == []
    events = hub.gossip.penalize(rogue.key, Offence.MALFORMED, net.now, "bad deposit")
    reason = "sent a malformed message (bad deposit)"
    assert events == [DropPeer(peer=rogue.key, reason=reason, score=-110.0)]
    assert hub.gossip.penalize(PeerId(b"\x00" * 32), Offence.FLOOD, net.now) == []


# -- bounds ------------------------------------------------------------------------


def test_seen_cache_is_bounded_in_size_and_time() -> None:
    config = GossipConfig(max_seen=8, max_pending=4, seen_ttl=10.0, verdict_timeout=5.0)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    flood = chain(20, identity(9))
    for b in flood:
        net.send(rogue, hub, wire.encode_bulletins([b.raw]))
    assert len(hub.holdings) == 20
    assert len(hub.gossip._intake.seen) <= 8
    # an old one comes back: recognised from the holdings, not verified again
    net.send(rogue, hub, wire.encode_bulletins([flood[0].raw]))
    assert hub.gossip.statistics().received == 20
    net.advance(11)
    assert len(hub.gossip._intake.seen) == 0


def test_pending_verdicts_are_bounded() -> None:
    config = GossipConfig(max_pending=3)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    hub.verdict = None
    net.send(rogue, hub, wire.encode_bulletins([b.raw for b in chain(5, identity(9))]))
    assert len(hub.received()) == 3
    assert hub.gossip.statistics().overloaded == 2


def test_outbox_is_bounded() -> None:
    config = GossipConfig(max_outbox=3000)
    net = Net(config)
    hub, leaf = net.node(1), net.node(2)
    net.connect(hub, leaf)
    for b in chain(5, identity(1), size=1000):
        hub.holdings.add(b)
        hub.gossip.publish(b, net.now)
    assert hub.gossip.statistics().outbox_drops > 0
    net.pump()
    assert 0 < len(leaf.holdings) < 5


def test_want_table_is_bounded() -> None:
    config = GossipConfig(max_wants=2)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    ids = tuple(BulletinId(bytes([i]) * 32) for i in range(5))
    net.send(rogue, hub, wire.encode(wire.Announce(topic=TC, ids=ids)))
    assert hub.gossip.statistics().want_overflows == 3
    (want,) = [m for m in rogue.inbox if isinstance(m, wire.Want)]
    assert want.ids == ids[:2]


def test_wants_move_to_another_candidate_when_a_peer_leaves() -> None:
    net = Net()
    hub = net.node(1)
    r1, r2 = member_rogue(net, hub, 8), member_rogue(net, hub, 9)
    b = seal(identity(9))
    announce = wire.encode(wire.Announce(topic=TC, ids=(BulletinId(b.id),)))
    net.send(r1, hub, announce)
    net.send(r2, hub, announce)
    assert any(isinstance(m, wire.Want) for m in r1.inbox)
    assert not any(isinstance(m, wire.Want) for m in r2.inbox)
    hub.gossip.remove_peer(r1.key, net.now)
    net.pump()
    assert any(isinstance(m, wire.Want) for m in r2.inbox)
    net.send(r2, hub, wire.encode_bulletins([b.raw]))
    assert hub.holdings.has(b.id)
    assert hub.gossip.score(r2.key) == 0


def test_announce_and_serve_rates_are_limited_silently() -> None:
    config = GossipConfig(announce_rate=1.0, announce_burst=2.0, serve_rate=1.0, serve_burst=1.0)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    ids = tuple(BulletinId(bytes([i]) * 32) for i in range(3))
    net.send(rogue, hub, wire.encode(wire.Announce(topic=TC, ids=ids)))
    assert not any(isinstance(m, wire.Want) for m in rogue.inbox)
    history = chain(2, identity(1))
    for b in history:
        hub.holdings.add(b)
    want = wire.encode(wire.Want(topic=TC, ids=tuple(BulletinId(b.id) for b in history)))
    net.send(rogue, hub, want)
    assert not any(isinstance(m, wire.Bulletins) for m in rogue.inbox)
    assert hub.gossip.score(rogue.key) == 0


# -- other messages and local use --------------------------------------------------


def test_ping_pong_and_delivery_messages() -> None:
    net = Net()
    a, b = net.node(1), net.node(2)
    net.connect(a, b)
    assert a.gossip.send(b.key, wire.Ping(nonce=7))
    deposit = wire.Deposit(recipient=bytes(b.key), raws=(seal(identity(1), [b.key]).raw,))
    assert a.gossip.send(b.key, deposit)
    net.pump()
    assert PongReceived(peer=b.key, nonce=7) in a.events
    assert DeliveryReceived(peer=a.key, message=deposit) in b.events
    assert not a.gossip.send(PeerId(b"\x00" * 32), wire.Ping(nonce=1))


def test_local_misuse_is_refused() -> None:
    net = Net()
    a, b = net.node(1), net.node(2)
    net.connect(a, b)
    with pytest.raises(LocalProtocolError):
        a.gossip.add_peer(b.key, b"again", net.now)
    with pytest.raises(LocalProtocolError):
        a.gossip.receive_data(PeerId(b"\x00" * 32), b"", net.now)
    with pytest.raises(LocalProtocolError):
        a.gossip.subscribe(PUBLIC_TOPIC, KEYS, now=net.now)
    with pytest.raises(LocalProtocolError):
        a.gossip.subscribe(Topic(OTHER.id), (), now=net.now)
    with pytest.raises(LocalProtocolError):
        a.gossip.subscribe(Topic(OTHER.id), [b"\x00" * 32] * 300, now=net.now)
    with pytest.raises(LocalProtocolError, match="subscribe"):
        a.gossip.publish(seal(identity(1), OTHER), net.now)
    a.gossip.remove_peer(PeerId(b"\x00" * 32), net.now)  # unknown: nothing to do


def test_config_is_checked() -> None:
    for bad in (
        {"d": 3, "d_low": 4},
        {"d_high": 2},
        {"history_gossip": 6},
        {"prune_backoff": 4000},
        {"score_decay": 0.0},
        {"drop_score": 1.0},
        {"penalties": {}},
        {"heartbeat": 0.0},
        {"max_wants": 0},
        {"max_seen": 10, "max_pending": 10},
        {"want_attempts": 0},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - any of several messages
            GossipConfig(**bad)  # type: ignore[arg-type]  # deliberately mixed kwargs


def test_queries_and_statistics() -> None:
    net = Net(GossipConfig(sync=SyncConfig(interval=30.0)))
    a, b = net.node(1), net.node(2)
    net.connect(a, b)
    assert a.gossip.local == a.key
    assert a.gossip.peers() == [b.key]
    assert a.gossip.shared_topics(PeerId(b"\x00" * 32)) == frozenset()
    assert a.gossip.mesh(Topic(OTHER.id)) == []
    assert a.gossip.score(PeerId(b"\x00" * 32)) == 0.0
    assert a.gossip.next_deadline() == net.now + net.config.heartbeat
    assert a.gossip.tick(net.now) == []  # not due: nothing happens
    stats = a.gossip.statistics()
    assert isinstance(stats, GossipStatistics)
    assert stats.messages_out > 0
    assert stats.bytes_out > 0


# -- edge paths --------------------------------------------------------------------


def test_publishing_a_bulletin_the_node_also_received() -> None:
    net = Net()
    hub, leaf = net.node(1), net.node(2)
    net.connect(hub, leaf)
    rogue = member_rogue(net, hub)
    hub.verdict = None
    pending, held, wanted = chain(3, identity(9))
    net.send(rogue, hub, wire.encode_bulletins([pending.raw]))
    hub.gossip.publish(pending, net.now)  # the node's verdict, by publishing it
    hub.holdings.add(held)
    hub.verdict = lambda b: True
    net.send(rogue, hub, wire.encode_bulletins([held.raw]))  # seen as already held
    hub.gossip.publish(held, net.now)
    net.send(rogue, hub, wire.encode(wire.Announce(topic=TC, ids=(BulletinId(wanted.id),))))
    hub.holdings.add(wanted)
    hub.gossip.publish(wanted, net.now)  # it was wanted: the want is dropped
    net.pump()
    assert bulletins_in(net.sent_to(leaf.key)) == {pending.raw, held.raw, wanted.raw}
    stats = hub.gossip.statistics()
    assert (stats.published, stats.accepted) == (2, 1)  # publishing a pending one accepts it


def test_one_more_copy_from_the_peer_we_asked_is_no_replay() -> None:
    net = Net()
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    b = seal(identity(9))
    net.send(rogue, hub, wire.encode(wire.Announce(topic=TC, ids=(BulletinId(b.id),))))
    data = wire.encode_bulletins([b.raw])
    net.send(rogue, hub, data)  # the answer
    net.send(rogue, hub, data)  # its push, racing the answer
    assert hub.gossip.score(rogue.key) == 0
    net.send(rogue, hub, data)
    assert hub.gossip.score(rogue.key) == -net.config.penalties[Offence.REPLAY]


def test_a_peer_sharing_nothing_is_dropped_mid_batch() -> None:
    net = Net()
    hub = net.node(1)
    silent = net.rogue(10)
    net.connect(hub, silent)
    events = net.send(silent, hub, wire.encode_bulletins([b.raw for b in chain(12, identity(10))]))
    assert [type(e) for e in events] == [DropPeer]
    assert hub.gossip.penalize(silent.key, Offence.FLOOD, net.now) == []  # dropped: no more


def test_sync_overflowing_the_want_table_schedules_a_retry() -> None:
    config = GossipConfig(max_wants=2)
    net = Net(config)
    hub = net.node(1)
    # a rogue with the smaller key: the hub does not open reconciliations with it itself
    n = next(n for n in range(20, 60) if identity(n).public_key < hub.key)
    rogue = member_rogue(net, hub, n)
    assert not any(isinstance(m, wire.Sync) for m in rogue.inbox)
    ids = tuple(BulletinId(bytes([i]) * 32) for i in range(1, 6))
    diff = wire.SyncRange(upper=wire.INFINITY, mode=wire.RangeMode.DIFF, ids=ids)
    net.send(rogue, hub, wire.encode(wire.Sync(topic=TC, opened_by_sender=True, ranges=(diff,))))
    assert hub.gossip.statistics().want_overflows == 3
    rogue.inbox.clear()
    net.advance(config.sync.retry + config.heartbeat)
    opened = [m for m in rogue.inbox if isinstance(m, wire.Sync) and m.opened_by_sender]
    assert [m.topic for m in opened] == [TC]
    in_sync = wire.Sync(topic=TC, opened_by_sender=False, ranges=())
    events = net.send(rogue, hub, wire.encode(in_sync))
    assert events == [SyncCompleted(peer=rogue.key, topic=TC, rounds=1, missing=0)]


def test_wants_survive_their_peers() -> None:
    config = GossipConfig(max_inflight=1)
    net = Net(config)
    hub = net.node(1)
    r1, r2 = member_rogue(net, hub, 8), member_rogue(net, hub, 9)
    first, second, third = chain(3, identity(9))
    ids = (BulletinId(first.id), BulletinId(second.id), BulletinId(third.id))
    net.send(r1, hub, wire.encode(wire.Announce(topic=TC, ids=ids)))
    asked = [m.ids for m in r1.inbox if isinstance(m, wire.Want)]
    assert asked == [ids[:1]]  # one in flight, two queued
    net.send(r2, hub, wire.encode(wire.Announce(topic=TC, ids=ids[:1])))
    net.send(r2, hub, wire.encode_bulletins([second.raw]))  # a queued one arrives unasked
    hub.gossip.remove_peer(r1.key, net.now)
    net.pump()
    # the one asked of r1 moves to r2, the satisfied one is forgotten, the last is given up
    assert [m.ids for m in r2.inbox if isinstance(m, wire.Want)] == [ids[:1]]
    net.send(r2, hub, wire.encode_bulletins([first.raw]))
    assert hub.holdings.ids(TC) == {first.id, second.id}


def test_inflight_slots_free_on_arrival_and_on_timeout() -> None:
    config = GossipConfig(max_inflight=1)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    bulletins = chain(4, identity(9))
    ids = tuple(BulletinId(b.id) for b in bulletins)
    net.send(rogue, hub, wire.encode(wire.Announce(topic=TC, ids=ids)))
    net.send(rogue, hub, wire.encode_bulletins([bulletins[2].raw]))  # a queued one, unasked
    net.send(rogue, hub, wire.encode_bulletins([bulletins[0].raw]))  # the asked one: slot free
    wants = [m.ids for m in rogue.inbox if isinstance(m, wire.Want)]
    assert wants == [ids[:1], ids[1:2]]
    net.advance(config.want_timeout + config.heartbeat)  # ids[1] times out: ids[3] goes out
    wants = [m.ids for m in rogue.inbox if isinstance(m, wire.Want)]
    assert wants[2:] == [ids[3:4]]  # ids[1] queued again behind it
    net.advance(config.want_timeout + config.heartbeat)
    wants = [m.ids for m in rogue.inbox if isinstance(m, wire.Want)]
    assert wants[3:] == [ids[1:2]]


def test_a_want_is_given_up_after_its_attempts() -> None:
    net = Net()
    hub = net.node(1)
    r1, r2 = member_rogue(net, hub, 8), member_rogue(net, hub, 9)
    bid = BulletinId(seal(identity(9)).id)
    for rogue in (r1, r2):
        net.send(rogue, hub, wire.encode(wire.Announce(topic=TC, ids=(bid,))))
    hub.gossip.remove_peer(r2.key, net.now)  # a candidate that left is skipped
    net.advance(10 * net.config.want_timeout)
    asked = [m for m in r1.inbox if isinstance(m, wire.Want)]
    assert len(asked) == net.config.want_attempts
    assert hub.gossip.statistics().want_timeouts == net.config.want_attempts


def test_full_outbox_refuses_messages() -> None:
    net = Net(GossipConfig(max_outbox=400))
    a, b = net.node(1), net.node(2)
    net.connect(a, b)
    deposit = wire.Deposit(recipient=bytes(b.key), raws=(b"\x01" * 300,))
    assert a.gossip.send(b.key, deposit)
    assert not a.gossip.send(b.key, deposit)
    assert a.gossip.statistics().outbox_drops == 1


def test_accepting_after_unsubscribing_relays_nothing() -> None:
    net = Net()
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    hub.verdict = None
    pushed, synced = chain(2, identity(9))
    net.send(rogue, hub, wire.encode_bulletins([pushed.raw]))
    ids = (BulletinId(synced.id),)
    diff = wire.SyncRange(upper=wire.INFINITY, mode=wire.RangeMode.DIFF, ids=ids)
    net.send(rogue, hub, wire.encode(wire.Sync(topic=TC, opened_by_sender=True, ranges=(diff,))))
    net.send(rogue, hub, wire.encode_bulletins([synced.raw]))
    hub.gossip.unsubscribe(TC, now=net.now)
    assert hub.gossip.accept(pushed.id, net.now)
    assert hub.gossip.accept(synced.id, net.now)
    net.advance(2)
    assert not any(isinstance(m, (wire.Bulletins, wire.Announce)) for m in rogue.inbox)


def test_pending_entries_survive_seen_cache_eviction() -> None:
    config = GossipConfig(max_seen=3, max_pending=2)
    net = Net(config)
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    hub.verdict = None
    first, *rest = chain(5, identity(9))
    net.send(rogue, hub, wire.encode_bulletins([first.raw]))
    for b in rest:
        net.send(rogue, hub, wire.encode_bulletins([b.raw]))
        assert hub.gossip.accept(b.id, net.now)
    assert first.id in hub.gossip._intake.seen
    net.send(rogue, hub, wire.encode_bulletins([first.raw]))  # still a known duplicate
    assert hub.gossip.statistics().received == 5


def test_a_graft_penalty_can_drop() -> None:
    penalties = {**GossipConfig().penalties, Offence.GRAFT_BACKOFF: 100.0}
    net = Net(GossipConfig(penalties=penalties))
    hub = net.node(1)
    rogue = member_rogue(net, hub)
    net.send(rogue, hub, wire.encode(wire.Prune(topic=TC, backoff=30)))
    events = net.send(rogue, hub, wire.encode(wire.Graft(topic=TC)))
    assert [type(e) for e in events] == [DropPeer]
    assert not any(isinstance(m, wire.Prune) for m in rogue.inbox)


# -- fair fetching ------------------------------------------------------------------


def _fake_ids(n: int, salt: int = 0) -> tuple[BulletinId, ...]:
    return tuple(BulletinId(bytes([salt, i % 256, i // 256]) * 10 + b"\x00\x00") for i in range(n))


def test_a_flooding_announcer_cannot_starve_honest_fetches() -> None:
    net = Net(GossipConfig(max_wants=8, max_wants_per_peer=4, max_wants_per_topic=8))
    hub = net.node(1)
    flooder, honest = member_rogue(net, hub, 8), member_rogue(net, hub, 9)
    net.send(flooder, hub, wire.encode(wire.Announce(topic=TC, ids=_fake_ids(50))))
    assert hub.gossip.statistics().want_overflows == 46  # its share is 4
    real = seal(identity(9))
    net.send(honest, hub, wire.encode(wire.Announce(topic=TC, ids=(BulletinId(real.id),))))
    (want,) = [m for m in honest.inbox if isinstance(m, wire.Want)]
    assert want.ids == (real.id,)
    net.send(honest, hub, wire.encode_bulletins([real.raw]))
    assert hub.holdings.has(real.id)


def test_one_topic_cannot_take_every_want() -> None:
    net = Net(GossipConfig(max_wants_per_topic=3))
    hub = net.node(1)
    flooder, honest = member_rogue(net, hub, 8), member_rogue(net, hub, 9)
    net.send(flooder, hub, wire.encode(wire.Announce(topic=PUBLIC_TOPIC, ids=_fake_ids(10))))
    real = seal(identity(9))
    net.send(honest, hub, wire.encode(wire.Announce(topic=TC, ids=(BulletinId(real.id),))))
    assert any(isinstance(m, wire.Want) and m.topic == TC for m in honest.inbox)


def test_announcements_never_delivered_cost_the_announcer() -> None:
    config = GossipConfig(broken_promises=2.0)
    net = Net(config)
    hub = net.node(1)
    liar = member_rogue(net, hub, 8)
    for round_ in range(40):
        if any(isinstance(e, DropPeer) for e in hub.events):
            break
        ids = _fake_ids(50, salt=round_ + 1)
        net.send(liar, hub, wire.encode(wire.Announce(topic=TC, ids=ids)))
        net.advance(config.want_timeout + config.heartbeat)
    (dropped,) = hub.of(DropPeer)
    assert Offence.UNANSWERED.value in dropped.reason  # type: ignore[attr-defined]


def test_ids_learnt_by_sync_cost_nothing_when_not_served() -> None:
    """A peer may have evicted what its ranges listed: a sync want that times out is
    not charged, an announced one (beyond the allowance) is."""
    config = GossipConfig(broken_promises=0.0)
    net = Net(config)
    hub = net.node(1)
    peer = member_rogue(net, hub, 8)
    synced, announced = _fake_ids(2)
    diff = wire.SyncRange(upper=wire.INFINITY, mode=wire.RangeMode.DIFF, ids=(synced,))
    net.send(peer, hub, wire.encode(wire.Sync(topic=TC, opened_by_sender=True, ranges=(diff,))))
    assert [m.ids for m in peer.inbox if isinstance(m, wire.Want)] == [(synced,)]
    net.advance(config.want_timeout + config.heartbeat)
    assert hub.gossip.statistics().want_timeouts == 1
    assert hub.gossip.score(peer.key) == 0
    net.send(peer, hub, wire.encode(wire.Announce(topic=TC, ids=(announced,))))
    net.advance(config.want_timeout + config.heartbeat)
    assert hub.gossip.score(peer.key) < 0  # charged (then decayed for a heartbeat)


# -- copies: DONTWANT and the second wave ---------------------------------------------

COPIES = GossipConfig(d=6, d_low=4, d_high=12, flood_publish=False, stagger_size=1024)


def clique(n: int, config: GossipConfig = COPIES) -> tuple[Net, list[Node]]:
    net = Net(config)
    nodes = [net.node(10 + i) for i in range(n)]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            net.connect(a, b)
    return net, nodes


def copies_received(net: Net, node: Node, bulletin: Bulletin) -> int:
    return sum(
        1
        for _, dst, data in net.log
        if dst == node.key
        and isinstance(m := wire.decode(data), wire.Bulletins)
        and bulletin.raw in m.raws
    )


def test_a_relay_pushes_to_d_eager_peers_then_to_those_still_lacking_it() -> None:
    """The first wave goes to ``d_eager`` mesh peers; the second, ``stagger`` later, only
    to those that neither sent the bulletin nor said DONTWANT: here every peer had it
    from the first wave's relays by then, so the second wave sends nothing."""
    net, nodes = clique(7)
    source = nodes[0]
    b = seal(identity(1), text="x" * 1024)
    source.holdings.add(b)
    source.gossip.publish(b, net.now)
    net.pump()
    assert all(n.holdings.has(b.id) for n in nodes)
    pushed_now = sum(n.gossip.statistics().pushed for n in nodes)
    net.advance(COPIES.stagger, step=COPIES.stagger)
    stats = [n.gossip.statistics() for n in nodes]
    assert sum(s.pushed for s in stats) == pushed_now
    assert sum(s.spared for s in stats) > 0
    assert sum(s.dontwants_sent for s in stats) > 0
    # every member got about d_eager copies at most, not one per mesh peer
    for node in nodes[1:]:
        assert copies_received(net, node, b) <= COPIES.d_eager + 1


def test_the_second_wave_reaches_a_peer_the_first_missed() -> None:
    """A first wave that meets only peers relaying nothing is repaired by the second."""
    config = GossipConfig(
        d=6, d_low=4, d_high=12, flood_publish=False, d_eager=1, stagger_size=1024
    )
    net = Net(config)
    hub = net.node(1)
    leaves = [net.node(10 + i) for i in range(4)]
    for leaf in leaves:
        net.connect(hub, leaf)
    for leaf in leaves:
        leaf.verdict = None  # (holds it pending: relays nothing)
    source = net.rogue(9)
    net.connect(hub, source)
    net.send(source, hub, source.hello())
    b = seal(identity(2), text="y" * 1024)
    net.send(source, hub, wire.encode(wire.Bulletins(raws=(b.raw,))))
    first = {dst for _, dst, data in net.log if isinstance(wire.decode(data), wire.Bulletins)}
    assert len(first & {leaf.key for leaf in leaves}) == 1
    net.advance(config.stagger, step=config.stagger)
    assert all(leaf.received() == [b] for leaf in leaves)


def test_small_bulletins_go_to_every_mesh_peer_at_once() -> None:
    """Below ``stagger_size`` a bulletin goes in one wave, with no DONTWANT."""
    net, nodes = clique(7)
    source = nodes[1]
    small = seal(identity(1), text="hi")
    source.holdings.add(small)
    relay = nodes[0]
    relay.gossip.receive_data(source.key, wire.encode(wire.Bulletins(raws=(small.raw,))), net.now)
    relay.holdings.add(small)
    relay.gossip.accept(small.id, net.now)
    sent = relay.gossip.data_to_send()
    pushed = {dst for dst, data in sent if isinstance(wire.decode(data), wire.Bulletins)}
    assert pushed == set(relay.gossip.mesh(TC)) - {source.key}
    assert not any(isinstance(wire.decode(data), wire.DontWant) for _, data in sent)


def test_dontwant_is_remembered_per_peer_and_bounded() -> None:
    config = GossipConfig(max_dontwant=4, flood_publish=False, d_eager=1, stagger_size=1024)
    net = Net(config)
    hub = net.node(1)
    rogue = net.rogue(9)
    net.connect(hub, rogue)
    net.send(rogue, hub, rogue.hello())
    assert rogue.key in hub.gossip.mesh(TC)
    ids = [BulletinId(bytes([i]) * 32) for i in range(10)]
    net.send(rogue, hub, wire.encode(wire.DontWant(ids=tuple(ids))))
    # the newest four are remembered: a bulletin among them is not pushed to the peer
    told = seal(identity(3), text="z" * 1024)
    net.send(rogue, hub, wire.encode(wire.DontWant(ids=(BulletinId(told.id),))))
    hub.holdings.add(told)
    hub.gossip.publish(told, net.now)
    net.pump()
    assert not any(
        isinstance(m, wire.Bulletins) and told.raw in m.raws for m in rogue.inbox
    )
    assert hub.gossip.score(rogue.key) == 0
