"""The gossip machine: how bulletins spread across the members of each topic.

Theory of operation (normative text: docs/spec/gossip.md):
- One Gossip instance per node drives every peer session. The node feeds it
  session payloads (``receive_data``), clock ticks (``tick``), its own new
  bulletins (``publish``) and verdicts on received ones (``accept`` or
  ``reject``); it drains payloads to send with ``data_to_send`` and acts on
  the events the inputs return. It never blocks, reads a clock or draws
  randomness of its own.
- Topics: each HELLO carries per-session membership proofs; a topic is
  *shared* with a peer when both proved the same channel key (or both take
  part in the public topic). Nothing about a topic is ever sent to a peer
  that does not share it.
- Propagation is GossipSub's: each topic keeps a mesh of D_low to D_high
  peers (we graft up to D; a GRAFT that would pass D_high is answered with
  PRUNE, as GossipSub v1.1 does, so the mesh never exceeds it); a bulletin
  accepted here is pushed eagerly to the mesh, and its id announced lazily
  (ANNOUNCE) at heartbeats to D_lazy other peers sharing the topic, who pull
  what they lack (WANT), retrying other announcers on timeout.
- Rule 1, validation before anything else: a received bulletin is deduplicated
  by id (BLAKE2b of its bytes) first, verified once (``Bulletin.from_bytes``),
  checked against the topics shared with its sender, and only then handed
  to the node as BulletinReceived. It is relayed (pushed, announced, served)
  only after the node calls ``accept``: a bulletin that failed validation or
  that the node rejected is never relayed.
- Rule 2, everything is bounded: seen-cache (size and TTL), pending verdicts,
  outstanding wants (total and per peer), message cache, per-peer outbox,
  and per-peer token buckets for messages, bytes, unrequested bulletins,
  announced ids and served ids.
- Rule 3, misbehaviour costs score: malformed messages, invalid bulletins,
  direct bulletins gossiped, topics not shared, replays and floods subtract
  penalties; scores decay toward zero each heartbeat; crossing ``drop_score``
  returns DropPeer once and the peer is ignored until ``remove_peer``.
- Anti-entropy (sync.py) runs inside: SYNC messages go to the SyncMachine and
  the ids it finds missing become wants, so every fetch takes the same
  validated path. Gaps are walked back by wanting a bulletin's ``prev``.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, TypeAlias, TypeVar

from meshnode.core import crypto, wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.core.sync import Holdings, SyncConfig, SyncMachine, topic_of
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId, PeerId, Topic
from meshnode.errors import InvalidBulletin, LocalProtocolError, MalformedMessage

__all__ = [
    "DEFAULT_PENALTIES",
    "BulletinReceived",
    "DeliveryReceived",
    "DropPeer",
    "Event",
    "ForkDetected",
    "Gossip",
    "GossipConfig",
    "GossipStatistics",
    "Offence",
    "PongReceived",
    "SyncCompleted",
    "TopicsShared",
    "channel_keys",
    "topic_of",
]

_MAX_SENDERS: Final = 8
_T = TypeVar("_T")


class Offence(Enum):
    """Misbehaviour that costs a peer score (penalties: GossipConfig.penalties)."""

    MALFORMED = "sent a malformed message"
    INVALID_BULLETIN = "sent an invalid bulletin"
    WRONG_KIND = "gossiped a direct bulletin"
    WRONG_TOPIC = "used a topic it does not share with us"
    REPLAY = "sent the same bulletin again"
    FLOOD = "went over its rate limit"
    GRAFT_BACKOFF = "grafted during its backoff"
    REJECTED = "sent a bulletin this node refused"
    UNANSWERED = "did not send a bulletin it announced"
    MISDIRECTED = "deposited mail that this node is not a holder for"


DEFAULT_PENALTIES: Final[Mapping[Offence, float]] = {
    Offence.MALFORMED: 100.0,
    Offence.INVALID_BULLETIN: 100.0,
    Offence.WRONG_KIND: 50.0,
    Offence.WRONG_TOPIC: 10.0,
    Offence.REPLAY: 10.0,
    Offence.FLOOD: 5.0,
    Offence.GRAFT_BACKOFF: 10.0,
    Offence.REJECTED: 10.0,
    Offence.UNANSWERED: 2.0,
    Offence.MISDIRECTED: 5.0,
}


@dataclass(frozen=True, kw_only=True)
class GossipConfig:
    """Gossip parameters; the defaults are GossipSub v1.1's where it has one.

    Rates are per peer and per second, bursts in the same unit; sizes in bytes.
    See docs/spec/gossip.md, "Parameters", for what each one bounds.
    """

    d: int = 6
    d_low: int = 4
    d_high: int = 12
    d_lazy: int = 6
    heartbeat: float = 1.0
    history_length: int = 5
    history_gossip: int = 3
    prune_backoff: int = 60
    flood_publish: bool = True
    seen_ttl: float = 120.0
    max_seen: int = 32768
    max_pending: int = 4096
    verdict_timeout: float = 30.0
    max_wants: int = 8192
    max_wants_per_peer: int = 1024
    max_wants_per_topic: int = 4096
    broken_promises: float = 20.0
    max_inflight: int = 256
    want_timeout: float = 3.0
    want_attempts: int = 3
    max_cache_bytes: int = 8 << 20
    max_catchup: int = 4096
    max_outbox: int = 4 << 20
    hello_padding: int = 4
    message_rate: float = 1000.0
    message_burst: float = 2000.0
    byte_rate: float = float(16 << 20)
    byte_burst: float = float(32 << 20)
    bulletin_rate: float = 1000.0
    bulletin_burst: float = 2000.0
    announce_rate: float = 4096.0
    announce_burst: float = 8192.0
    serve_rate: float = 4096.0
    serve_burst: float = 8192.0
    penalties: Mapping[Offence, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))
    drop_score: float = -100.0
    score_decay: float = 0.9
    sync: SyncConfig = field(default_factory=SyncConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.d_low <= self.d <= self.d_high or self.d_lazy < 0:
            raise ValueError("need 0 <= d_low <= d <= d_high and d_lazy >= 0")
        if not 1 <= self.history_gossip <= self.history_length:
            raise ValueError("need 1 <= history_gossip <= history_length")
        if not 0 <= self.prune_backoff <= wire.MAX_BACKOFF:
            raise ValueError(f"prune_backoff is 0 to {wire.MAX_BACKOFF} seconds")
        if not 0 < self.score_decay <= 1 or self.drop_score >= 0:
            raise ValueError("need 0 < score_decay <= 1 and a negative drop_score")
        if set(self.penalties) != set(Offence) or min(self.penalties.values()) < 0:
            raise ValueError("penalties: a non-negative value for every Offence")
        if min(self.heartbeat, self.seen_ttl, self.verdict_timeout, self.want_timeout) <= 0:
            raise ValueError("times must be positive")
        if min(self.max_seen, self.max_pending, self.max_wants, self.max_inflight) < 1:
            raise ValueError("bounds must be positive")
        if self.max_seen <= self.max_pending or self.seen_ttl <= self.verdict_timeout:
            raise ValueError("the seen-cache must outlive pending verdicts (size and time)")
        if self.want_attempts < 1 or self.hello_padding < 1:
            raise ValueError("want_attempts and hello_padding must be positive")


# -- events ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class TopicsShared:
    """The topics shared with ``peer`` changed (after a HELLO or a subscription)."""

    peer: PeerId
    topics: frozenset[Topic]


@dataclass(frozen=True, kw_only=True, slots=True)
class BulletinReceived:
    """A new, verified bulletin on a shared topic: store it, then ``accept`` or ``reject``."""

    peer: PeerId
    bulletin: Bulletin
    topic: Topic


@dataclass(frozen=True, kw_only=True, slots=True)
class ForkDetected:
    """``author`` signed two bulletins with the same ``seq`` on ``topic``: keep both."""

    topic: Topic
    author: bytes
    seq: int
    held: BulletinId
    received: BulletinId


@dataclass(frozen=True, kw_only=True, slots=True)
class DropPeer:
    """Close the session with ``peer``: its score crossed the threshold."""

    peer: PeerId
    reason: str
    score: float


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncCompleted:
    """A reconciliation this node opened finished; ``missing`` ids were found lacking."""

    peer: PeerId
    topic: Topic
    rounds: int
    missing: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryReceived:
    """A direct-delivery message for the node to handle (docs/spec/gossip.md)."""

    peer: PeerId
    message: wire.DeliveryMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class PongReceived:
    """The answer to a ``ping``."""

    peer: PeerId
    nonce: int


Event: TypeAlias = (
    TopicsShared
    | BulletinReceived
    | ForkDetected
    | DropPeer
    | SyncCompleted
    | DeliveryReceived
    | PongReceived
)


@dataclass(frozen=True, kw_only=True, slots=True)
class GossipStatistics:
    """Counters since the machine was made (for benchmarks and diagnostics)."""

    received: int
    duplicates: int
    invalid: int
    accepted: int
    rejected: int
    published: int
    pushed: int
    announced: int
    wanted: int
    served: int
    want_timeouts: int
    want_overflows: int
    outbox_drops: int
    overloaded: int
    offences: int
    drops: int
    syncs: int
    bytes_out: int
    messages_out: int


def channel_keys(channel: Channel, *, epochs: int = 1) -> tuple[bytes, ...]:
    """The member keys to present for ``channel``: its newest ``epochs`` epoch
    numbers, every sibling of each (so siblings do not split the topic).

    Presenting the previous epoch too for a while after a rekey keeps members
    who have not received the new key connected; a member removed by the
    rekey holds only old epochs, so once the old one is dropped it no longer
    matches.
    """
    numbers = sorted({k.number for k in channel.keys}, reverse=True)[: max(1, epochs)]
    newest = [k for k in reversed(channel.keys) if k.number in numbers]
    return tuple(wire.member_key(k.secret) for k in newest)


# -- internal state ----------------------------------------------------------------

_PENDING, _ACCEPTED, _REJECTED, _INVALID, _HELD = range(5)


class _Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` saved up."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def take(self, amount: float, now: float) -> bool:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class _Seen:
    # ``excused``: the peer we asked for it with a WANT, which may race its own
    # push with its answer, so one more copy from it is not a replay.
    __slots__ = ("excused", "senders", "state")

    def __init__(self, state: int, senders: tuple[PeerId, ...]) -> None:
        self.state = state
        self.senders = senders
        self.excused: PeerId | None = None


class _Pending:
    # ``eager``: fresh (pushed, or pulled after an announcement), so pushed on;
    # otherwise (fetched by sync or a gap walk) only announced on.
    __slots__ = ("bulletin", "eager", "since", "topic")

    def __init__(self, bulletin: Bulletin, topic: Topic, since: float, eager: bool) -> None:
        self.bulletin, self.topic, self.since, self.eager = bulletin, topic, since, eager


class _Want:
    __slots__ = (
        "asked", "attempts", "candidates", "deadline", "eager", "owner", "queued", "topic"
    )

    def __init__(self, topic: Topic, eager: bool, owner: PeerId | None) -> None:
        self.topic = topic
        self.eager = eager
        self.owner = owner
        """The peer whose announcement or sync made this want: its quota pays for it."""
        self.candidates: list[PeerId] = []
        self.asked: PeerId | None = None
        self.queued: PeerId | None = None
        self.attempts = 0
        self.deadline = 0.0


class _TopicState:
    __slots__ = ("backoff", "catchup", "keys", "mesh", "peers", "windows")

    def __init__(self, keys: tuple[bytes, ...], history: int) -> None:
        self.keys = keys
        self.peers: dict[PeerId, None] = {}
        self.mesh: dict[PeerId, None] = {}
        self.backoff: dict[PeerId, float] = {}
        self.windows: deque[list[BulletinId]] = deque([[]], maxlen=history)
        self.catchup: list[BulletinId] = []


class _Peer:
    __slots__ = (
        "announce",
        "asked",
        "broken",
        "bulletins",
        "bytes_in",
        "dropped",
        "expected",
        "frames",
        "id",
        "messages",
        "proofs",
        "public",
        "push",
        "queue",
        "queued_bytes",
        "score",
        "serve",
        "session_id",
        "shared",
    )

    def __init__(self, peer: PeerId, session_id: bytes, now: float, cfg: GossipConfig) -> None:
        self.id = peer
        self.session_id = session_id
        self.shared: dict[Topic, None] = {}
        self.proofs: frozenset[bytes] = frozenset()
        self.public = False
        self.expected: dict[bytes, Topic] = {}
        self.score = 0.0
        self.broken = 0.0
        """Announced bulletins not sent when asked, decaying as the score does."""
        self.dropped = False
        self.messages = _Bucket(cfg.message_rate, cfg.message_burst, now)
        self.bytes_in = _Bucket(cfg.byte_rate, cfg.byte_burst, now)
        self.bulletins = _Bucket(cfg.bulletin_rate, cfg.bulletin_burst, now)
        self.announce = _Bucket(cfg.announce_rate, cfg.announce_burst, now)
        self.serve = _Bucket(cfg.serve_rate, cfg.serve_burst, now)
        self.frames: list[bytes] = []
        self.push: list[bytes] = []
        self.queued_bytes = 0
        self.queue: deque[BulletinId] = deque()
        self.asked: dict[BulletinId, None] = {}


@dataclass(slots=True)
class _Counters:
    received: int = 0
    duplicates: int = 0
    invalid: int = 0
    accepted: int = 0
    rejected: int = 0
    published: int = 0
    pushed: int = 0
    announced: int = 0
    wanted: int = 0
    served: int = 0
    want_timeouts: int = 0
    want_overflows: int = 0
    outbox_drops: int = 0
    overloaded: int = 0
    offences: int = 0
    drops: int = 0
    syncs: int = 0
    bytes_out: int = 0
    messages_out: int = 0


# -- the machine -------------------------------------------------------------------


class Gossip:
    """Propagation and anti-entropy for every topic this node subscribes to.

    Args:
        local: this node's group key (its peer id on the wire).
        holdings: what the node has accepted and stored (read only here).
        rng: random bytes, for mesh and announce choices and HELLO padding.
        now: the current monotonic time, to start the heartbeat.
        config: parameters; GossipConfig() by default.
    """

    def __init__(
        self,
        *,
        local: PeerId,
        holdings: Holdings,
        rng: crypto.Rng,
        now: float,
        config: GossipConfig | None = None,
    ) -> None:
        self._local = local
        self._holdings = holdings
        self._rng = rng
        self._config = cfg = config or GossipConfig()
        self._sync = SyncMachine(holdings, cfg.sync)
        self._topics: dict[Topic, _TopicState] = {}
        self._peers: dict[PeerId, _Peer] = {}
        self._seen: dict[BulletinId, _Seen] = {}
        self._seen_order: deque[tuple[float, BulletinId]] = deque()
        self._pending: dict[BulletinId, _Pending] = {}
        self._pending_order: deque[tuple[float, BulletinId]] = deque()
        self._wants: dict[BulletinId, _Want] = {}
        self._wants_of: dict[PeerId, int] = {}
        """Wants per owner (see ``_Want.owner``): no peer takes more than its share."""
        self._wants_in: dict[Topic, int] = {}
        """Wants per topic: no topic starves the others."""
        self._want_deadlines: deque[tuple[float, BulletinId, PeerId]] = deque()
        self._ready: dict[PeerId, None] = {}
        self._cache: dict[BulletinId, tuple[Topic, bytes]] = {}
        self._cache_bytes = 0
        self._dirty: dict[PeerId, None] = {}
        self._next_heartbeat = now + cfg.heartbeat
        self._n = _Counters()

    # -- queries -------------------------------------------------------------------

    @property
    def local(self) -> PeerId:
        """This node's peer id."""
        return self._local

    def topics(self) -> list[Topic]:
        """The topics this node subscribes to."""
        return list(self._topics)

    def peers(self) -> list[PeerId]:
        """The peers with a live (not dropped) session."""
        return [p.id for p in self._peers.values() if not p.dropped]

    def shared_topics(self, peer: PeerId) -> frozenset[Topic]:
        """The topics shared with ``peer``."""
        p = self._peers.get(peer)
        return frozenset(p.shared) if p is not None else frozenset()

    def mesh(self, topic: Topic) -> list[PeerId]:
        """The mesh peers of ``topic`` (eager push goes to them)."""
        t = self._topics.get(topic)
        return list(t.mesh) if t is not None else []

    def score(self, peer: PeerId) -> float:
        """The current misbehaviour score of ``peer`` (0 is clean, lower is worse)."""
        p = self._peers.get(peer)
        return p.score if p is not None else 0.0

    def next_deadline(self) -> float:
        """When ``tick`` must next be called."""
        return self._next_heartbeat

    def statistics(self) -> GossipStatistics:
        """A snapshot of the counters."""
        return GossipStatistics(**dataclasses.asdict(self._n))

    # -- subscriptions -------------------------------------------------------------

    def subscribe(
        self, topic: Topic, member_keys: Sequence[bytes] = (), *, now: float
    ) -> list[Event]:
        """Take part in ``topic``, or change the member keys presented for it.

        A channel topic is its id with the member keys to prove (see
        ``channel_keys``); PUBLIC_TOPIC takes no keys. Peers get a new HELLO.

        Raises:
            LocalProtocolError: keys for the public topic, none for a channel,
                or more proofs than a HELLO holds.
        """
        keys = tuple(member_keys)
        if (topic == PUBLIC_TOPIC) == bool(keys) or len(topic) != wire.ID_SIZE:
            raise LocalProtocolError("a channel topic needs member keys; the public one takes none")
        total = sum(len(t.keys) for name, t in self._topics.items() if name != topic) + len(keys)
        limit = wire.MAX_PROOFS - self._config.hello_padding
        if total > limit:
            raise LocalProtocolError(f"at most {limit} member keys in all")
        t = self._topics.get(topic)
        if t is None:
            self._topics[topic] = _TopicState(keys, self._config.history_length)
        else:
            t.keys = keys
        return self._resubscribe(now)

    def unsubscribe(self, topic: Topic, *, now: float) -> list[Event]:
        """Stop taking part in ``topic``; peers get a new HELLO."""
        t = self._topics.pop(topic, None)
        if t is None:
            return []
        for window in t.windows:
            self._uncache(window)
        return self._resubscribe(now)

    def _resubscribe(self, now: float) -> list[Event]:
        events: list[Event] = []
        for p in self._peers.values():
            if not p.dropped:
                self._expect(p)
                self._hello(p)
                self._match(p, now, events)
        return events

    # -- sessions ------------------------------------------------------------------

    def add_peer(self, peer: PeerId, session_id: bytes, now: float) -> None:
        """A session with ``peer`` opened; ``session_id`` is its Noise handshake hash.

        Queues our HELLO, so it is the first thing the peer receives from us.

        Raises:
            LocalProtocolError: a session with ``peer`` is already registered.
        """
        if peer in self._peers:
            raise LocalProtocolError("this peer already has a session: remove_peer first")
        p = _Peer(peer, bytes(session_id), now, self._config)
        self._peers[peer] = p
        self._expect(p)
        self._hello(p)

    def remove_peer(self, peer: PeerId, now: float) -> None:
        """The session with ``peer`` closed (for any reason, including DropPeer)."""
        p = self._peers.pop(peer, None)
        if p is not None:
            self._detach(p, now)

    def receive_data(self, peer: PeerId, data: bytes, now: float) -> list[Event]:
        """One session payload from ``peer``. Never raises for anything the peer sent.

        Raises:
            LocalProtocolError: ``peer`` was never added.
        """
        p = self._peers.get(peer)
        if p is None:
            raise LocalProtocolError("data from a peer that was never added")
        events: list[Event] = []
        if p.dropped:
            return events
        if not (p.messages.take(1.0, now) and p.bytes_in.take(len(data), now)):
            self._offend(p, Offence.FLOOD, now, events)
            return events
        try:
            msg = wire.decode(data)
        except MalformedMessage as exc:
            self._offend(p, Offence.MALFORMED, now, events, str(exc))
            return events
        match msg:
            case wire.Bulletins():
                self._on_bulletins(p, msg.raws, now, events)
            case wire.Announce():
                self._on_announce(p, msg, now, events)
            case wire.Want():
                self._on_want(p, msg, now, events)
            case wire.Sync():
                self._on_sync(p, msg, now, events)
            case wire.Graft():
                self._on_graft(p, msg.topic, now, events)
            case wire.Prune():
                self._on_prune(p, msg, now, events)
            case wire.Hello():
                p.proofs, p.public = frozenset(msg.proofs), msg.public
                self._match(p, now, events)
            case wire.Ping():
                self._send(p, wire.Pong(nonce=msg.nonce))
            case wire.Pong():
                events.append(PongReceived(peer=p.id, nonce=msg.nonce))
            case _:
                events.append(DeliveryReceived(peer=p.id, message=msg))
        self._dispatch_wants(now)
        return events

    def send(self, peer: PeerId, message: wire.Message) -> bool:
        """Queue a message the node makes itself (direct delivery, PING).

        Returns False if the peer is gone or its outbox is full.
        """
        p = self._peers.get(peer)
        return p is not None and self._send(p, message)

    def penalize(self, peer: PeerId, offence: Offence, now: float, detail: str = "") -> list[Event]:
        """Charge ``peer`` for misbehaviour the node noticed (say, a bad deposit)."""
        events: list[Event] = []
        p = self._peers.get(peer)
        if p is not None:
            self._offend(p, offence, now, events, detail)
        return events

    def request_sync(self, peer: PeerId, topic: Topic, now: float) -> None:
        """Reconcile ``topic`` with ``peer`` soon, whichever side usually opens."""
        self._sync.schedule(peer, topic, now)

    # -- bulletins -----------------------------------------------------------------
    def publish(self, bulletin: Bulletin, now: float) -> None:
        """Spread a bulletin this node made (and stored): push it to the topic's peers.

        Raises:
            LocalProtocolError: a direct bulletin, or a topic not subscribed.
        """
        topic = topic_of(bulletin)
        if topic is None:
            raise LocalProtocolError("direct bulletins are not gossiped: use the delivery path")
        if topic not in self._topics:
            raise LocalProtocolError("publishing on a topic this node does not subscribe to")
        bid = BulletinId(bulletin.id)
        if bid in self._pending:
            self.accept(bid, now)
            return
        seen = self._seen.get(bid)
        if seen is not None and seen.state == _ACCEPTED:
            return
        if seen is None:
            self._remember(bid, _ACCEPTED, (), now)
        else:
            seen.state = _ACCEPTED
        want = self._drop_want(bid)
        if want is not None:
            self._release(want, bid)
        self._n.published += 1
        self._forward(topic, bid, bulletin.raw, (), flood=self._config.flood_publish)

    def accept(self, bulletin_id: bytes, now: float) -> bool:
        """The node stored a BulletinReceived: relay it. False if it was not pending."""
        bid = BulletinId(bulletin_id)
        pending = self._pending.pop(bid, None)
        if pending is None:
            return False
        seen = self._seen.get(bid)
        senders: tuple[PeerId, ...] = ()
        if seen is not None:
            seen.state = _ACCEPTED
            senders = seen.senders
        self._n.accepted += 1
        if pending.eager:
            self._forward(pending.topic, bid, pending.bulletin.raw, senders, flood=False)
        else:
            self._catch_up(pending.topic, bid, pending.bulletin.raw)
        prev = pending.bulletin.prev
        if (
            prev is not None
            and prev not in self._seen
            and prev not in self._wants
            and not self._holdings.has(prev)
        ):
            self._want(BulletinId(prev), pending.topic, senders, eager=False)
        self._dispatch_wants(now)
        return True

    def reject(self, bulletin_id: bytes, now: float, *, penalize: bool = False) -> list[Event]:
        """The node refused a BulletinReceived: never relay it.

        With ``penalize``, its first sender is charged Offence.REJECTED (for a
        refusal the sender should have foreseen; not for a full quota).
        """
        bid = BulletinId(bulletin_id)
        events: list[Event] = []
        if self._pending.pop(bid, None) is None:
            return events
        self._n.rejected += 1
        seen = self._seen.get(bid)
        if seen is not None:
            seen.state = _REJECTED
            if penalize and seen.senders:
                p = self._peers.get(seen.senders[0])
                if p is not None:
                    self._offend(p, Offence.REJECTED, now, events)
        return events

    # -- time ----------------------------------------------------------------------
    def tick(self, now: float) -> list[Event]:
        """Run the heartbeat if it is due (see ``next_deadline``)."""
        events: list[Event] = []
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._config.heartbeat
            self._heartbeat(now, events)
            self._dispatch_wants(now)
        return events

    def data_to_send(self) -> list[tuple[PeerId, bytes]]:
        """Every queued payload, as (peer, bytes), in the order to send them; one peer's
        payloads are consecutive, so a caller can write each peer's in one go."""
        out: list[tuple[PeerId, bytes]] = []
        n = self._n
        for peer in self._dirty:  # only live peers: _detach removes the others
            p = self._peers[peer]
            for frame in p.frames:
                out.append((peer, frame))
                n.bytes_out += len(frame)
            for batch in wire.batch_raws(p.push):
                frame = wire.encode_bulletins(batch)
                out.append((peer, frame))
                n.bytes_out += len(frame)
            p.frames, p.push, p.queued_bytes = [], [], 0
        n.messages_out += len(out)
        self._dirty.clear()
        return out

    # -- receiving -----------------------------------------------------------------
    def _on_bulletins(
        self, p: _Peer, raws: Sequence[bytes], now: float, events: list[Event]
    ) -> None:
        n = self._n
        for raw in raws:
            bid = BulletinId(crypto.blake2b_256(raw))
            want = self._drop_want(bid)
            asked = None
            eager = True
            if want is not None:
                asked, eager = want.asked, want.eager
                self._release(want, bid)
            elif not p.bulletins.take(1.0, now):
                self._offend(p, Offence.FLOOD, now, events)
                if p.dropped:
                    return
                continue
            seen = self._seen.get(bid)
            if seen is not None:
                # (a want is popped by the first copy, so duplicates come unasked)
                n.duplicates += 1
                if seen.state == _INVALID:
                    self._offend(p, Offence.INVALID_BULLETIN, now, events)
                elif p.id not in seen.senders:
                    if len(seen.senders) < _MAX_SENDERS:
                        seen.senders += (p.id,)
                elif seen.excused == p.id:
                    seen.excused = None
                else:
                    self._offend(p, Offence.REPLAY, now, events)
                if p.dropped:
                    return
                continue
            if self._holdings.has(bid):
                n.duplicates += 1
                self._remember(bid, _HELD, (p.id,), now).excused = asked
                continue
            if not p.shared:
                self._offend(p, Offence.WRONG_TOPIC, now, events)
                if p.dropped:
                    return
                continue
            try:
                bulletin = Bulletin.from_bytes(raw)
            except InvalidBulletin as exc:
                n.invalid += 1
                self._remember(bid, _INVALID, (p.id,), now)
                self._offend(p, Offence.INVALID_BULLETIN, now, events, str(exc))
                if p.dropped:
                    return
                continue
            topic = topic_of(bulletin)
            if topic is None or topic not in p.shared:
                kind = Offence.WRONG_KIND if topic is None else Offence.WRONG_TOPIC
                self._offend(p, kind, now, events)
                if p.dropped:
                    return
                continue
            if len(self._pending) >= self._config.max_pending:
                n.overloaded += 1
                continue
            n.received += 1
            self._remember(bid, _PENDING, (p.id,), now).excused = asked
            self._pending[bid] = _Pending(bulletin, topic, now, eager)
            self._pending_order.append((now, bid))
            held = self._holdings.seq_id(topic, bulletin.author, bulletin.seq)
            if held is not None and held != bid:
                events.append(
                    ForkDetected(
                        topic=topic,
                        author=bulletin.author,
                        seq=bulletin.seq,
                        held=BulletinId(held),
                        received=bid,
                    )
                )
            events.append(BulletinReceived(peer=p.id, bulletin=bulletin, topic=topic))

    def _on_announce(self, p: _Peer, msg: wire.Announce, now: float, events: list[Event]) -> None:
        if msg.topic not in p.shared:
            self._offend(p, Offence.WRONG_TOPIC, now, events)
            return
        if not p.announce.take(len(msg.ids), now):
            return
        for bid in msg.ids:
            if bid not in self._seen and (bid in self._wants or not self._holdings.has(bid)):
                self._want(bid, msg.topic, (p.id,), eager=True)

    def _on_want(self, p: _Peer, msg: wire.Want, now: float, events: list[Event]) -> None:
        if msg.topic not in p.shared:
            self._offend(p, Offence.WRONG_TOPIC, now, events)
            return
        if not p.serve.take(len(msg.ids), now):
            return
        found: list[bytes] = []
        misses: list[bytes] = []
        for bid in msg.ids:
            cached = self._cache.get(bid)
            if cached is None:
                misses.append(bid)
            elif cached[0] == msg.topic:
                found.append(cached[1])
        if misses:
            found.extend(self._holdings.get(msg.topic, misses))
        for raw in found:
            if self._queue_raw(p, raw):
                self._n.served += 1

    def _on_sync(self, p: _Peer, msg: wire.Sync, now: float, events: list[Event]) -> None:
        step = self._sync.receive(p.id, msg, now)
        if not step.known:
            self._offend(p, Offence.WRONG_TOPIC, now, events)
            return
        if step.reply is not None:
            self._send(p, step.reply)
        overflow = False
        for bid in step.missing:
            if bid not in self._seen and (bid in self._wants or not self._holdings.has(bid)):
                overflow |= not self._want(bid, msg.topic, (p.id,), eager=False)
        if overflow:
            self._sync.schedule(p.id, msg.topic, now + self._config.sync.retry)
        if step.completed:
            self._n.syncs += 1
            events.append(
                SyncCompleted(peer=p.id, topic=msg.topic, rounds=step.rounds, missing=step.found)
            )

    def _on_graft(self, p: _Peer, topic: Topic, now: float, events: list[Event]) -> None:
        t = self._topics.get(topic)
        if t is None or topic not in p.shared:
            self._offend(p, Offence.WRONG_TOPIC, now, events)
            return
        if p.id in t.mesh:
            return
        backoff = self._config.prune_backoff
        if t.backoff.get(p.id, now) > now:
            self._offend(p, Offence.GRAFT_BACKOFF, now, events)
            self._send(p, wire.Prune(topic=topic, backoff=backoff))
            return
        if len(t.mesh) >= self._config.d_high:
            t.backoff[p.id] = now + backoff
            self._send(p, wire.Prune(topic=topic, backoff=backoff))
            return
        t.mesh[p.id] = None

    def _on_prune(self, p: _Peer, msg: wire.Prune, now: float, events: list[Event]) -> None:
        t = self._topics.get(msg.topic)
        if t is None or msg.topic not in p.shared:
            self._offend(p, Offence.WRONG_TOPIC, now, events)
            return
        t.mesh.pop(p.id, None)
        t.backoff[p.id] = now + msg.backoff

    # -- topics and HELLO ----------------------------------------------------------
    def _expect(self, p: _Peer) -> None:
        """The proofs ``p`` will show for each channel key we hold."""
        p.expected = {
            wire.membership_proof(key, p.session_id, p.id): topic
            for topic, t in self._topics.items()
            for key in t.keys
        }

    def _hello(self, p: _Peer) -> None:
        proofs = [
            wire.membership_proof(key, p.session_id, self._local)
            for t in self._topics.values()
            for key in t.keys
        ]
        pad = -len(proofs) % self._config.hello_padding
        proofs.extend(self._rng(wire.PROOF_SIZE) for _ in range(pad))
        self._shuffle(proofs)
        self._send(p, wire.Hello(public=PUBLIC_TOPIC in self._topics, proofs=tuple(proofs)))

    def _match(self, p: _Peer, now: float, events: list[Event]) -> None:
        shared: dict[Topic, None] = {}
        if p.public and PUBLIC_TOPIC in self._topics:
            shared[PUBLIC_TOPIC] = None
        for proof, topic in p.expected.items():
            if proof in p.proofs:
                shared[topic] = None
        if shared.keys() == p.shared.keys():
            return
        for topic in p.shared:
            if topic not in shared:
                self._leave(p, topic)
        added = [topic for topic in shared if topic not in p.shared]
        p.shared = shared
        initiator = self._local < p.id
        for topic in added:
            t = self._topics[topic]
            t.peers[p.id] = None
            if len(t.mesh) < self._config.d and t.backoff.get(p.id, now) <= now:
                t.mesh[p.id] = None
                self._send(p, wire.Graft(topic=topic))
            self._sync.add(p.id, topic, initiator=initiator, now=now)
        events.append(TopicsShared(peer=p.id, topics=frozenset(shared)))
        self._poll_sync(now)

    def _leave(self, p: _Peer, topic: Topic) -> None:
        t = self._topics.get(topic)
        if t is not None:
            t.peers.pop(p.id, None)
            t.mesh.pop(p.id, None)
            t.backoff.pop(p.id, None)
        self._sync.remove(p.id, topic)

    def _detach(self, p: _Peer, now: float) -> None:
        for topic in p.shared:
            self._leave(p, topic)
        p.shared = {}
        self._sync.remove_peer(p.id)
        self._dirty.pop(p.id, None)
        self._ready.pop(p.id, None)
        orphans = list(p.asked) + list(p.queue)
        p.asked.clear()
        p.queue.clear()
        p.frames, p.push, p.queued_bytes = [], [], 0
        for bid in orphans:
            want = self._wants.get(bid)
            if want is None or p.id not in (want.asked, want.queued):
                continue
            want.asked = want.queued = None
            if p.id in want.candidates:
                want.candidates.remove(p.id)
            self._place(want, bid)
        self._dispatch_wants(now)

    # -- sending -------------------------------------------------------------------
    def _send(self, p: _Peer, message: wire.Message) -> bool:
        if p.dropped:
            return False
        frame = wire.encode(message)
        if p.queued_bytes + len(frame) > self._config.max_outbox:
            self._n.outbox_drops += 1
            return False
        p.frames.append(frame)
        p.queued_bytes += len(frame)
        self._dirty[p.id] = None
        return True

    def _queue_raw(self, p: _Peer, raw: bytes) -> bool:
        if p.queued_bytes + len(raw) > self._config.max_outbox:
            self._n.outbox_drops += 1
            return False
        p.push.append(raw)
        p.queued_bytes += len(raw)
        self._dirty[p.id] = None
        return True

    def _forward(
        self,
        topic: Topic,
        bid: BulletinId,
        raw: bytes,
        exclude: tuple[PeerId, ...],
        *,
        flood: bool,
    ) -> None:
        t = self._topics.get(topic)
        if t is None:
            return
        self._cache_raw(t, topic, bid, raw)
        for peer in t.peers if flood else t.mesh:
            if peer not in exclude and self._queue_raw(self._peers[peer], raw):
                self._n.pushed += 1

    def _catch_up(self, topic: Topic, bid: BulletinId, raw: bytes) -> None:
        """Relay an old bulletin by announcing it to the mesh at the next heartbeat."""
        t = self._topics.get(topic)
        if t is not None:
            self._cache_raw(t, topic, bid, raw)
            if len(t.catchup) < self._config.max_catchup:
                t.catchup.append(bid)

    def _cache_raw(self, t: _TopicState, topic: Topic, bid: BulletinId, raw: bytes) -> None:
        """Remember a relayed bulletin for announcements and for serving WANTs."""
        window = t.windows[-1]
        if len(window) < wire.MAX_ANNOUNCE:
            window.append(bid)
            if self._cache_bytes + len(raw) <= self._config.max_cache_bytes:
                self._cache[bid] = (topic, raw)
                self._cache_bytes += len(raw)

    # -- wants ---------------------------------------------------------------------
    def _want(
        self, bid: BulletinId, topic: Topic, candidates: Iterable[PeerId], *, eager: bool
    ) -> bool:
        """Fetch ``bid`` from one of ``candidates``; False if the want table is full."""
        want = self._wants.get(bid)
        new = want is None
        if want is None:
            candidates = tuple(candidates)
            owner = candidates[0] if candidates else None
            if (
                len(self._wants) >= self._config.max_wants
                or self._wants_of.get(owner or PeerId(b""), 0) >= self._config.max_wants_per_peer
                or self._wants_in.get(topic, 0) >= self._config.max_wants_per_topic
            ):
                self._n.want_overflows += 1
                return False
            want = self._wants[bid] = _Want(topic, eager, owner)
            if owner is not None:
                self._wants_of[owner] = self._wants_of.get(owner, 0) + 1
            self._wants_in[topic] = self._wants_in.get(topic, 0) + 1
        want.eager |= eager
        for peer in candidates:
            if peer not in want.candidates and len(want.candidates) < _MAX_SENDERS:
                want.candidates.append(peer)
        if new:
            self._place(want, bid)
        return True

    def _place(self, want: _Want, bid: BulletinId) -> None:
        """Queue ``want`` with its next live candidate, or give it up."""
        while want.candidates and want.attempts < self._config.want_attempts:
            peer = want.candidates[want.attempts % len(want.candidates)]
            p = self._peers.get(peer)
            if p is None or p.dropped or want.topic not in p.shared:
                want.candidates.remove(peer)
                continue
            want.queued = peer
            p.queue.append(bid)
            self._ready[peer] = None
            return
        self._drop_want(bid)

    def _drop_want(self, bid: BulletinId) -> _Want | None:
        """Forget a want (arrived, or given up), freeing its owner's and topic's quota."""
        want = self._wants.pop(bid, None)
        if want is not None:
            if want.owner is not None:
                left = self._wants_of.get(want.owner, 0) - 1
                if left > 0:
                    self._wants_of[want.owner] = left
                else:
                    self._wants_of.pop(want.owner, None)
            left = self._wants_in.get(want.topic, 0) - 1
            if left > 0:
                self._wants_in[want.topic] = left
            else:
                self._wants_in.pop(want.topic, None)
        return want

    def _release(self, want: _Want, bid: BulletinId) -> None:
        """``bid`` arrived: free its slot with the peer it was asked of."""
        if want.asked is not None:
            p = self._peers.get(want.asked)
            if p is not None:
                p.asked.pop(bid, None)
                if p.queue:
                    self._ready[p.id] = None

    def _dispatch_wants(self, now: float) -> None:
        if not self._ready:
            return
        cap = self._config.max_inflight
        deadline = now + self._config.want_timeout
        for peer in list(self._ready):  # only live peers: _detach removes the others
            p = self._peers[peer]
            batches: dict[Topic, list[BulletinId]] = {}
            while p.queue and len(p.asked) < cap:
                bid = p.queue.popleft()
                want = self._wants.get(bid)
                if want is None or want.queued != peer:
                    continue
                want.queued, want.asked, want.deadline = None, peer, deadline
                want.attempts += 1
                p.asked[bid] = None
                self._want_deadlines.append((deadline, bid, peer))
                batches.setdefault(want.topic, []).append(bid)
            for topic, ids in batches.items():
                for i in range(0, len(ids), wire.MAX_WANT):
                    chunk = tuple(ids[i : i + wire.MAX_WANT])
                    self._send(p, wire.Want(topic=topic, ids=chunk))
                    self._n.wanted += len(chunk)
            if not p.queue:
                del self._ready[peer]

    # -- heartbeat -----------------------------------------------------------------

    def _heartbeat(self, now: float, events: list[Event]) -> None:
        cfg = self._config
        for peer_state in self._peers.values():
            peer_state.score *= cfg.score_decay
            peer_state.broken *= cfg.score_decay
        while self._pending_order and self._pending_order[0][0] + cfg.verdict_timeout <= now:
            since, bid = self._pending_order.popleft()
            pending = self._pending.get(bid)
            if pending is not None and pending.since == since:
                self.reject(bid, now)
        self._expire_wants(now, events)
        for topic, t in self._topics.items():
            self._maintain(topic, t, now)
        self._expire_seen(now)
        self._poll_sync(now)

    def _expire_wants(self, now: float, events: list[Event]) -> None:
        deadlines = self._want_deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, bid, peer = deadlines.popleft()
            want = self._wants.get(bid)
            if want is None or want.asked != peer or want.deadline != deadline:
                continue
            p = self._peers.get(peer)
            if p is not None:
                p.asked.pop(bid, None)
                if p.queue:
                    self._ready[peer] = None
                if want.eager and peer == want.owner:
                    # It announced this id moments ago, from what it relayed: an honest
                    # peer still holds it, and only a slow link or its serve limit keeps
                    # a few from coming, so up to ``broken_promises`` (decaying) are free.
                    # (Ids learnt by sync cost nothing: a peer may have evicted or purged
                    # what its ranges listed.)
                    p.broken += 1
                    if p.broken > self._config.broken_promises:
                        self._offend(p, Offence.UNANSWERED, now, events)
            want.asked = None
            self._n.want_timeouts += 1
            self._place(want, bid)

    def _maintain(self, topic: Topic, t: _TopicState, now: float) -> None:
        cfg = self._config
        for peer, until in list(t.backoff.items()):
            if until <= now:
                del t.backoff[peer]
        if len(t.mesh) < cfg.d_low:
            candidates = [
                q
                for q in t.peers
                if q not in t.mesh and q not in t.backoff and self._peers[q].score >= 0
            ]
            self._shuffle(candidates)
            for q in candidates[: cfg.d - len(t.mesh)]:
                t.mesh[q] = None
                self._send(self._peers[q], wire.Graft(topic=topic))
        recent: list[BulletinId] = []
        for window in list(t.windows)[-cfg.history_gossip :]:
            recent.extend(window)
        recent = recent[-wire.MAX_ANNOUNCE :]
        if recent and cfg.d_lazy:
            lazy = [q for q in t.peers if q not in t.mesh and self._peers[q].score >= 0]
            self._shuffle(lazy)
            self._announce(topic, recent, lazy[: cfg.d_lazy])
        if t.catchup:
            self._announce(topic, t.catchup, list(t.mesh))
            t.catchup = []
        if len(t.windows) == t.windows.maxlen:
            self._uncache(t.windows[0])
        t.windows.append([])

    def _uncache(self, window: list[BulletinId]) -> None:
        for bid in window:
            cached = self._cache.pop(bid, None)
            if cached is not None:
                self._cache_bytes -= len(cached[1])

    def _announce(self, topic: Topic, ids: list[BulletinId], peers: list[PeerId]) -> None:
        for i in range(0, len(ids), wire.MAX_ANNOUNCE):
            announce = wire.Announce(topic=topic, ids=tuple(ids[i : i + wire.MAX_ANNOUNCE]))
            for q in peers:
                if self._send(self._peers[q], announce):
                    self._n.announced += len(announce.ids)

    def _expire_seen(self, now: float) -> None:
        order, seen = self._seen_order, self._seen
        while order and order[0][0] <= now:
            seen.pop(order.popleft()[1], None)

    def _remember(
        self, bid: BulletinId, state: int, senders: tuple[PeerId, ...], now: float
    ) -> _Seen:
        seen = self._seen[bid] = _Seen(state, senders)
        self._seen_order.append((now + self._config.seen_ttl, bid))
        while len(self._seen) > self._config.max_seen:
            old = self._seen_order.popleft()[1]
            if old not in self._pending:
                self._seen.pop(old, None)
            else:
                self._seen_order.append((now + self._config.seen_ttl, old))
        return seen

    def _poll_sync(self, now: float) -> None:
        for peer, message in self._sync.poll(now):
            p = self._peers.get(peer)
            if p is not None:
                self._send(p, message)

    # -- scores --------------------------------------------------------------------
    def _offend(
        self, p: _Peer, offence: Offence, now: float, events: list[Event], detail: str = ""
    ) -> None:
        if p.dropped:
            return
        self._n.offences += 1
        p.score -= self._config.penalties[offence]
        if p.score <= self._config.drop_score:
            p.dropped = True
            self._n.drops += 1
            reason = offence.value + (f" ({detail})" if detail else "")
            events.append(DropPeer(peer=p.id, reason=reason, score=p.score))
            self._detach(p, now)

    # -- randomness ----------------------------------------------------------------
    def _shuffle(self, items: list[_T]) -> None:
        """Fisher-Yates with the injected rng (modulo bias of 2^-64 is irrelevant here)."""
        if len(items) < 2:
            return
        data = self._rng(8 * (len(items) - 1))
        for i in range(len(items) - 1, 0, -1):
            j = int.from_bytes(data[8 * (i - 1) : 8 * i], "little") % (i + 1)
            items[i], items[j] = items[j], items[i]
