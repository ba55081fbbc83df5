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
- Copies: a bulletin received first tells the other mesh peers DONTWANT
  (GossipSub v1.2's IDONTWANT: they need not push it to us), and a relay
  pushes at once to D_eager mesh peers and to the others a moment later,
  skipping those that have it by then (``_stagger.py``), so a member gets
  about D_eager copies, not one per mesh peer.
- Rule 1, validation before anything else: a received bulletin is deduplicated
  by id (BLAKE2b of its bytes) first, verified once (``Bulletin.from_bytes``),
  checked against the topics shared with its sender, and only then handed
  to the node as BulletinReceived. It is relayed (pushed, announced, served)
  only after the node calls ``accept``: a bulletin that failed validation or
  that the node rejected is never relayed.
- Rule 2, everything is bounded: seen-cache (size and TTL), pending verdicts,
  outstanding wants (total, per owner and per topic), message cache, per-peer
  outbox, and per-peer token buckets for messages, bytes, unrequested
  bulletins, announced ids and served ids.
- Rule 3, misbehaviour costs score: malformed messages, invalid bulletins,
  direct bulletins gossiped, topics not shared, replays and floods subtract
  penalties; scores decay toward zero each heartbeat; crossing ``drop_score``
  returns DropPeer once and the peer is ignored until ``remove_peer``.
- Anti-entropy (sync.py) runs inside: SYNC messages go to the SyncMachine and
  the ids it finds missing become wants, so every fetch takes the same
  validated path. Gaps are walked back by wanting a bulletin's ``prev``.

This module is the machine itself: the public interface, the sessions, what
each message leads to and the heartbeat's order. Each concern beneath it is a
room (listed in __init__.py) that answers and never sends, charges or reports
by itself: the machine acts on what it answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from meshnode.core import crypto, wire
from meshnode.core.gossip._config import GossipConfig
from meshnode.core.gossip._events import (
    BulletinReceived,
    Counters,
    DeliveryReceived,
    DropPeer,
    Event,
    GossipStatistics,
    PongReceived,
    SyncCompleted,
    TopicsShared,
)
from meshnode.core.gossip._hello import check_keys, expected_proofs, hello, shared_topics
from meshnode.core.gossip._intake import Intake
from meshnode.core.gossip._limits import PeerLimits
from meshnode.core.gossip._mesh import GraftVerdict, Mesh
from meshnode.core.gossip._offences import Offence
from meshnode.core.gossip._outbox import Outbox
from meshnode.core.gossip._overlay import OverlaySession
from meshnode.core.gossip._scoring import Scores
from meshnode.core.gossip._stagger import Stagger, Wave
from meshnode.core.gossip._wants import WantScheduler
from meshnode.core.sync import Holdings, SyncMachine, topic_of
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId, PeerId, Topic
from meshnode.errors import LocalProtocolError, MalformedMessage

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from meshnode.core.bulletin import Bulletin

__all__ = ["Gossip"]

_T = TypeVar("_T")


class _Peer:
    """A peer with a session: what it proved, what it shares, its rate limits."""

    __slots__ = (
        "dontwant", "dropped", "expected", "id", "limits", "proofs", "public", "session_id",
        "shared",
    )  # fmt: skip

    def __init__(self, peer: PeerId, session_id: bytes, limits: PeerLimits) -> None:
        self.id = peer
        self.session_id = session_id
        self.shared: dict[Topic, None] = {}
        self.proofs: frozenset[bytes] = frozenset()
        """The proofs of its latest HELLO."""
        self.public = False
        self.expected: dict[bytes, Topic] = {}
        """The proof it would show for each of our channel keys, and that key's topic."""
        self.dropped = False
        self.limits = limits
        self.dontwant: dict[BulletinId, None] = {}
        """The ids it said DONTWANT for lately (at most ``max_dontwant``, oldest first)."""


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
        self._keys: dict[Topic, tuple[bytes, ...]] = {}
        """The subscribed topics and the member keys presented for each."""
        self._mesh = Mesh(cfg, self._shuffle)
        self._peers: dict[PeerId, _Peer] = {}
        self._scores = Scores(cfg)
        self._n = Counters()
        self._intake = Intake(cfg, holdings, self._n)
        self._wants = WantScheduler(cfg, self._reachable)
        self._outbox = Outbox(cfg.max_outbox, self._n)
        self._stagger = Stagger(cfg.stagger, cfg.max_pending)
        self._next_heartbeat = now + cfg.heartbeat

    # -- queries -------------------------------------------------------------------

    @property
    def local(self) -> PeerId:
        """This node's peer id."""
        return self._local

    def topics(self) -> list[Topic]:
        """The topics this node subscribes to."""
        return list(self._keys)

    def peers(self) -> list[PeerId]:
        """The peers with a live (not dropped) session."""
        return [p.id for p in self._peers.values() if not p.dropped]

    def shared_topics(self, peer: PeerId) -> frozenset[Topic]:
        """The topics shared with ``peer``."""
        p = self._peers.get(peer)
        return frozenset(p.shared) if p is not None else frozenset()

    def mesh(self, topic: Topic) -> list[PeerId]:
        """The mesh peers of ``topic`` (eager push goes to them)."""
        return self._mesh.members(topic)

    def relayers(self, topic: Topic) -> list[PeerId]:
        """The peers sharing ``topic`` that sent us, this session, a bulletin we accepted
        before we accepted it (the overlay upkeep keeps peers that serve)."""
        return self._mesh.relayers(topic)

    def overlay_session(self, peer: PeerId, *, outbound: bool, opened: float) -> OverlaySession:
        """``peer``'s session as the public overlay's upkeep sees it (``plan_overlay``):
        serving if it relayed a public bulletin we accepted or shares one of our
        channels."""
        p = self._peers.get(peer)
        return OverlaySession(
            peer=peer, outbound=outbound, opened=opened,
            relayed=self._mesh.relayed(PUBLIC_TOPIC, peer),
            member=p is not None and any(topic != PUBLIC_TOPIC for topic in p.shared),
        )  # fmt: skip

    def score(self, peer: PeerId) -> float:
        """The current misbehaviour score of ``peer`` (0 is clean, lower is worse)."""
        return self._scores.score(peer)

    def next_deadline(self) -> float:
        """When ``tick`` must next be called (it may come sooner after any input)."""
        return min(self._next_heartbeat, self._stagger.next_due())

    def statistics(self) -> GossipStatistics:
        """A snapshot of the counters."""
        return self._n.snapshot()

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
        check_keys(self._keys, topic, keys, self._config.hello_padding)
        if topic not in self._keys:
            self._mesh.add(topic)
        self._keys[topic] = keys
        return self._resubscribe(now)

    def unsubscribe(self, topic: Topic, *, now: float) -> list[Event]:
        """Stop taking part in ``topic``; peers get a new HELLO."""
        if self._keys.pop(topic, None) is None:
            return []
        self._mesh.remove(topic)
        return self._resubscribe(now)

    def _resubscribe(self, now: float) -> list[Event]:
        events: list[Event] = []
        for p in self._peers.values():
            if not p.dropped:
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
        p = _Peer(peer, bytes(session_id), PeerLimits(self._config, now))
        self._peers[peer] = p
        self._scores.add(peer)
        self._wants.add_peer(peer)
        self._outbox.add(peer)
        self._hello(p)

    def remove_peer(self, peer: PeerId, now: float) -> None:
        """The session with ``peer`` closed (for any reason, including DropPeer)."""
        p = self._peers.pop(peer, None)
        if p is not None:
            self._scores.remove(peer)
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
        if not (p.limits.messages.take(1.0, now) and p.limits.bytes_in.take(len(data), now)):
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
            case wire.Sync():
                self._on_sync(p, msg, now, events)
            case wire.Announce() | wire.Want() | wire.Graft() | wire.Prune() if (
                msg.topic not in p.shared
            ):
                self._offend(p, Offence.WRONG_TOPIC, now, events)
            case wire.Announce():
                if p.limits.announce.take(len(msg.ids), now):
                    for bid in self._lacking(msg.ids):
                        self._want(bid, msg.topic, (p.id,), eager=True)
            case wire.DontWant():
                if p.limits.announce.take(len(msg.ids), now):
                    self._dontwant(p, msg.ids)
            case wire.Want():
                if p.limits.serve.take(len(msg.ids), now):
                    for raw in self._mesh.serve(msg.topic, msg.ids, self._holdings):
                        if self._outbox.put(p.id, raw, raw=True):
                            self._n.served += 1
            case wire.Graft():
                self._on_graft(p, msg.topic, now, events)
            case wire.Prune():
                self._mesh.prune(msg.topic, p.id, msg.backoff, now)
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

    # -- bulletins -----------------------------------------------------------------
    def publish(self, bulletin: Bulletin, now: float) -> None:
        """Spread a bulletin this node made (and stored): push it to the topic's peers.

        Raises:
            LocalProtocolError: a direct bulletin, or a topic not subscribed.
        """
        topic = topic_of(bulletin)
        if topic is None:
            raise LocalProtocolError("direct bulletins are not gossiped: use the delivery path")
        if topic not in self._keys:
            raise LocalProtocolError("publishing on a topic this node does not subscribe to")
        bid = BulletinId(bulletin.id)
        if bid in self._intake.pending:
            self.accept(bid, now)
            return
        if not self._intake.own(bid, now):
            return
        self._wants.arrived(bid)
        self._n.published += 1
        self._forward(topic, bid, bulletin.raw, (), now, flood=self._config.flood_publish)

    def accept(self, bulletin_id: bytes, now: float) -> bool:
        """The node stored a BulletinReceived: relay it. False if it was not pending."""
        bid = BulletinId(bulletin_id)
        accepted = self._intake.accept(bid)
        if accepted is None:
            return False
        pending, senders = accepted
        self._mesh.credit(pending.topic, senders)
        if pending.eager:
            self._forward(pending.topic, bid, pending.bulletin.raw, senders, now, flood=False)
        else:
            self._mesh.catch_up(pending.topic, bid, pending.bulletin.raw)
        prev = pending.bulletin.prev
        if (
            prev is not None
            and prev not in self._intake.seen
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
        events: list[Event] = []
        senders = self._intake.reject(BulletinId(bulletin_id))
        if penalize and senders:
            p = self._peers.get(senders[0])
            if p is not None:
                self._offend(p, Offence.REJECTED, now, events)
        return events

    # -- time ----------------------------------------------------------------------
    def tick(self, now: float) -> list[Event]:
        """Send the second waves that are due, and run the heartbeat if it is (see
        ``next_deadline``)."""
        events: list[Event] = []
        self._second_waves(self._stagger.due(now))
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._config.heartbeat
            self._heartbeat(now, events)
            self._dispatch_wants(now)
        return events

    def data_to_send(self) -> list[tuple[PeerId, bytes]]:
        """Every queued payload, as (peer, bytes), in the order to send them; one peer's
        payloads are consecutive, so a caller can write each peer's in one go."""
        return self._outbox.drain()

    def _heartbeat(self, now: float, events: list[Event]) -> None:
        self._scores.decay()
        for bid in self._intake.overdue(now):
            self.reject(bid, now)
        self._n.want_timeouts += self._wants.expire(
            now, lambda peer: self._broken_promise(peer, now, events)
        )
        for peer, message in self._mesh.heartbeat(now, self._scores.in_good_standing):
            if self._send(self._peers[peer], message) and isinstance(message, wire.Announce):
                self._n.announced += len(message.ids)
        self._intake.seen.expire(now)
        self._poll_sync(now)

    # -- receiving -----------------------------------------------------------------
    def _on_bulletins(
        self, p: _Peer, raws: Sequence[bytes], now: float, events: list[Event]
    ) -> None:
        for raw in raws:
            bid = BulletinId(crypto.blake2b_256(raw))
            want = self._wants.arrived(bid)
            if want is None and not p.limits.bulletins.take(1.0, now):
                self._offend(p, Offence.FLOOD, now, events)
            else:
                asked, eager = (want.asked, want.eager) if want is not None else (None, True)
                reported = len(events)
                offence = self._intake.check(
                    p.id, bid, raw, p.shared, asked=asked, eager=eager, now=now, events=events
                )
                if offence is not None:
                    self._offend(p, offence[0], now, events, offence[1])
                elif len(events) > reported and len(raw) >= self._config.stagger_size:
                    new = events[-1]  # (a new pending bulletin is reported last)
                    assert isinstance(new, BulletinReceived)
                    self._tell_dontwant(p.id, bid, new.topic)
            if p.dropped:
                return

    def _on_sync(self, p: _Peer, msg: wire.Sync, now: float, events: list[Event]) -> None:
        step = self._sync.receive(p.id, msg, now)
        if not step.known:
            self._offend(p, Offence.WRONG_TOPIC, now, events)
            return
        if step.reply is not None:
            self._send(p, step.reply)
        overflow = False
        for bid in self._lacking(step.missing):
            overflow |= not self._want(bid, msg.topic, (p.id,), eager=False)
        if overflow:
            self._sync.schedule(p.id, msg.topic, now + self._config.sync.retry)
        if step.completed:
            self._n.syncs += 1
            events.append(
                SyncCompleted(peer=p.id, topic=msg.topic, rounds=step.rounds, missing=step.found)
            )

    def _on_graft(self, p: _Peer, topic: Topic, now: float, events: list[Event]) -> None:
        verdict = self._mesh.graft(topic, p.id, now)
        if verdict is GraftVerdict.IN_BACKOFF:
            self._offend(p, Offence.GRAFT_BACKOFF, now, events)
        if verdict in (GraftVerdict.IN_BACKOFF, GraftVerdict.FULL):
            self._send(p, wire.Prune(topic=topic, backoff=self._config.prune_backoff))

    # -- topics and HELLO ----------------------------------------------------------
    def _hello(self, p: _Peer) -> None:
        """Expect ``p``'s proofs for our keys now, and send it our HELLO."""
        p.expected = expected_proofs(self._keys, p.session_id, p.id)
        ours = hello(
            self._keys, p.session_id, self._local,
            padding=self._config.hello_padding, rng=self._rng, shuffle=self._shuffle,
        )  # fmt: skip
        self._send(p, ours)

    def _match(self, p: _Peer, now: float, events: list[Event]) -> None:
        public = p.public and PUBLIC_TOPIC in self._keys
        shared = shared_topics(p.expected, p.proofs, public=public)
        if shared.keys() == p.shared.keys():
            return
        for topic in p.shared:
            if topic not in shared:
                self._leave(p, topic)
        added = [topic for topic in shared if topic not in p.shared]
        p.shared = shared
        initiator = self._local < p.id
        for topic in added:
            if self._mesh.join(topic, p.id, now):
                self._send(p, wire.Graft(topic=topic))
            self._sync.add(p.id, topic, initiator=initiator, now=now)
        events.append(TopicsShared(peer=p.id, topics=frozenset(shared)))
        self._poll_sync(now)

    def _leave(self, p: _Peer, topic: Topic) -> None:
        self._mesh.leave(topic, p.id)
        self._sync.remove(p.id, topic)

    def _detach(self, p: _Peer, now: float) -> None:
        for topic in p.shared:
            self._leave(p, topic)
        p.shared = {}
        self._sync.remove_peer(p.id)
        self._outbox.remove(p.id)
        self._wants.remove_peer(p.id)
        self._dispatch_wants(now)

    # -- sending -------------------------------------------------------------------
    def _send(self, p: _Peer, message: wire.Message) -> bool:
        return not p.dropped and self._outbox.put(p.id, wire.encode(message), raw=False)

    def _forward(
        self,
        topic: Topic,
        bid: BulletinId,
        raw: bytes,
        exclude: tuple[PeerId, ...],
        now: float,
        *,
        flood: bool,
    ) -> None:
        """Push ``bid`` to the mesh (every peer sharing the topic with ``flood``, all at
        once), save those in ``exclude`` or that said DONTWANT: ``d_eager`` of them now;
        the others, if the bulletin is ``stagger_size`` or more, in a second wave if
        they still lack it then (see ``_stagger.py``)."""
        cfg = self._config
        peers = [
            peer
            for peer in self._mesh.relay(topic, bid, raw, flood=flood)
            if peer not in exclude and bid not in self._peers[peer].dontwant
        ]
        staggered = not flood and cfg.stagger > 0 and len(raw) >= cfg.stagger_size
        eager = cfg.d_eager if staggered else len(peers)
        if len(peers) > eager:
            self._shuffle(peers)
            self._second_waves(self._stagger.add(bid, raw, tuple(peers[eager:]), now))
        for peer in peers[:eager]:
            if self._outbox.put(peer, raw, raw=True):
                self._n.pushed += 1

    def _second_waves(self, waves: list[Wave]) -> None:
        """Push each wave to its peers that still lack it: not gone, not a sender of it,
        not having said DONTWANT."""
        for wave in waves:
            seen = self._intake.seen.get(wave.bulletin_id)
            senders = seen.senders if seen is not None else ()
            for peer in wave.peers:
                p = self._peers.get(peer)
                if p is None or p.dropped or peer in senders or wave.bulletin_id in p.dontwant:
                    self._n.spared += 1
                elif self._outbox.put(peer, wave.raw, raw=True):
                    self._n.pushed += 1

    def _tell_dontwant(self, sender: PeerId, bid: BulletinId, topic: Topic) -> None:
        """A new bulletin from ``sender``: its topic's other mesh peers need not push it."""
        for peer in self._mesh.members(topic):
            if peer != sender and self._outbox.dontwant(peer, bid):
                self._n.dontwants_sent += 1

    def _dontwant(self, p: _Peer, ids: Sequence[BulletinId]) -> None:
        """Remember what ``p`` said it has, the newest ``max_dontwant`` ids."""
        dontwant, limit = p.dontwant, self._config.max_dontwant
        for bid in ids:
            dontwant[bid] = None
        while len(dontwant) > limit:
            del dontwant[next(iter(dontwant))]

    def _poll_sync(self, now: float) -> None:
        for peer, message in self._sync.poll(now):
            p = self._peers.get(peer)
            if p is not None:
                self._send(p, message)

    # -- wants ---------------------------------------------------------------------
    def _want(
        self, bid: BulletinId, topic: Topic, candidates: Iterable[PeerId], *, eager: bool
    ) -> bool:
        """Fetch ``bid`` from one of ``candidates``; False if the want table is full."""
        if self._wants.want(bid, topic, candidates, eager=eager):
            return True
        self._n.want_overflows += 1
        return False

    def _lacking(self, ids: Iterable[BulletinId]) -> list[BulletinId]:
        """Those of ``ids`` neither seen lately nor stored (a wanted id is not stored yet)."""
        seen, wants, has = self._intake.seen, self._wants, self._holdings.has
        return [bid for bid in ids if bid not in seen and (bid in wants or not has(bid))]

    def _reachable(self, peer: PeerId, topic: Topic) -> bool:
        p = self._peers.get(peer)
        return p is not None and not p.dropped and topic in p.shared

    def _dispatch_wants(self, now: float) -> None:
        if not self._wants.ready:
            return
        for peer, message in self._wants.dispatch(now):
            self._send(self._peers[peer], message)
            self._n.wanted += len(message.ids)

    # -- scores --------------------------------------------------------------------
    def _offend(
        self, p: _Peer, offence: Offence, now: float, events: list[Event], detail: str = ""
    ) -> None:
        if p.dropped:
            return
        self._n.offences += 1
        if self._scores.charge(p.id, offence):
            p.dropped = True
            self._n.drops += 1
            reason = offence.value + (f" ({detail})" if detail else "")
            events.append(DropPeer(peer=p.id, reason=reason, score=self._scores.score(p.id)))
            self._detach(p, now)

    def _broken_promise(self, peer: PeerId, now: float, events: list[Event]) -> None:
        if self._scores.broke_promise(peer):
            self._offend(self._peers[peer], Offence.UNANSWERED, now, events)

    # -- randomness ----------------------------------------------------------------
    def _shuffle(self, items: list[_T]) -> None:
        """Fisher-Yates with the injected rng (modulo bias of 2^-64 is irrelevant here)."""
        if len(items) < 2:
            return
        data = self._rng(8 * (len(items) - 1))
        for i in range(len(items) - 1, 0, -1):
            j = int.from_bytes(data[8 * (i - 1) : 8 * i], "little") % (i + 1)
            items[i], items[j] = items[j], items[i]
