"""A deterministic discrete-event simulation of many nodes running the real gossip machine.

Rules:
1. No I/O, no clock, no randomness of its own: time is simulated, and every
   choice (loss, latency, session ids, each node's rng) comes from one
   SeededRng, so a seed replays the same run exactly.
2. Each node is the real :class:`~meshnode.core.gossip.Gossip` over
   :class:`~meshnode.core.sync.MemoryHoldings`, driven the way the trio node
   drives it: every received payload goes to ``receive_data``, every
   BulletinReceived is held and accepted, every DropPeer closes the session,
   ``tick`` runs at ``next_deadline`` and ``data_to_send`` is drained after
   every input.
3. A session is a FIFO link each way: a payload arrives after ``latency``
   plus up to ``jitter`` seconds, never before the one sent before it, and
   is lost with probability ``loss``, except HELLO, which the real
   transport delivers as part of opening the session. Closing a session
   discards what is in flight on it.
4. Cost is per event, so 10,000 nodes are a matter of patience, not of design.
5. What a subclass changes (sim/internet.py does) goes through a few hooks: how a
   payload travels (``_transmit``), what a node does with a payload, a tick or a
   received bulletin (``_on_deliver``, ``_on_tick``, ``_on_bulletin``) and where a
   node's randomness comes from (``_node_rng``).
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from meshnode.core import wire
from meshnode.core.gossip import (
    BulletinReceived,
    DeliveryReceived,
    DropPeer,
    Event,
    ForkDetected,
    Gossip,
    GossipConfig,
    SyncCompleted,
)
from meshnode.core.sync import MemoryHoldings, topic_of
from meshnode.core.wire import BulletinId, PeerId, Topic
from meshnode.errors import LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from meshnode.core.bulletin import Bulletin
    from meshnode.core.crypto import Rng

_DELIVER: Final = 0
_TICK: Final = 1
_CALL: Final = 2


class SeededRng:
    """Deterministic random bytes: BLAKE2b in counter mode, keyed with a seed.

    Usable wherever the core takes an ``rng``; ``fork`` derives independent
    streams (one per node) so adding a node does not change another's draws.
    """

    def __init__(self, seed: bytes) -> None:
        self._key = hashlib.blake2b(seed, digest_size=32).digest()
        self._counter = 0
        self._buffer = b""

    def __call__(self, size: int) -> bytes:
        while len(self._buffer) < size:
            block = hashlib.blake2b(self._counter.to_bytes(8, "little"), key=self._key).digest()
            self._buffer += block
            self._counter += 1
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def random(self) -> float:
        """A float in [0, 1)."""
        return int.from_bytes(self(7), "little") / (1 << 56)

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        return int.from_bytes(self(8), "little") % n

    def sample(self, items: Sequence[PeerId], k: int) -> list[PeerId]:
        """``k`` distinct items (all of them if there are fewer), in random order."""
        pool = list(items)
        for i in range(min(k, len(pool))):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def fork(self, label: bytes) -> SeededRng:
        """An independent stream for ``label``."""
        return SeededRng(self._key + label)


@dataclass(eq=False)
class SimNode:
    """One simulated node: its machine, what it holds, what happened to it."""

    key: PeerId
    gossip: Gossip
    holdings: MemoryHoldings
    arrivals: dict[BulletinId, float] = field(default_factory=dict)
    forks: list[ForkDetected] = field(default_factory=list)
    drops: list[DropPeer] = field(default_factory=list)
    syncs: list[SyncCompleted] = field(default_factory=list)
    bytes_sent: int = 0
    """Session payload bytes this node sent."""
    tick_at: float = float("inf")
    """When this node's next tick is queued (an earlier one replaces it)."""


@dataclass(eq=False)
class _Link:
    generation: int
    session_id: bytes
    last: float = 0.0
    rtt: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SimulationStatistics:
    """Totals over the whole run."""

    payloads_sent: int
    payloads_lost: int
    bytes_sent: int
    events: int


class Simulation:
    """N nodes, their sessions and a simulated clock.

    Args:
        seed: replays the run exactly.
        loss: probability that a payload (other than HELLO) is lost.
        latency: one-way delay of every payload, in seconds.
        jitter: extra delay, uniform in [0, jitter).
        config: every node's gossip parameters.
        start: the simulated monotonic time at which the run starts.
    """

    def __init__(
        self,
        *,
        seed: bytes,
        loss: float = 0.0,
        latency: float = 0.02,
        jitter: float = 0.01,
        config: GossipConfig | None = None,
        start: float = 0.0,
    ) -> None:
        if not 0.0 <= loss < 1.0 or latency < 0 or jitter < 0:
            raise ValueError("need 0 <= loss < 1 and non-negative delays")
        self.loss = loss
        self.latency = latency
        self.jitter = jitter
        self._config = config or GossipConfig()
        self._rng = SeededRng(seed)
        self._net_rng = self._rng.fork(b"network")
        self._now = start
        self._queue: list[tuple[float, int, int, PeerId, PeerId, bytes, int]] = []
        self._calls: dict[int, Callable[[], None]] = {}
        self._seq = 0
        self._links: dict[tuple[PeerId, PeerId], _Link] = {}
        self._generation = 0
        self._cut: list[tuple[PeerId, PeerId]] = []
        self.nodes: dict[PeerId, SimNode] = {}
        self.published: dict[Topic, list[BulletinId]] = {}
        self.published_at: dict[BulletinId, float] = {}
        self._held: dict[Topic, dict[PeerId, int]] = {}
        self._sent = self._lost = self._bytes = self._events = 0

    @property
    def now(self) -> float:
        """The simulated time."""
        return self._now

    def statistics(self) -> SimulationStatistics:
        """Totals so far."""
        return SimulationStatistics(
            payloads_sent=self._sent,
            payloads_lost=self._lost,
            bytes_sent=self._bytes,
            events=self._events,
        )

    # -- building the network ------------------------------------------------------

    def add_node(self, key: bytes, topics: Mapping[Topic, Sequence[bytes]]) -> SimNode:
        """A node with group key ``key``, subscribed to ``topics`` (topic: member keys)."""
        peer = PeerId(bytes(key))
        if peer in self.nodes:
            raise LocalProtocolError("a node with this key already exists")
        holdings = MemoryHoldings()
        gossip = self._machine(peer, holdings, self._node_rng(peer), topics)
        node = self._new_node(peer, gossip, holdings)
        self.nodes[peer] = node
        self._schedule_tick(node)
        return node

    def connect(self, a: bytes, b: bytes) -> bool:
        """Open a session between two nodes; False if they already have one."""
        pa, pb = PeerId(a), PeerId(b)
        if pa == pb or (pa, pb) in self._links:
            return False
        self._generation += 1
        session_id = self._net_rng(32)
        rtt = self._rtt(pa, pb)
        self._links[(pa, pb)] = _Link(self._generation, session_id, self._now, rtt)
        self._links[(pb, pa)] = _Link(self._generation, session_id, self._now, rtt)
        for x, y in ((pa, pb), (pb, pa)):
            self.nodes[x].gossip.add_peer(y, session_id, self._now)
        self._flush(self.nodes[pa])
        self._flush(self.nodes[pb])
        return True

    def disconnect(self, a: bytes, b: bytes) -> bool:
        """Close the session between two nodes; False if there was none."""
        pa, pb = PeerId(a), PeerId(b)
        if self._links.pop((pa, pb), None) is None:
            return False
        self._links.pop((pb, pa), None)
        for x, y in ((pa, pb), (pb, pa)):
            self.nodes[x].gossip.remove_peer(y, self._now)
            self._flush(self.nodes[x])
        return True

    def connected(self, a: bytes, b: bytes) -> bool:
        """Whether the two nodes have a session."""
        return (PeerId(a), PeerId(b)) in self._links

    def neighbours(self, a: bytes) -> list[PeerId]:
        """The nodes ``a`` has sessions with."""
        return [y for (x, y) in self._links if x == a]

    def partition(self, groups: Iterable[Iterable[bytes]]) -> int:
        """Close every session between nodes of different groups; ``heal`` reopens them."""
        side: dict[bytes, int] = {}
        for i, group in enumerate(groups):
            for key in group:
                side[key] = i
        cut = [(x, y) for (x, y) in self._links if x < y and side.get(x, -1) != side.get(y, -2)]
        for x, y in cut:
            self.disconnect(x, y)
        self._cut.extend(cut)
        return len(cut)

    def heal(self) -> int:
        """Reopen the sessions ``partition`` closed (new sessions, as after reconnecting)."""
        cut, self._cut = self._cut, []
        return sum(self.connect(x, y) for x, y in cut)

    # -- driving it ----------------------------------------------------------------

    def publish(self, key: bytes, bulletin: Bulletin) -> None:
        """Node ``key`` posts ``bulletin`` now (it stores it, then gossips it)."""
        node = self.nodes[PeerId(key)]
        topic = topic_of(bulletin)
        if topic is None:
            raise LocalProtocolError("direct bulletins are not gossiped")
        node.holdings.add(bulletin)
        if bulletin.id not in self.published_at:
            self.published.setdefault(topic, []).append(BulletinId(bulletin.id))
            self.published_at[BulletinId(bulletin.id)] = self._now
        self._arrived(node, topic, BulletinId(bulletin.id))
        node.gossip.publish(bulletin, self._now)
        self._flush(node)

    def send_raw(self, src: bytes, dst: bytes, payload: bytes) -> None:
        """Send ``payload`` on the session from ``src`` to ``dst`` as if ``src`` had:
        for simulating misbehaving nodes.

        Raises:
            LocalProtocolError: the two nodes have no session.
        """
        if (PeerId(src), PeerId(dst)) not in self._links:
            raise LocalProtocolError("no session between these nodes")
        self._transmit(PeerId(src), PeerId(dst), payload)

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``when``."""
        self._seq += 1
        self._calls[self._seq] = action
        self._push(when, _CALL, PeerId(b""), PeerId(b""), b"", self._seq)

    def run(
        self,
        until: float,
        *,
        stop: Callable[[], bool] | None = None,
        check_every: float = 1.0,
    ) -> bool:
        """Process events up to ``until``; True as soon as ``stop()`` is (checked periodically).

        Without ``stop``, returns True after reaching ``until``.
        """
        next_check = self._now
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, _, kind, src, dst, payload, tag = heapq.heappop(queue)
            self._now = when
            self._events += 1
            if kind == _DELIVER:
                self._on_deliver(src, dst, payload, tag)
            elif kind == _TICK:
                self._on_tick(src, tag)
            else:
                self._calls.pop(tag)()
            if stop is not None and when >= next_check:
                if stop():
                    return True
                next_check = when + check_every
        self._now = max(self._now, until)
        return stop() if stop is not None else True

    # -- looking at it -------------------------------------------------------------

    def subscribers(self, topic: Topic) -> list[SimNode]:
        """The nodes subscribed to ``topic``."""
        return [n for n in self.nodes.values() if topic in n.gossip.topics()]

    def missing(self) -> int:
        """(node, bulletin) pairs still to deliver: published on a topic the node takes part in.

        O(nodes x topics): arrivals are counted as they happen.
        """
        total = 0
        for topic, ids in self.published.items():
            held = self._held.get(topic, {})
            total += sum(len(ids) - held.get(node.key, 0) for node in self.subscribers(topic))
        return total

    def converged(self) -> bool:
        """Every subscriber holds every bulletin published on its topics."""
        return self.missing() == 0

    def latencies(self) -> list[float]:
        """Seconds from publication to arrival, for every delivery so far."""
        out = []
        for node in self.nodes.values():
            for bid, when in node.arrivals.items():
                start = self.published_at.get(bid)
                if start is not None and when > start:
                    out.append(when - start)
        return out

    # -- internals -----------------------------------------------------------------

    def _push(
        self, when: float, kind: int, src: PeerId, dst: PeerId, payload: bytes, tag: int
    ) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, kind, src, dst, payload, tag))

    def _rtt(self, a: PeerId, b: PeerId) -> float:
        """The round trip of a new session (this class draws each payload's delay)."""
        return 0.0

    def _new_node(self, key: PeerId, gossip: Gossip, holdings: MemoryHoldings) -> SimNode:
        return SimNode(key=key, gossip=gossip, holdings=holdings)

    def _machine(
        self, peer: PeerId, holdings: MemoryHoldings, rng: Rng,
        topics: Mapping[Topic, Sequence[bytes]],
    ) -> Gossip:  # fmt: skip
        """A gossip machine for ``peer``, ticking from now, subscribed to ``topics``."""
        gossip = Gossip(
            local=peer, holdings=holdings, rng=rng, now=self._now, config=self._config
        )
        for topic, keys in topics.items():
            gossip.subscribe(topic, keys, now=self._now)
        return gossip

    def _node_rng(self, peer: PeerId) -> Rng:
        return self._rng.fork(b"node" + peer)

    def _on_deliver(self, src: PeerId, dst: PeerId, payload: bytes, generation: int) -> None:
        link = self._links.get((src, dst))
        if link is not None and link.generation == generation:
            node = self.nodes[dst]
            self._handle(node, node.gossip.receive_data(src, payload, self._now))

    def _on_tick(self, key: PeerId, tag: int) -> None:
        node = self.nodes[key]
        if self._now != node.tick_at:
            return  # an earlier tick replaced this one
        node.tick_at = float("inf")
        self._handle(node, node.gossip.tick(self._now))  # (its flush queues the next)

    def _schedule_tick(self, node: SimNode) -> None:
        """Queue the node's tick for when its machine asks, if that is sooner than the
        one queued: any input may move the deadline (a second wave of pushes)."""
        due = node.gossip.next_deadline()
        if due < node.tick_at:
            node.tick_at = due
            self._push(due, _TICK, node.key, node.key, b"", self._tick_tag(node))

    def _tick_tag(self, node: SimNode) -> int:
        """The tag a node's tick carries (a restarted node's ticks must not reach the
        machine it replaced)."""
        return 0

    def _on_bulletin(self, node: SimNode, event: BulletinReceived) -> None:
        """Store a received bulletin and accept it at once (the trio node batches:
        see sim/internet.py)."""
        node.holdings.add(event.bulletin)
        self._arrived(node, event.topic, BulletinId(event.bulletin.id))
        node.gossip.accept(event.bulletin.id, self._now)

    def _on_delivery(self, node: SimNode, event: DeliveryReceived) -> None:
        """A direct-delivery message: nodes here have no delivery machine."""

    def _handle(self, node: SimNode, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, BulletinReceived):
                self._on_bulletin(node, event)
            elif isinstance(event, DropPeer):
                node.drops.append(event)
                self.disconnect(node.key, event.peer)
            elif isinstance(event, ForkDetected):
                node.forks.append(event)
            elif isinstance(event, SyncCompleted):
                node.syncs.append(event)
            elif isinstance(event, DeliveryReceived):
                self._on_delivery(node, event)
        self._flush(node)

    def _arrived(self, node: SimNode, topic: Topic, bid: BulletinId) -> None:
        if bid not in node.arrivals:
            node.arrivals[bid] = self._now
            if bid in self.published_at:
                held = self._held.setdefault(topic, {})
                held[node.key] = held.get(node.key, 0) + 1

    def _flush(self, node: SimNode) -> None:
        for dst, payload in node.gossip.data_to_send():
            self._transmit(node.key, dst, payload)
        self._schedule_tick(node)

    def _transmit(self, src: PeerId, dst: PeerId, payload: bytes) -> None:
        link = self._links[(src, dst)]
        self._sent += 1
        self._bytes += len(payload)
        self.nodes[src].bytes_sent += len(payload)
        lossy = self.loss and payload[1] != wire.MessageType.HELLO
        if lossy and self._net_rng.random() < self.loss:
            self._lost += 1
            return
        delay = self.latency + (self.jitter * self._net_rng.random() if self.jitter else 0.0)
        when = max(self._now + delay, link.last)
        link.last = when
        self._push(when, _DELIVER, src, dst, payload, link.generation)
