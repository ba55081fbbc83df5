"""The simulator at internet scale: the real machines on a TCP-like, churning network.

Built on :class:`~sim.network.Simulation` (its event queue, sessions and
bookkeeping); what this module adds, and the rules it keeps:

1. **Latency.** Every node sits at a point of a ring (its place on the globe);
   the round trip between two nodes is ``rtt_low`` plus ``rtt_high - rtt_low``
   times their distance on the ring, so round trips run from 50 to 300 ms,
   spread evenly between random pairs, and obey the triangle inequality (no
   detour is faster than the direct path).
2. **Loss is delay, as on TCP.** A session is a TCP connection: nothing is
   lost, in order. A payload (with the 18 bytes of its Noise frame) takes
   ``ceil(size / mss)`` segments; each segment is lost with probability
   ``loss``, and each loss adds a retransmission timeout of ``max(rto_min,
   rtt)`` that doubles on a second loss of the same segment. A payload never
   arrives before the one sent before it on the same session (head-of-line
   blocking), so a loss delays what follows it too.
3. **The store pass.** A node relays a received bulletin only after storing it,
   in a pass that runs once the session read that brought it is handled, the
   way the trio node's pass runs as soon as it has work (``net/intake.py``); a
   bulletin counts as delivered when its pass stores it. The machine's second
   wave of pushes (``core/gossip/_stagger.py``) runs at its tick, which any
   input may move sooner (``Simulation._schedule_tick``).
4. **Sessions open by dialling.** A dial takes a TCP and Noise handshake (two
   round trips, each handshake packet lost with ``loss`` costing a 1 s SYN
   timeout); a node refuses inbound sessions past ``max_inbound``
   (``SessionConfig.max_sessions``; our own dials take no slot); dialling a node
   that is away fails after ``dial_timeout``.
5. **Churn.** A node that leaves closes every session and loses what it had
   received but not stored; when it comes back it is a restarted process: a new
   gossip machine over the same holdings (the store survives), which finds its
   way back through the DHT, dials, and catches up by anti-entropy (every new
   session opens a reconciliation).
6. **The DHT is a cost model, not a simulation.** A lookup among ``n`` live nodes
   takes ``ceil(log2(n / k) / log2(k)) + 1`` rounds (each round learns about
   ``log2 k`` more bits of the target, until the ``k`` nearest are found, and a
   last round finds nothing nearer); a round sends ``alpha`` requests in parallel
   and waits for all of them, as kademlia's crawler does; a request whose
   datagram or answer is lost (UDP: ``loss`` each way), or that went to a node
   that is away, costs ``rpc_timeout``. The records a lookup returns are real:
   signed by their groups and checked by :func:`meshnode.core.records.validate`.
7. **Direct delivery** is the real :class:`~meshnode.core.delivery.Delivery`
   machine over an in-memory :class:`MemoryMailbox`, driven as the node's
   ``_deliveries`` and ``_mail`` tasks drive it: a round every
   ``delivery_interval`` while a bulletin is unacknowledged (to the recipient's
   node if its contact record leads to it, else to the ``MAX_HOLDERS`` nodes
   nearest it), and a collection from the nodes nearest us when we come back.
8. **Signature verdicts are shared** (:func:`shared_verdicts`): a bulletin's
   decoding and signature check depend on its bytes only, so the first node to
   check one computes it and every other node reuses it. This changes no
   simulated time or outcome; it saves the process's CPU.
"""

from __future__ import annotations

import enum
import functools
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from meshnode.core import crypto, records, wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.delivery import MAX_HOLDERS, Charge, Delivery, Send, Take, is_holder
from meshnode.core.wire import BulletinId, PeerId, Topic
from meshnode.errors import InvalidBulletin
from sim.network import _DELIVER, SimNode, Simulation

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from meshnode.core.crypto import Rng
    from meshnode.core.gossip import BulletinReceived, DeliveryReceived, Gossip, GossipConfig
    from meshnode.core.identity import Identity
    from meshnode.core.sync import MemoryHoldings

T0: Final = 1_700_000_000
"""The Unix time at simulated time 0 (bulletins, records and mail carry wall times)."""
_FRAME: Final = 18
"""Noise framing per payload: a 2-byte length and a 16-byte tag."""


class Role(enum.Enum):
    """What a node does with what it receives."""

    HONEST = "honest"
    SILENT = "silent"
    """A Sybil that accepts sessions and relays nothing: it never stores or accepts
    a bulletin, so it never pushes, announces or serves one."""
    FLOODER = "flooder"
    """A silent Sybil that also pushes junk: forged bulletins and malformed frames."""


@dataclass(frozen=True, kw_only=True)
class InternetConfig:
    """The network's parameters (rules 1 to 6 of the module say how each is used)."""

    rtt_low: float = 0.05
    rtt_high: float = 0.30
    loss: float = 0.0
    rto_min: float = 0.2
    syn_timeout: float = 1.0
    mss: int = 1448
    dial_timeout: float = 5.0
    max_inbound: int = 256
    delivery_interval: float = 60.0
    dht_k: int = 20
    dht_alpha: int = 3
    rpc_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.rtt_low <= self.rtt_high or not 0 <= self.loss < 1:
            raise ValueError("need 0 < rtt_low <= rtt_high and 0 <= loss < 1")


@dataclass(eq=False)
class NetNode(SimNode):
    """A simulated node with what the internet adds: its role, place and state."""

    role: Role = Role.HONEST
    place: float = 0.0
    topics: Mapping[Topic, Sequence[bytes]] = field(default_factory=dict)
    identity: Identity | None = None
    online: bool = True
    generation: int = 0
    """Bumped at every restart: ticks of an older machine are ignored."""
    inbound: set[PeerId] = field(default_factory=set)
    """The peers that dialled it."""
    opened: dict[PeerId, float] = field(default_factory=dict)
    """When each of its sessions opened."""
    to_store: list[BulletinReceived] = field(default_factory=list)
    delivery: Delivery | None = None
    mailbox: MemoryMailbox | None = None
    delivering: bool = False
    """Whether its delivery rounds run (while it has direct bulletins to deliver)."""


class MemoryMailbox:
    """:class:`meshnode.core.delivery.Mailbox` in memory: mail held for others and
    the outbox of our own direct bulletins (the store's job in the real node)."""

    def __init__(self) -> None:
        self.held: dict[bytes, dict[bytes, bytes]] = {}
        """Recipient -> {bulletin id: raw} held for it."""
        self.outbox: dict[bytes, tuple[bytes, int, bool]] = {}
        """Bulletin id -> (recipient, holders so far, delivered)."""

    def hold_mail(self, recipient: bytes, bulletin: Bulletin, *, now: int, standing: bool) -> bool:
        self.held.setdefault(recipient, {})[bulletin.id] = bulletin.raw
        return True

    def mail_for(self, recipient: bytes, *, now: int, limit: int) -> tuple[list[bytes], bool]:
        raws = list(self.held.get(recipient, {}).values())
        return raws[:limit], len(raws) > limit

    def forget_mail(self, recipient: bytes, ids: Sequence[bytes]) -> None:
        held = self.held.get(recipient, {})
        for bid in ids:
            held.pop(bid, None)

    def delivered(self, bulletin_id: bytes, recipient: bytes) -> None:
        if bulletin_id in self.outbox:
            self.outbox[bulletin_id] = (recipient, self.outbox[bulletin_id][1], True)

    def held_by_one_more(self, bulletin_id: bytes, recipient: bytes) -> None:
        if bulletin_id in self.outbox:
            _, holders, done = self.outbox[bulletin_id]
            self.outbox[bulletin_id] = (recipient, holders + 1, done)

    def pending_deliveries(self, *, now: int) -> list[tuple[bytes, bytes, int]]:
        return [(b, r, h) for b, (r, h, done) in self.outbox.items() if not done]


class _Judge:
    """:class:`meshnode.core.delivery.Judge` with the DHT's whole view: a node
    holds mail for a group when it is among the IDs nearest the group's."""

    def __init__(self, own: bytes, known: Callable[[], Sequence[bytes]]) -> None:
        self._own = records.node_id(own)
        self._known = known

    def standing(self, author: bytes, recipient: bytes) -> bool:
        return True

    def holds_for(self, recipient: bytes) -> bool:
        return is_holder(self._own, recipient, self._known())

    def blocked(self, key: bytes) -> bool:
        return False


@contextmanager
def shared_verdicts() -> Iterator[dict[bytes, Bulletin | InvalidBulletin]]:
    """Within the block, ``Bulletin.from_bytes`` is computed once per bulletin id and
    shared by every simulated node (rule 8); yields the cache.

    The gossip and delivery machines call ``Bulletin.from_bytes`` themselves and
    take no verifier to share one through, so the class method is swapped for the
    block's duration.
    """
    original = Bulletin.__dict__["from_bytes"]
    decode: Callable[[bytes], Bulletin] = Bulletin.from_bytes
    cache: dict[bytes, Bulletin | InvalidBulletin] = {}

    def from_bytes(cls: type[Bulletin], data: bytes) -> Bulletin:
        raw = bytes(data)
        bid = crypto.blake2b_256(raw)
        verdict = cache.get(bid)
        if verdict is None:
            try:
                verdict = decode(raw)
            except InvalidBulletin as exc:
                verdict = exc
            cache[bid] = verdict
        if isinstance(verdict, InvalidBulletin):
            raise InvalidBulletin(str(verdict))
        return verdict

    setattr(Bulletin, "from_bytes", classmethod(from_bytes))  # noqa: B010 (a method)
    try:
        yield cache
    finally:
        setattr(Bulletin, "from_bytes", original)  # noqa: B010


def kademlia_rounds(n: int, k: int) -> int:
    """Rounds of a Kademlia lookup among ``n`` nodes with buckets of ``k`` (rule 6)."""
    if n <= k:
        return 1
    return math.ceil(math.log2(n / k) / math.log2(k)) + 1


@dataclass
class DirectMail:
    """One direct bulletin the simulation sends: when, and when it reached its recipient."""

    sender: PeerId
    recipient: PeerId
    bulletin: Bulletin
    sent_at: float
    taken_at: float | None = None


class Internet(Simulation):
    """Nodes on a simulated internet: see the module's rules.

    Args:
        seed: replays the run exactly.
        net: latency, loss, store pass, dialling and DHT parameters.
        config: every node's gossip parameters.
    """

    def __init__(
        self, *, seed: bytes, net: InternetConfig | None = None, config: GossipConfig | None = None
    ) -> None:
        super().__init__(seed=seed, loss=0.0, latency=0.0, jitter=0.0, config=config)
        self.net = net or InternetConfig()
        self._random = random.Random(self._rng.fork(b"internet")(32))
        self._draw = self._random.random
        self.mail: dict[BulletinId, DirectMail] = {}
        self._ids: list[bytes] = []
        self.records: dict[bytes, bytes] = {}
        """The DHT's contents: key -> record bytes (contact and rendezvous records)."""
        self.lookups = 0
        self.lookup_time = 0.0
        self.dials = 0
        self.failed_dials = 0
        self.flood_sent = 0

    # -- building -------------------------------------------------------------------

    def add_member(
        self,
        identity: Identity,
        topics: Mapping[Topic, Sequence[bytes]],
        *,
        role: Role = Role.HONEST,
        mail: bool = False,
    ) -> NetNode:
        """A node for ``identity``, placed at random on the ring, subscribed to ``topics``;
        ``mail`` gives it a delivery machine (direct mail as sender, holder or recipient)."""
        node = self.add_node(identity.public_key, topics)
        assert isinstance(node, NetNode)
        node.role, node.topics, node.identity = role, dict(topics), identity
        node.place = self._draw()
        if mail:
            node.mailbox = MemoryMailbox()
            node.delivery = Delivery(
                identity, node.mailbox, _Judge(identity.public_key, self._node_ids)
            )
        return node

    def publish_contact(self, node: NetNode) -> bytes:
        """Put ``node``'s signed contact record in the DHT; returns its key."""
        assert node.identity is not None
        octets = node.identity.public_key
        address = f"198.51.{octets[0]}.{octets[1] or 1}:7000"
        record = records.make_contact(node.identity, [address], seq=1, now=T0)
        self.records[record.key] = record.encode()
        return record.key

    def publish_rendezvous(self, tag: bytes, members: Sequence[NetNode]) -> bytes:
        """Put a rendezvous record of ``members`` (the newest 32 at most) in the DHT."""
        contacts = []
        for m in members:
            key = self.publish_contact(m)
            contacts.append(records.decode(self.records[key], T0))
        found = [c for c in contacts if isinstance(c, records.ContactRecord)]
        record = records.make_rendezvous(tag, found, now=T0)
        self.records[record.key] = record.encode()
        return record.key

    def link(self, a: bytes, b: bytes) -> bool:
        """Open a session from ``a`` to ``b`` at once (the network as it stands when the
        run starts); False if they have one or ``b`` refuses it."""
        na, nb = self._net(a), self._net(b)
        if len(nb.inbound) >= self.net.max_inbound or not self.connect(a, b):
            return False
        nb.inbound.add(na.key)
        na.opened[nb.key] = nb.opened[na.key] = self._now
        return True

    def disconnect(self, a: bytes, b: bytes) -> bool:
        if not super().disconnect(a, b):
            return False
        for x, y in ((a, b), (b, a)):
            self._net(x).inbound.discard(PeerId(y))
            self._net(x).opened.pop(PeerId(y), None)
        return True

    def rtt(self, a: bytes, b: bytes) -> float:
        """The round trip between two nodes (rule 1)."""
        d = abs(self._net(a).place - self._net(b).place)
        d = min(d, 1.0 - d) * 2.0
        return self.net.rtt_low + (self.net.rtt_high - self.net.rtt_low) * d

    # -- dialling, churn and the DHT ---------------------------------------------------

    def dial(self, a: bytes, b: bytes, then: Callable[[bool], None] | None = None) -> None:
        """``a`` dials ``b`` now; ``then(opened)`` runs when the session opens or the
        dial fails (rule 4)."""
        na, nb = self._net(a), self._net(b)
        self.dials += 1
        rtt = self.rtt(a, b)
        if not nb.online or PeerId(b) == na.key:
            self._fail_dial(na, self.net.dial_timeout, then)
            return
        delay = 2.0 * rtt
        loss = self.net.loss
        if loss:
            for _ in range(4):
                while self._draw() < loss:
                    delay += max(self.net.syn_timeout, rtt)
        generation = na.generation

        def opened() -> None:
            if not (na.online and nb.online and na.generation == generation):
                if na.online and na.generation == generation:
                    self._fail_dial(na, 0.0, then)
                return
            ok = self.connected(a, b) or self.link(a, b)
            if not ok:
                self.failed_dials += 1
            if then is not None:
                then(ok)

        self.at(self._now + delay, opened)

    def _fail_dial(
        self, node: NetNode, after: float, then: Callable[[bool], None] | None
    ) -> None:
        self.failed_dials += 1
        if then is not None:
            generation = node.generation

            def failed() -> None:
                if node.online and node.generation == generation:
                    then(False)

            self.at(self._now + after, failed)

    def lookup(self, then: Callable[[], None]) -> None:
        """A DHT lookup from now; ``then`` runs when it completes (rule 6)."""
        online = sum(1 for n in self.nodes.values() if isinstance(n, NetNode) and n.online)
        away = 1.0 - online / max(1, len(self.nodes))
        answered = (1.0 - self.net.loss) ** 2 * (1.0 - away)
        total = 0.0
        spread = self.net.rtt_high - self.net.rtt_low
        for _ in range(kademlia_rounds(online, self.net.dht_k)):
            slowest = 0.0
            for _ in range(self.net.dht_alpha):
                if self._draw() < answered:
                    took = self.net.rtt_low + spread * self._draw()
                else:
                    took = self.net.rpc_timeout
                slowest = max(slowest, took)
            total += slowest
        self.lookups += 1
        self.lookup_time += total
        self.at(self._now + total, then)

    def find(self, key: bytes) -> records.Record | None:
        """The record under ``key``, checked as a node checks what the DHT returns."""
        value = self.records.get(key)
        if value is None:
            return None
        return records.validate(key, value, T0 + int(self._now))

    def nearest(self, group_key: bytes, count: int) -> list[NetNode]:
        """The ``count`` live nodes (Sybils too) whose DHT ids are nearest ``group_key``'s."""
        goal = int.from_bytes(records.node_id(group_key))
        live = [
            n
            for n in self.nodes.values()
            if isinstance(n, NetNode) and n.online and n.key != group_key
        ]
        live.sort(key=lambda n: int.from_bytes(records.node_id(n.key)) ^ goal)
        return live[:count]

    def leave(self, key: bytes) -> None:
        """The node goes away: every session closes, what it had not stored is lost."""
        node = self._net(key)
        if not node.online:
            return
        for peer in self.neighbours(key):
            self.disconnect(key, peer)
        node.online = False
        node.generation += 1
        node.to_store = []

    def restart(self, key: bytes) -> None:
        """The node comes back as a new process over the same store (rule 5): a new
        gossip machine, ticking from now; it has no sessions yet."""
        node = self._net(key)
        node.online = True
        node.generation += 1
        rng = self._node_rng(PeerId(node.key + node.generation.to_bytes(4, "little")))
        node.gossip = self._machine(node.key, node.holdings, rng, node.topics)
        node.tick_at = float("inf")  # (the old machine's tick, if queued, is stale)
        self._schedule_tick(node)

    # -- direct mail --------------------------------------------------------------------

    def send_direct(self, sender: bytes, bulletin: Bulletin, recipient: bytes) -> DirectMail:
        """``sender`` posts a direct bulletin to ``recipient`` now; its delivery rounds
        (:meth:`_deliveries`) take it from there."""
        node = self._net(sender)
        assert node.mailbox is not None
        target = self._net(recipient)
        if records.contact_key(recipient) not in self.records:
            self.publish_contact(target)  # (every node publishes its own when it starts)
        bid = BulletinId(bulletin.id)
        node.mailbox.outbox[bid] = (bytes(recipient), 0, False)
        mail = self.mail[bid] = DirectMail(
            PeerId(sender), PeerId(recipient), bulletin, sent_at=self._now
        )
        if not node.delivering:
            node.delivering = True
            self._deliveries(node, node.generation)
        return mail

    def _deliveries(self, node: NetNode, generation: int) -> None:
        """The node's ``_deliveries`` task: every ``delivery_interval``, each of our direct
        bulletins not yet acknowledged by its recipient goes to the recipient's node if
        it answers, else to the nodes nearest it while fewer than ``MAX_HOLDERS`` keep it."""
        if node.delivery is None or node.mailbox is None or node.generation != generation:
            return
        for attempt in node.delivery.due(now=T0 + int(self._now)):
            self._deliver(node, self.mail[BulletinId(attempt.bulletin_id)], attempt.holders)
        if node.mailbox.pending_deliveries(now=T0 + int(self._now)):
            self.at(
                self._now + self.net.delivery_interval,
                functools.partial(self._deliveries, node, generation),
            )
        else:
            node.delivering = False

    def _deliver(self, node: NetNode, mail: DirectMail, holders_wanted: int) -> None:
        raw, recipient = mail.bulletin.raw, mail.recipient

        def deposit_with(peer: PeerId) -> Callable[[bool], None]:
            def opened(ok: bool) -> None:
                if ok:
                    self._deposit(node, peer, recipient, raw)

            return opened

        def with_holders() -> None:
            for holder in self.nearest(recipient, MAX_HOLDERS):
                if self.connected(node.key, holder.key):
                    self._deposit(node, holder.key, recipient, raw)
                else:
                    self.dial(node.key, holder.key, deposit_with(holder.key))

        def to_holders() -> None:
            if holders_wanted > 0:
                self.lookup(with_holders)

        def found_contact() -> None:
            if self.find(records.contact_key(recipient)) is None:
                to_holders()
                return
            self.dial(node.key, recipient, answered)

        def answered(ok: bool) -> None:
            if ok:
                self._deposit(node, recipient, recipient, raw)
            else:
                to_holders()

        if self.connected(node.key, recipient):
            self._deposit(node, recipient, recipient, raw)
        else:
            self.lookup(found_contact)

    def collect_mail(self, key: bytes) -> None:
        """The node's ``_mail`` task: find the nodes nearest our own id, dial them and
        ask each peer for what it holds for us."""
        node = self._net(key)
        if node.delivery is None:
            return

        def ask(holder: PeerId) -> Callable[[bool], None]:
            def opened(ok: bool) -> None:
                if ok and node.delivery is not None:
                    for send in node.delivery.collect([holder]):
                        node.gossip.send(PeerId(send.peer), send.message)
                    self._flush(node)

            return opened

        def found() -> None:
            for holder in self.nearest(key, MAX_HOLDERS):
                self.dial(key, holder.key, ask(holder.key))

        self.lookup(found)

    def _deposit(self, node: NetNode, peer: PeerId, recipient: PeerId, raw: bytes) -> None:
        if node.delivery is None or not self.connected(node.key, peer):
            return
        send = node.delivery.deposit(peer, recipient, raw)
        node.gossip.send(PeerId(send.peer), send.message)
        self._flush(node)

    # -- flooding ---------------------------------------------------------------------

    def flood(self, src: bytes, dst: bytes, payloads: Sequence[bytes]) -> None:
        """Push junk from ``src`` to ``dst`` on their session (counted in ``flood_sent``)."""
        for payload in payloads:
            if not self.connected(src, dst):
                break
            self._transmit(PeerId(src), PeerId(dst), payload)
            self.flood_sent += 1

    # -- queries --------------------------------------------------------------------

    def honest(self) -> list[NetNode]:
        """The honest nodes."""
        return [n for n in self.nodes.values() if isinstance(n, NetNode) and n.role is Role.HONEST]

    def missing_honest(self) -> int:
        """(honest subscriber, bulletin) pairs not yet delivered."""
        total = 0
        honest = self.honest()
        for topic, ids in self.published.items():
            held = self._held.get(topic, {})
            for node in honest:
                if topic in node.topics:
                    total += len(ids) - held.get(node.key, 0)
        return total

    # -- hooks of Simulation --------------------------------------------------------------

    def _new_node(self, key: PeerId, gossip: Gossip, holdings: MemoryHoldings) -> SimNode:
        return NetNode(key=key, gossip=gossip, holdings=holdings)

    def _rtt(self, a: PeerId, b: PeerId) -> float:
        return self.rtt(a, b)

    def _node_rng(self, peer: PeerId) -> Rng:
        return random.Random(self._rng.fork(b"node" + peer)(32)).randbytes

    def _net(self, key: bytes) -> NetNode:
        node = self.nodes[PeerId(key)]
        assert isinstance(node, NetNode)
        return node

    def _node_ids(self) -> list[bytes]:
        """Every node's DHT id (a holder's view of the routing table: all of them)."""
        if len(self._ids) != len(self.nodes):
            self._ids = [records.node_id(k) for k in self.nodes]
        return self._ids

    def _transmit(self, src: PeerId, dst: PeerId, payload: bytes) -> None:
        link = self._links[(src, dst)]
        size = len(payload)
        self._sent += 1
        self._bytes += size
        self.nodes[src].bytes_sent += size
        delay = 0.5 * link.rtt
        loss = self.net.loss
        if loss:
            timeout = max(self.net.rto_min, link.rtt)
            draw = self._draw
            for _ in range(1 + (size + _FRAME - 1) // self.net.mss):
                backoff = timeout
                while draw() < loss:
                    delay += backoff
                    backoff *= 2.0
                    self._lost += 1
        when = self._now + delay
        if when < link.last:
            when = link.last
        link.last = when
        self._push(when, _DELIVER, src, dst, payload, link.generation)

    def _on_deliver(self, src: PeerId, dst: PeerId, payload: bytes, generation: int) -> None:
        super()._on_deliver(src, dst, payload, generation)
        node = self._net(dst)
        if node.to_store:
            self._store_pass(node)

    def _on_tick(self, key: PeerId, tag: int) -> None:
        node = self.nodes[key]
        assert isinstance(node, NetNode)
        if node.online and node.generation == tag:
            super()._on_tick(key, tag)

    def _tick_tag(self, node: SimNode) -> int:
        assert isinstance(node, NetNode)
        return node.generation

    def _on_bulletin(self, node: SimNode, event: BulletinReceived) -> None:
        assert isinstance(node, NetNode)
        if node.role is not Role.HONEST:
            return  # Sybils never store, so never accept, so never relay
        node.to_store.append(event)  # (stored once this read is handled)

    def _store_pass(self, node: NetNode) -> None:
        batch, node.to_store = node.to_store, []
        for event in batch:
            super()._on_bulletin(node, event)
        self._flush(node)

    def _on_delivery(self, node: SimNode, event: DeliveryReceived) -> None:
        assert isinstance(node, NetNode)
        if node.delivery is None:
            return
        actions = node.delivery.receive(event.peer, event.message, now=T0 + int(self._now))
        for action in actions:
            if isinstance(action, Send):
                node.gossip.send(PeerId(action.peer), action.message)
            elif isinstance(action, Take):
                mail = self.mail.get(BulletinId(action.bulletin.id))
                if mail is not None and mail.taken_at is None and mail.recipient == node.key:
                    mail.taken_at = self._now
            elif isinstance(action, Charge):
                charged = node.gossip.penalize(PeerId(action.peer), action.offence, self._now)
                self._handle(node, charged)


def forged(bulletin: Bulletin) -> bytes:
    """``bulletin`` with its signature's last bit flipped: well-formed, and invalid."""
    return bulletin.raw[:-1] + bytes([bulletin.raw[-1] ^ 1])


def junk_frames(bulletin: Bulletin) -> list[bytes]:
    """What a flooder pushes: a forged bulletin, then a frame that does not decode."""
    return [
        wire.encode_bulletins([forged(bulletin)]),
        bytes([wire.WIRE_VERSION, wire.MessageType.BULLETINS]) + b"\xff" * 64,
    ]

