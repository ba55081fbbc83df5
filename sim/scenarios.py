"""The scenarios of docs/performance.md, "Simulation": what each builds, runs and measures.

Every scenario has the same timeline, in simulated seconds:
- t = 0: the honest network stands. Each node has dialled ``D_LOW`` random nodes
  (as ``Node._fill_overlay`` does on joining) and each channel member has
  dialled random members until it shares the channel with ``D`` of them (as
  ``Node._find_members`` does with what the rendezvous record lists).
- t = 1 to 3: adversaries, if any, arrive and dial in; churners start leaving.
- t = 10: ``bulletins`` public bulletins, one every 0.25 s, each by another author.
- t = 30: ``bulletins`` channel bulletins the same way.
- t = 50: churners are all back (they may leave again until then); the run goes
  on until every honest subscriber holds every bulletin (and every direct
  bulletin reached its recipient), or ``horizon``.

Bytes are the session payload bytes the honest nodes send; those sent in
[10, 30) are charged to the public bulletins and those in [30, 50) to the
channel's (nothing but those bulletins is in flight then: anti-entropy runs at
t = 0 and every 60 s).
"""

from __future__ import annotations

import functools
import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel, day_of
from meshnode.core.gossip import GossipConfig, channel_keys, plan_overlay
from meshnode.core.identity import Identity
from meshnode.core.records import RendezvousRecord, rendezvous_key_for_tag
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId, PeerId, Topic
from sim.internet import (
    T0,
    Internet,
    InternetConfig,
    NetNode,
    Role,
    junk_frames,
    shared_verdicts,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

D_LOW: Final = GossipConfig().d_low
D: Final = GossipConfig().d
D_HIGH: Final = GossipConfig().d_high
PUBLIC_AT: Final = 10.0
CHANNEL_AT: Final = 30.0
QUIET_AT: Final = 50.0
SPACING: Final = 0.25
BODY: Final = b"x" * 1024
RENDEZVOUS_ENTRIES: Final = 32
OVERLAY_INTERVAL: Final = 60.0
"""``NodeConfig.overlay_interval``."""


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One run: how many of each kind of node, and the network's conditions."""

    name: str
    nodes: int
    """Honest nodes."""
    members: int = 1000
    """Honest nodes in the channel (at most ``nodes``)."""
    loss: float = 0.01
    bulletins: int = 10
    """Bulletins per topic."""
    churn: float = 0.0
    """The share of honest nodes that leave and come back."""
    direct: int = 0
    """Direct bulletins sent to churners while they are away."""
    silent: int = 0
    flooders: int = 0
    eclipsers: int = 0
    horizon: float = 400.0
    seed: bytes = b"meshnode sim"


@dataclass(frozen=True, kw_only=True)
class TopicFigures:
    """What one topic's bulletins did, over the honest subscribers."""

    subscribers: int
    bulletins: int
    delivered: float
    """Share of (subscriber, bulletin) pairs delivered by the end of the run."""
    p50: float
    p95: float
    p99: float
    max: float
    bytes_per_node: float
    """Session bytes sent per honest subscriber per bulletin."""


@dataclass(kw_only=True)
class Result:
    """A scenario's figures (simulated seconds unless said otherwise)."""

    scenario: Scenario
    public: TopicFigures
    channel: TopicFigures
    end: float
    """When every delivery had happened (or the horizon)."""
    segments_lost: int
    payloads: int
    lookups: int
    lookup_mean: float
    dials: int
    failed_dials: int
    drops: int
    """Sessions honest nodes closed for misbehaviour."""
    offences: int
    extra: dict[str, float] = field(default_factory=dict)
    """Scenario-specific figures (churn, direct mail, the eclipse target)."""
    cpu: float
    """Process CPU seconds the run took (build included)."""
    events: int

    def record(self) -> dict[str, object]:
        """A JSON-ready summary."""
        s = self.scenario
        return {
            "name": s.name,
            "nodes": s.nodes,
            "members": min(s.members, s.nodes),
            "loss": s.loss,
            "churn": s.churn,
            "adversaries": {"silent": s.silent, "flooders": s.flooders, "eclipsers": s.eclipsers},
            "public": vars(self.public),
            "channel": vars(self.channel),
            "end": round(self.end, 3),
            "segments_lost": self.segments_lost,
            "payloads": self.payloads,
            "lookups": self.lookups,
            "lookup_mean": round(self.lookup_mean, 3),
            "dials": self.dials,
            "failed_dials": self.failed_dials,
            "drops": self.drops,
            "offences": self.offences,
            "extra": self.extra,
            "cpu_seconds": round(self.cpu, 1),
            "events": self.events,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of an ascending list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


class World:
    """A scenario built on an :class:`Internet`: its nodes, channel and plan."""

    def __init__(self, scenario: Scenario) -> None:
        self._started = time.process_time()
        """CPU time when building began: ``Result.cpu`` counts the build too."""
        self.scenario = s = scenario
        self.rng = random.Random(s.seed)
        self.net = Internet(seed=s.seed, net=InternetConfig(loss=s.loss))
        self.channel = Channel.from_secret("simulated", self.rng.randbytes(32))
        self.topic = Topic(self.channel.id)
        self.honest: list[NetNode] = []
        self.members: list[NetNode] = []
        self.churners: list[NetNode] = []
        self.bytes_at: dict[float, int] = {}
        self.eclipsed: NetNode | None = None
        self.closed_idle = 0
        """Sessions given up by overlay rounds because they relayed nothing."""
        self.sybils: list[NetNode] = []
        keys = channel_keys(self.channel)
        mail = s.direct > 0
        members = min(s.members, s.nodes)
        for i in range(s.nodes):
            identity = Identity.from_seed(self.rng.randbytes(32), f"honest {i}")
            topics: dict[Topic, Sequence[bytes]] = {PUBLIC_TOPIC: ()}
            if i < members:
                topics[self.topic] = keys
            node = self.net.add_member(identity, topics, mail=mail)
            self.honest.append(node)
            if i < members:
                self.members.append(node)
        self.member_keys = frozenset(m.key for m in self.members)
        self._overlay()
        tag = self.channel.rendezvous_tag(day_of(T0))
        self.rendezvous = rendezvous_key_for_tag(tag)
        self.net.publish_rendezvous(tag, self.rng.sample(self.members, RENDEZVOUS_ENTRIES)
                                    if len(self.members) > RENDEZVOUS_ENTRIES else self.members)
        if s.churn:
            self._plan_churn()
        self._plan_posts()
        if s.silent or s.flooders or s.eclipsers:
            self._plan_adversaries()

    # -- the network at t = 0 ---------------------------------------------------------

    def _overlay(self) -> None:
        net, rng = self.net, self.rng
        honest = self.honest
        for node in honest:
            dialled = tries = 0
            while dialled < D_LOW and tries < 4 * D_LOW:
                tries += 1
                peer = honest[rng.randrange(len(honest))]
                if peer is not node and net.link(node.key, peer.key):
                    dialled += 1
        keys = [m.key for m in self.members]
        shares: dict[PeerId, int] = dict.fromkeys(keys, 0)
        order = list(keys)
        rng.shuffle(order)
        for key in order:
            tries = 0
            while shares[key] < D and tries < 4 * D:
                tries += 1
                other = keys[rng.randrange(len(keys))]
                if other != key and net.link(key, other):
                    shares[key] += 1
                    shares[other] += 1

    # -- bulletins ----------------------------------------------------------------------

    def _plan_posts(self) -> None:
        s, net, rng = self.scenario, self.net, self.rng
        calm = [n for n in self.honest if n not in self.churners]
        authors = rng.sample(calm, min(len(calm), s.bulletins))
        channel_authors = rng.sample(self.members, min(len(self.members), s.bulletins))
        for i, author in enumerate(authors):
            self._post(author, None, PUBLIC_AT + SPACING * i)
        for i, author in enumerate(channel_authors):
            self._post(author, self.channel, CHANNEL_AT + SPACING * i)
        for when in (PUBLIC_AT, CHANNEL_AT, QUIET_AT):
            net.at(when, functools.partial(self._count_bytes, when))

    def _post(self, author: NetNode, channel: Channel | None, when: float) -> None:
        assert author.identity is not None
        bulletin = Bulletin.seal(
            author.identity, channel, BODY, seq=1, prev=None, now=T0 + int(when),
            rng=self.rng.randbytes,
        )
        self.net.at(when, lambda: self.net.publish(author.key, bulletin))

    def _count_bytes(self, when: float) -> None:
        self.bytes_at[when] = sum(n.bytes_sent for n in self.honest)

    # -- churn --------------------------------------------------------------------------

    def _plan_churn(self) -> None:
        s, rng = self.scenario, self.rng
        self.churners = rng.sample(self.honest, int(s.churn * len(self.honest)))
        for node in self.churners:
            t = rng.uniform(1.0, 20.0)
            while t < QUIET_AT - 5.0:
                away = rng.uniform(5.0, 20.0)
                back = min(t + away, QUIET_AT)
                self.net.at(t, functools.partial(self.leave, node))
                self.net.at(back, functools.partial(self.rejoin, node))
                t = back + rng.expovariate(1 / 15.0)
        if s.direct:
            senders = [n for n in self.honest if n not in self.churners]
            for i in range(s.direct):
                self._send_direct(rng.choice(senders), rng.choice(self.churners), i)

    def _send_direct(self, sender: NetNode, recipient: NetNode, i: int) -> None:
        assert sender.identity is not None
        assert recipient.identity is not None
        when = PUBLIC_AT + 1.0 * i
        bulletin = Bulletin.seal(
            sender.identity, [recipient.identity.public_key], BODY, seq=1, prev=None,
            now=T0 + int(when), rng=self.rng.randbytes,
        )

        def send() -> None:
            if sender.online:
                self.net.send_direct(sender.key, bulletin, recipient.key)

        self.net.at(when, send)

    def leave(self, node: NetNode) -> None:
        """The node goes away. Honest peers that lost a session to it run an overlay
        round at their next ``overlay_interval`` (at a random phase)."""
        peers = self.net.neighbours(node.key)
        self.net.leave(node.key)
        for key in peers:
            self._lost_session(key)

    def _lost_session(self, key: bytes) -> None:
        peer = self.net.nodes[PeerId(key)]
        if isinstance(peer, NetNode) and peer.role is Role.HONEST:
            when = self.net.now + self.rng.uniform(0.0, OVERLAY_INTERVAL)
            self.net.at(when, functools.partial(self.overlay_round, peer, peer.generation))

    def overlay_round(self, node: NetNode, generation: int) -> None:
        """One round of ``Presence._fill_overlay``: ``plan_overlay`` over the node's
        sessions, serving as its gossip machine counts them; the sessions it names are
        closed, then :meth:`refill` dials."""
        net = self.net
        if not node.online or node.generation != generation:
            return
        sessions = [
            node.gossip.overlay_session(p, outbound=p not in node.inbound, opened=node.opened[p])
            for p in net.neighbours(node.key)
        ]
        plan = plan_overlay(sessions, d_low=D_LOW, d_high=D_HIGH, now=net.now,
                            grace=OVERLAY_INTERVAL / 2)
        for peer in plan.close:
            if net.disconnect(node.key, peer):
                self.closed_idle += 1
                self._lost_session(peer)
        self.refill(node, generation, plan.keep)

    def refill(self, node: NetNode, generation: int, keep: int, _: bool = True) -> None:
        """The dialling of an overlay round: random nodes of the routing table (Sybils
        too, once they are in the network), one at a time, up to ``keep`` sessions."""
        net = self.net
        if not node.online or node.generation != generation:
            return
        if len(net.neighbours(node.key)) >= keep:
            return
        table = self.honest + self.sybils
        peer = node
        while peer is node:
            peer = table[self.rng.randrange(len(table))]
        net.dial(node.key, peer.key, functools.partial(self.refill, node, generation, keep))

    def overlay_rounds(self, node: NetNode, generation: int) -> None:
        """``Presence.run_presence`` of a node that came back: an overlay round now and
        every ``overlay_interval`` after."""
        if node.online and node.generation == generation:
            self.overlay_round(node, generation)
            self.net.at(self.net.now + OVERLAY_INTERVAL,
                        functools.partial(self.overlay_rounds, node, generation))

    def rejoin(self, node: NetNode) -> None:
        """The node comes back: a new process that finds its peers as the trio node does
        (DHT bootstrap, then channel members from the rendezvous record, then the
        overlay from its routing table, one dial at a time) and collects its mail."""
        net, rng = self.net, self.rng
        if node.online:
            return
        net.restart(node.key)
        generation = node.generation

        def live() -> bool:
            return node.online and node.generation == generation

        def fill_overlay() -> None:
            self.overlay_rounds(node, generation)

        def find_members() -> None:
            if not live():
                return
            if self.topic not in node.topics:
                fill_overlay()
                return
            record = net.find(self.rendezvous)
            found = record.contacts if isinstance(record, RendezvousRecord) else ()
            keys = [c.group_key for c in found if c.group_key != node.key]
            rng.shuffle(keys)

            def next_member(_: bool = True) -> None:
                if not live():
                    return
                sharing = sum(1 for p in net.neighbours(node.key) if p in self.member_keys)
                if sharing >= D or not keys:
                    fill_overlay()
                    return
                net.dial(node.key, keys.pop(), next_member)

            next_member()

        def bootstrapped() -> None:
            if live():
                net.lookup(find_members)

        net.lookup(bootstrapped)  # bootstrap (our own id), then the rendezvous
        net.collect_mail(node.key)

    # -- adversaries --------------------------------------------------------------------

    def _plan_adversaries(self) -> None:
        s, net, rng = self.scenario, self.net, self.rng
        kinds = [Role.SILENT] * s.silent + [Role.FLOODER] * s.flooders
        for i, role in enumerate(kinds + [Role.SILENT] * s.eclipsers):
            identity = Identity.from_seed(self.rng.randbytes(32), f"sybil {i}")
            self.sybils.append(net.add_member(identity, {PUBLIC_TOPIC: ()}, role=role))
        crowd = self.sybils[len(kinds):]
        for sybil in self.sybils[: len(kinds)]:
            start = rng.uniform(1.0, 3.0)
            for peer in rng.sample(self.honest, D_LOW):
                then = self._opened(sybil, peer)
                net.at(start, functools.partial(net.dial, sybil.key, peer.key, then))
        if crowd:
            calm = [m for m in self.members if m not in self.churners]
            target = self.eclipsed = rng.choice(calm)
            net.at(2.0, functools.partial(self.leave, target))

            def back() -> None:
                self.rejoin(target)
                for sybil in crowd:  # they watch for it and dial at once
                    net.dial(sybil.key, target.key)

            net.at(4.0, back)

    def _opened(self, sybil: NetNode, peer: NetNode) -> Callable[[bool], None]:
        """What a flooder does once its session opens: junk after a while, and when the
        peer drops it, dial again (until the run goes quiet)."""
        net, rng = self.net, self.rng
        if sybil.role is not Role.FLOODER:
            return lambda ok: None
        assert sybil.identity is not None
        sample = Bulletin.seal(
            sybil.identity, None, b"junk", seq=1, prev=None, now=T0, rng=rng.randbytes
        )
        frames = junk_frames(sample)

        def opened(ok: bool) -> None:
            if not ok or net.now > QUIET_AT:
                return
            net.at(net.now + rng.uniform(0.5, 5.0), push)

        def push() -> None:
            if net.connected(sybil.key, peer.key):
                net.flood(sybil.key, peer.key, frames)
            net.at(net.now + 3.0, lambda: net.dial(sybil.key, peer.key, opened))

        return opened

    # -- running ------------------------------------------------------------------------

    def done(self) -> bool:
        """Every honest subscriber holds every bulletin and every direct bulletin arrived."""
        if self.net.missing_honest():
            return False
        return all(m.taken_at is not None for m in self.net.mail.values())

    def run(self) -> Result:
        s, net = self.scenario, self.net
        with shared_verdicts():
            net.run(s.horizon, stop=lambda: net.now > QUIET_AT and self.done(), check_every=1.0)
        return self.figures(time.process_time() - self._started)

    def figures(self, cpu: float) -> Result:
        s, net = self.scenario, self.net
        stats = net.statistics()
        public_bytes = self.bytes_at.get(CHANNEL_AT, 0) - self.bytes_at.get(PUBLIC_AT, 0)
        channel_bytes = self.bytes_at.get(QUIET_AT, 0) - self.bytes_at.get(CHANNEL_AT, 0)
        extra: dict[str, float] = {}
        public = self._topic(PUBLIC_TOPIC, self.honest, public_bytes)
        channel = self._topic(self.topic, self.members, channel_bytes)
        if self.churners:
            churned = self._latencies(self.churners, (PUBLIC_TOPIC, self.topic))
            extra["churners"] = len(self.churners)
            extra["churner_p50"] = round(percentile(churned, 0.5), 3)
            extra["churner_max"] = round(churned[-1] if churned else 0.0, 3)
            back = self._topic(PUBLIC_TOPIC, self.churners, 0)
            extra["churner_public_delivered"] = back.delivered
        if net.mail:
            taken = sorted(m.taken_at - m.sent_at for m in net.mail.values()
                           if m.taken_at is not None)
            extra["direct"] = len(net.mail)
            extra["direct_delivered"] = round(len(taken) / len(net.mail), 4)
            extra["direct_p50"] = round(percentile(taken, 0.5), 3)
            extra["direct_max"] = round(taken[-1] if taken else 0.0, 3)
        if self.eclipsed is not None:
            mesh = self.eclipsed.gossip.mesh(PUBLIC_TOPIC)
            sybil_keys = {n.key for n in self.sybils}
            extra["eclipsed_mesh"] = len(mesh)
            extra["eclipsed_mesh_sybils"] = sum(1 for k in mesh if k in sybil_keys)
            extra["eclipsed_sessions"] = len(net.neighbours(self.eclipsed.key))
            own = self._latencies([self.eclipsed], (PUBLIC_TOPIC,))
            extra["eclipsed_public_p50"] = round(percentile(own, 0.5), 3)
            extra["eclipsed_public_max"] = round(own[-1] if own else 0.0, 3)
        if self.sybils:
            extra["flood_payloads"] = net.flood_sent
            extra["closed_idle"] = self.closed_idle
            sybil_keys = {n.key for n in self.sybils}
            extra["honest_only_among_sybils"] = sum(
                1 for n in self.honest
                if all(p in sybil_keys for p in net.neighbours(n.key))
            )
        latest = max((t for n in self.honest for t in n.arrivals.values()), default=0.0)
        return Result(
            scenario=s,
            public=public,
            channel=channel,
            end=latest,
            segments_lost=stats.payloads_lost,
            payloads=stats.payloads_sent,
            lookups=net.lookups,
            lookup_mean=net.lookup_time / net.lookups if net.lookups else 0.0,
            dials=net.dials,
            failed_dials=net.failed_dials,
            drops=sum(len(n.drops) for n in self.honest),
            offences=sum(n.gossip.statistics().offences for n in self.honest),
            extra=extra,
            cpu=cpu,
            events=stats.events,
        )

    def _latencies(self, nodes: Sequence[NetNode], topics: Sequence[Topic]) -> list[float]:
        out: list[float] = []
        published = self.net.published_at
        wanted = {b for t in topics for b in self.net.published.get(t, [])}
        for node in nodes:
            for bid, when in node.arrivals.items():
                start = published.get(BulletinId(bid))
                if start is not None and bid in wanted and when > start:
                    out.append(when - start)
        out.sort()
        return out

    def _topic(self, topic: Topic, nodes: Sequence[NetNode], sent: int) -> TopicFigures:
        ids = self.net.published.get(topic, [])
        expected = len(ids) * len(nodes)
        got = sum(1 for n in nodes for b in ids if b in n.arrivals)
        lat = self._latencies(nodes, (topic,))
        return TopicFigures(
            subscribers=len(nodes),
            bulletins=len(ids),
            delivered=round(got / expected, 5) if expected else 1.0,
            p50=round(percentile(lat, 0.5), 4),
            p95=round(percentile(lat, 0.95), 4),
            p99=round(percentile(lat, 0.99), 4),
            max=round(lat[-1], 4) if lat else 0.0,
            bytes_per_node=round(sent / len(nodes) / len(ids), 1) if ids and nodes else 0.0,
        )


def run(scenario: Scenario) -> Result:
    """Build and run one scenario."""
    return World(scenario).run()


def record_of(scenario: Scenario) -> dict[str, object]:
    """Run one scenario and return its JSON record with the wall time it took (the
    CLI's worker: it says on stderr when each run ends)."""
    started = time.monotonic()
    record = run(scenario).record()
    record["wall_seconds"] = round(time.monotonic() - started, 1)
    print(
        f"  {scenario.name}: done in {record['wall_seconds']} s "
        f"({record['cpu_seconds']} s CPU)",
        file=sys.stderr,
        flush=True,
    )
    return record
