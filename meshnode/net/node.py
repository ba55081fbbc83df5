"""The node: one group's presence on the mesh, owning its DHT and sessions.

Theory of operation:
1. :func:`start_node` binds the session listener (TCP) and the DHT (UDP) on the
   same port number (``net/ports.py``) for an identity and its open store, and
   announces the address ``net/interfaces.py`` finds; it starts the node's loops
   in one nursery, and closes them in reverse order. The public entry point,
   :func:`meshnode.launch.open_node`, opens the data directory (the identity is
   created on first use) and the store, and calls it.
2. Every session, dialled or accepted, is registered with the one
   :class:`~meshnode.core.gossip.Gossip` machine. Each session's reader task
   hands what it read straight to the machine (``Session.deliver_to``), and
   the machine's output is written to the sessions at once, one write per
   peer per flush. A peer whose send queue is full is too slow to keep: its
   session is closed, never buffered without bound.
3. The machine's events are acted on here: a received bulletin is stored
   (committed; relayed bulletins skip the fsync, see ``Store.add_unsynced``)
   and only then accepted for relaying; a DropPeer closes the
   session; deliveries are answered (see ``_on_delivery``).
4. The node's own bulletins are stored durably before they are published
   (with the next pass), so every operation that returns a bulletin returns a
   durable one.
5. Background loops keep the node present: the contact record is
   republished before it expires, each channel's rendezvous record is
   published for each new day, members found there are dialled up to the
   mesh degree, direct bulletins are delivered or left with holders, and
   mail left for us is collected.

Everything timed is in :class:`NodeConfig`, so tests run in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from meshnode.core import crypto, records, views, wire
from meshnode.core.address import network_of
from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.channel import Channel, day_of
from meshnode.core.gossip import (
    BulletinReceived,
    DeliveryReceived,
    DropPeer,
    Event,
    ForkDetected,
    Gossip,
    GossipConfig,
    Offence,
    SyncCompleted,
    TopicsShared,
    channel_keys,
)
from meshnode.core.identity import Identity, fingerprint, parse_key
from meshnode.core.invite import MAX_GRANT, Grant, InviteCode, make_code, parse_code, redeem_proof
from meshnode.core.membership import Frontier, KeyUpdate, Log, OpType, Post
from meshnode.core.noise import OPEN_MESH_KEY
from meshnode.core.wire import PUBLIC_TOPIC, PeerId, Topic
from meshnode.errors import (
    InvalidBulletin,
    InvalidInvite,
    InviterUnreachable,
    MeshError,
    NotARecipient,
    PeerDisconnected,
    RemoteProtocolError,
    StoreError,
    UnknownContact,
    UnknownInvite,
)
from meshnode.net import dht as _dht
from meshnode.net import ports, redact, transport
from meshnode.net.archive import Archive
from meshnode.net.interfaces import announced
from meshnode.net.memberships import refusal
from meshnode.store import LOCAL, Budget, Contact, Insert, Origin, Store, StoredBulletin, Trust

log = logging.getLogger("meshnode.node")

DEFAULT_LISTEN: Final = "0.0.0.0:7447"
DIRECT_EXPIRY: Final = 7 * 86400
DEFAULT_INVITE_EXPIRY: Final = 7 * 86400
MAX_LEAF_PROOFS: Final = 8
"""Leaf epochs of one channel a HELLO proves at most (current first)."""
REDEEM_PARTS: Final = 256
"""Parts of a grant a joining node takes at most (each up to 64 KiB)."""
"""Direct bulletins wait for offline recipients this long unless told otherwise."""
MAX_HOLDERS: Final = 8


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Every interval and bound of a node; the defaults suit a daemon that runs for months.

    A daemon's ``[limits]``, ``[timing]`` and ``[store]`` tables become one with
    :func:`meshnode.launch.node_config`.

    Attributes:
        session: the sessions' limits and timeouts.
        dht: the DHT's timeouts, intervals and quotas.
        gossip: propagation and anti-entropy parameters.
        contact_lifetime: seconds a published contact record is valid.
        overlay_interval: seconds between looks for channel members.
        delivery_interval: seconds between attempts to deliver direct bulletins.
        mail_interval: seconds between collections of mail held for us.
        purge_interval: seconds between purges of expired bulletins.
        store_interval: seconds at least between two passes that store received
            bulletins and send what was relayed or published since: under a steady
            stream, what arrives meanwhile waits and shares the next pass, made at
            the first session read or post after the interval, or half an interval
            later at the latest. The first after a quiet spell runs at once.
        author_quota: bytes of bulletins stored per author.
        budget: bytes the store may hold, per share.
        merge_delay: seconds a member other than the most senior waits before it
            starts the epoch that merges sibling epochs itself.
    """

    session: transport.SessionConfig = field(default_factory=transport.SessionConfig)
    dht: _dht.DHTConfig = field(default_factory=_dht.DHTConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    contact_lifetime: int = records.DEFAULT_LIFETIME
    overlay_interval: float = 60.0
    delivery_interval: float = 60.0
    mail_interval: float = 600.0
    purge_interval: float = 3600.0
    store_interval: float = 0.05
    author_quota: int = 64 * 1024 * 1024
    budget: Budget = field(default_factory=Budget)
    merge_delay: float = 60.0


@dataclass
class _Peer:
    session: transport.Session
    outbound: bool
    since: float


class Node:
    """A running node. Made by :func:`meshnode.launch.open_node` (or, inside the shell,
    :func:`start_node`); its methods are the node API."""

    def __init__(
        self,
        *,
        identity: Identity,
        archive: Archive,
        dht: _dht.DHTNode,
        network_key: bytes,
        address: str,
        announce: str,
        config: NodeConfig,
        nursery: trio.Nursery,
    ) -> None:
        self.identity = identity
        self.archive = archive
        self.dht = dht
        self.address = address
        """The bound ``host:port`` (TCP sessions and UDP DHT share the port)."""
        self.announce = announce
        """The address put in contact records and invites."""
        self._network_key = network_key
        host = address.rpartition(":")[0]
        self._local_host = None if host in ("0.0.0.0", "") else host
        """Dial from the bound address, so peers see the address we listen on."""
        self._config = config
        self._nursery = nursery
        self._peers: dict[bytes, _Peer] = {}
        self._dialing: dict[bytes, trio.Event] = {}
        self._arrived = trio.Event()
        """Set (and replaced) whenever bulletins were stored: wakes ``bulletins()`` readers."""
        self._status_changed = trio.Event()
        """Set (and replaced) by ``_changed``: wakes ``changes()`` watchers."""
        self._to_store: list[tuple[Bulletin, Origin]] = []
        """Received bulletins for the next group commit, with where each came from (each
        is pending in gossip, so ``max_pending`` bounds this); none is relayed before it
        is stored."""
        self._known: frozenset[bytes] | None = None
        """Contacts and members of our channels (None: to be read again)."""
        self._store_now = trio.Event()
        """Set when the next pass has work: bulletins to store, or our own to publish."""
        self._store_due = trio.Event()
        self._commit_due = math.inf
        """While a pass waits for ``store_interval``: when it is due."""
        self._last_sync: float | None = None
        self._reachable: bool | None = None
        self._deliver_now = trio.Event()
        self._merging: set[bytes] = set()
        """Channels whose sibling epochs a task of ours is about to merge."""
        self._caught_up: set[tuple[bytes, bytes]] = set()
        """(member, our epoch id) pairs already handed our newest keys."""
        self._redeeming: dict[bytes, trio.MemorySendChannel[wire.Redeemed]] = {}
        """Inviter key -> where its answers to our REDEEM go, while we wait for them."""
        self._deposits: dict[tuple[bytes, wire.BulletinId], bytes] = {}
        """(peer, bulletin id) -> recipient of deposits awaiting an ack."""
        self.gossip = Gossip(
            local=PeerId(identity.public_key),
            holdings=archive,
            rng=os.urandom,
            now=trio.current_time(),
            config=config.gossip,
        )
        self.gossip.subscribe(PUBLIC_TOPIC, now=trio.current_time())
        archive.store.watch(self._changed)
        self._know_again()
        for channel in archive.channels():
            self._subscribe(channel)

    # Sessions --------------------------------------------------------------------

    def peers(self) -> list[views.PeerInfo]:
        """The open sessions, oldest first, with the bytes each has carried."""
        infos = []
        for key, p in sorted(self._peers.items(), key=lambda kv: kv[1].since):
            counters = p.session.statistics().counters
            infos.append(
                views.PeerInfo(
                    key=key,
                    name=self.archive.author_name(key),
                    address=p.session.remote_address,
                    outbound=p.outbound,
                    since=p.since,
                    bytes_sent=counters.bytes_sent,
                    bytes_received=counters.bytes_received,
                )
            )
        return infos

    async def connect(self, address: str) -> views.PeerInfo:
        """Open a session with the node at ``address`` (or return the one already open).

        Raises:
            PeerDisconnected: nothing answers there, or the handshake failed
                (another mesh's network key, or not a meshnode node).
            OperationTimeout: no answer within the session's ``handshake_timeout``.
        """
        key = await self._dial(address)
        return next(p for p in self.peers() if p.key == key)

    async def _dial(self, address: str) -> bytes:
        """A session with the node at ``address``: its group key once it is registered."""
        try:
            session = await transport.connect_session(
                self._nursery,
                address,
                identity=self.identity,
                network_key=self._network_key,
                config=self._config.session,
                local_host=self._local_host,
            )
        except RemoteProtocolError as exc:
            raise PeerDisconnected(f"no meshnode session with {address}: {exc}") from None
        key = session.peer_key
        if key == self.identity.public_key or self._blocked(key):
            await session.aclose()
            if key == self.identity.public_key:
                raise PeerDisconnected(f"{address} is this node itself")
            raise PeerDisconnected(f"{address} is a blocked group")
        if not self._keeps(key, outbound=True):
            await session.aclose()
            return key
        started = trio.Event()
        self._nursery.start_soon(self._run_session, session, True, started)
        await started.wait()
        if records.node_id(key) not in {entry[0] for entry in self.dht.routing_snapshot()}:
            # A node dialled by hand, through an invite or as a bootstrap address also
            # joins our routing table: its DHT listens on the same port number.
            self._nursery.start_soon(self._join_dht, address)
        return key

    async def _join_dht(self, address: str) -> None:
        with contextlib.suppress(MeshError, ValueError):
            await self.dht.bootstrap([address])

    async def _accept(self, session: transport.Session) -> None:
        if not self._reachable:  # another node dialled us and completed a handshake
            self._reachable = True
            self._changed()
        key = session.peer_key
        if key == self.identity.public_key or self._blocked(key):
            return
        if self._keeps(key, outbound=False):
            await self._run_session(session, False, trio.Event())

    def _keeps(self, key: bytes, *, outbound: bool) -> bool:
        """Whether a new session with ``key`` should replace the one already open, if any.

        Two nodes that dial each other at once must keep the same connection, or
        each closes the one the other kept: both keep the one dialled by the
        smaller group key. A dial that races one of our own keeps the first."""
        existing = self._peers.get(key)
        if existing is None:
            return True
        if existing.outbound == outbound:
            return False
        smaller_dials = self.identity.public_key if outbound else key
        return smaller_dials == min(self.identity.public_key, key)

    async def _run_session(
        self, session: transport.Session, outbound: bool, started: trio.Event
    ) -> None:
        key = session.peer_key
        if not self._keeps(key, outbound=outbound):
            started.set()
            with trio.CancelScope(shield=True):
                await session.aclose()
            return
        replaced = self._peers.pop(key, None)
        if replaced is not None:
            self.gossip.remove_peer(PeerId(key), trio.current_time())
            self._nursery.start_soon(replaced.session.aclose)
        entry = self._peers[key] = _Peer(session, outbound, time.time())
        self.gossip.add_peer(PeerId(key), session.handshake_hash, trio.current_time())
        log.info(
            "session with %s at %s",
            redact.peer(fingerprint(key)),
            redact.peer(session.remote_address),
        )
        self._changed()
        peer = PeerId(key)

        def received(messages: list[bytes]) -> None:
            if self._peers.get(key) is not entry:
                return  # replaced, or on its way out: the peer's state is gone from gossip
            now = trio.current_time()
            for data in messages:
                self._handle(self.gossip.receive_data(peer, data, now))
            self._nudge(now)
            self._flush()

        try:
            self._flush()
            session.deliver_to(received)
            started.set()
            await session.wait_closed()
            log.info(
                "session with %s ended: %s",
                redact.peer(fingerprint(key)),
                redact.peer(session.statistics().closed_reason),
            )
        finally:
            started.set()
            if self._peers.get(key) is entry:  # not if a preferred session replaced it
                del self._peers[key]
                self.gossip.remove_peer(PeerId(key), trio.current_time())
                self._changed()
            with trio.CancelScope(shield=True):
                await session.aclose()

    def _flush(self) -> None:
        """Hand the machine's output to the sessions, one write per peer, never blocking:
        a peer whose send queue is full is too slow to keep, and is closed."""
        for peer, group in itertools.groupby(self.gossip.data_to_send(), key=lambda x: x[0]):
            p = self._peers.get(peer)
            if p is None:
                continue
            try:
                p.session.send_many_nowait([payload for _, payload in group])
            except trio.WouldBlock:
                log.warning(
                    "closing the session with %s: too slow to keep up",
                    redact.peer(fingerprint(peer)),
                )
                self._nursery.start_soon(p.session.aclose)
            except PeerDisconnected:
                pass

    async def _close(self, key: bytes) -> None:
        p = self._peers.get(key)
        if p is not None:
            await p.session.aclose()

    # Gossip events -----------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case BulletinReceived():
                    self._to_store.append((event.bulletin, self._origin(event)))
                    self._store_now.set()
                case ForkDetected():
                    log.warning(
                        "fork: %s signed two bulletins with seq %d",
                        redact.peer(fingerprint(event.author)),
                        event.seq,
                    )
                case DropPeer():
                    log.warning("dropping a peer: %s (score %.0f)", event.reason, event.score)
                    self._nursery.start_soon(self._close, bytes(event.peer))
                case SyncCompleted():
                    self._last_sync = time.time()
                    self._changed()
                case DeliveryReceived():
                    self._on_delivery(event.peer, event.message)
                case TopicsShared():
                    self._catch_up(bytes(event.peer), event.topics)
                case _:
                    pass

    def _nudge(self, now: float) -> None:
        """A session read or a post: the waiting pass, if it is due, runs now."""
        if now >= self._commit_due:
            self._store_due.set()

    async def _storer(self) -> None:
        """Group passes: what every session received since the last pass is stored in
        one transaction and only then accepted, i.e. relayed, and our own bulletins
        published meanwhile go out with it. Passes are ``store_interval`` apart at
        least, so under load a pass holds more and costs less per bulletin, and a
        peer gets one write per pass, not one per bulletin. (Relayed bulletins are
        committed without an fsync: see ``Store.add_unsynced``; our own were stored
        durably before ``post`` returned.)"""
        interval = self._config.store_interval
        last = -math.inf
        while True:
            await self._store_now.wait()
            due = last + interval
            if trio.current_time() < due:
                # The pass rides on the first session read or post after ``due`` (see
                # ``_nudge``), so a steady stream costs no timer wake-up of its own;
                # the deadline bounds the wait when nothing comes.
                self._commit_due = due
                with trio.move_on_at(due + interval / 2):
                    await self._store_due.wait()
                self._commit_due = math.inf
                self._store_due = trio.Event()
            last = trio.current_time()
            self._store_now = trio.Event()
            admitted, self._to_store = self._admitted(self._to_store), []
            if not admitted:  # only our own to publish
                self._flush()
                continue
            batch = [b for b, _ in admitted]
            try:
                results = self.archive.store_unsynced(batch, [o for _, o in admitted])
                self._on_stored(batch, results, trio.current_time())
            except StoreError as exc:
                # Our disk, not the senders' doing: refused without a charge (those
                # already accepted stay so), and fetched again by anti-entropy.
                log.error("could not store %d bulletins: %s", len(batch), exc)
                now = trio.current_time()
                for bulletin in batch:
                    self.gossip.reject(bulletin.id, now)
            self._flush()

    def _admitted(self, batch: list[tuple[Bulletin, Origin]]) -> list[tuple[Bulletin, Origin]]:
        """The received bulletins that are heard: an expired one is neither stored nor
        relayed (docs/spec/gossip.md, "Expiry"), nor is a channel bulletin whose
        author is not a member; one whose author the log does not know yet is held
        until the log says (docs/spec/membership.md)."""
        now, wall = trio.current_time(), int(time.time())
        heard = []
        for bulletin, origin in batch:
            if bulletin.expired(wall):
                self._handle(self.gossip.reject(bulletin.id, now))
                continue
            verdict = self.archive.memberships.admit(bulletin)
            if verdict is Post.ACCEPT:
                heard.append((bulletin, origin))
                continue
            if verdict is Post.HOLD:
                self.archive.memberships.hold(bulletin)
            self._handle(self.gossip.reject(bulletin.id, now))
        return heard

    def _origin(self, received: BulletinReceived) -> Origin:
        """Where a received bulletin comes from, as the store's admission weighs it
        (docs/spec/store.md, "Budget"): its author's trust, and the peer and source
        network that delivered it."""
        author = received.bulletin.author
        if author == self.identity.public_key:
            trust = Trust.OWN
        elif author in self._known_groups():
            trust = Trust.KNOWN
        elif self.archive.store.endorsed(author):
            trust = Trust.ENDORSED
        else:
            trust = Trust.STRANGER
        peer = self._peers.get(bytes(received.peer))
        network = b"" if peer is None else network_of(peer.session.remote_address)
        return Origin(trust, peer=bytes(received.peer), network=network)

    def _known_groups(self) -> frozenset[bytes]:
        """Our contacts (unless blocked) and the members of our channels."""
        if self._known is None:
            known = {c.key for c in self.archive.store.contacts() if not c.blocked}
            for channel in self.archive.channels():
                log = self.archive.memberships.log(channel.id)
                if log is not None:
                    known.update(log.members())
            known.discard(self.identity.public_key)
            self._known = frozenset(known)
        return self._known

    def _know_again(self) -> None:
        """Contacts or members changed: their held bulletins rank as known (so eviction
        spares them and strangers' bounds stop counting them)."""
        self._known = None
        try:
            self.archive.store.raise_trust(self._known_groups(), Trust.KNOWN)
        except StoreError as exc:
            log.error("could not rank the bulletins of known groups: %s", exc)

    def _catch_up(self, peer: bytes, shared: frozenset[Topic]) -> None:
        """A member of one of our channels who shares no epoch with us may be on a
        stale one (offline across rekeys, say): if it still shares none after
        ``merge_delay`` (a rekey's own key updates take less), hand it our newest
        keys again, once per epoch of ours. (If it is we who are stale, it ignores
        keys it holds.)"""
        for channel in self.archive.channels():
            log = self.archive.memberships.log(channel.id)
            if log is None or not log.is_member(peer):
                continue
            if Topic(channel.id) in shared:
                if self.archive.memberships.pending_token(channel.id) is not None:
                    self._spawn(functools.partial(self._redeem_offline, peer, channel.id))
                continue
            if (peer, channel.current) not in self._caught_up:
                self._caught_up.add((peer, channel.current))
                self._spawn(functools.partial(self._hand_again, peer, channel.id))

    def _spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        """Start ``job`` in the node's nursery; a store error (a full disk, say) ends
        that job alone, logged, and never the node."""

        async def guarded() -> None:
            try:
                await job()
            except StoreError as exc:
                log.error("a background job stopped: %s", exc)

        self._nursery.start_soon(guarded)

    async def _hand_again(self, peer: bytes, channel_id: bytes) -> None:
        await trio.sleep(self._config.merge_delay)
        channel = self.archive.channel(channel_id)
        if channel is None or Topic(channel_id) in self.gossip.shared_topics(PeerId(peer)):
            return
        for update in self.archive.memberships.handovers(channel):
            self._queue_direct(self.archive.key_update(update, [peer]), [peer])

    def _log_changed(self, channel: Channel) -> None:
        """A channel's log or epoch changed: present its keys, take in what waited,
        and see that sibling epochs get merged."""
        self._subscribe(channel)
        log = self.archive.memberships.log(channel.id)
        if log is not None and log.needs_merge() and channel.id not in self._merging:
            self._merging.add(channel.id)
            me = self.identity.public_key
            delay = 0.0 if log.merge_starter() == me else self._config.merge_delay
            self._nursery.start_soon(self._merge, channel.id, delay)
        self._know_again()
        released = self.archive.memberships.released(channel.id)
        if released:
            self._to_store.extend((b, LOCAL) for b in released)
            self._store_now.set()

    def _on_stored(self, batch: list[Bulletin], results: list[Insert], now: float) -> None:
        self._endorsed(batch, results)
        unreadable = self.archive.unreadable_count()
        for got in self.archive.taken(batch, results):
            if got.channel_changed is not None:
                self._log_changed(got.channel_changed)
        if self.archive.unreadable_count() != unreadable:
            self._changed()
        for bulletin, result in zip(batch, results, strict=True):
            if result in (Insert.OVER_QUOTA, Insert.NO_ROOM, Insert.EXPIRED):
                self.gossip.reject(bulletin.id, now)
            else:
                self.gossip.accept(bulletin.id, now)
        self._notify()

    def _endorsed(self, batch: list[Bulletin], results: list[Insert]) -> None:
        """A known group's endorsement vouches for the endorsed bulletin's author."""
        me, known = self.identity.public_key, self._known_groups()
        for bulletin, result in zip(batch, results, strict=True):
            if not (
                result.stored
                and bulletin.kind == Kind.ENDORSEMENT
                and bulletin.endorses is not None
                and bulletin.author in known
            ):
                continue
            author = self.archive.store.author_of(bulletin.endorses)
            if author is not None and author != me and author not in known:
                self.archive.store.endorse(author, now=int(time.time()))

    def _notify(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    # Direct delivery ---------------------------------------------------------------

    def _on_delivery(self, peer: PeerId, message: wire.DeliveryMessage) -> None:
        try:
            self._deliver(peer, message)
        except StoreError as exc:
            # Nothing is acknowledged for what we could not write, so the peer keeps
            # it and sends it again later; our disk is not its fault.
            log.error(
                "could not take direct delivery from %s: %s", redact.peer(fingerprint(peer)), exc
            )
        self._changed()
        self._flush()

    def _deliver(self, peer: PeerId, message: wire.DeliveryMessage) -> None:
        now = trio.current_time()
        match message:
            case wire.Deposit():
                stored: list[wire.BulletinId] = []
                refused: list[wire.BulletinId] = []
                for b in self._direct_bulletins(peer, message.raws, now):
                    ok = self._take_deposit(peer, message.recipient, b)
                    (stored if ok else refused).append(wire.BulletinId(b.id))
                self.gossip.send(
                    peer, wire.DepositAck(stored=tuple(stored), refused=tuple(refused))
                )
            case wire.DepositAck():
                for bid in (*message.stored, *message.refused):
                    recipient = self._deposits.pop((bytes(peer), bid), None)
                    if recipient is None or bid not in message.stored:
                        continue
                    if recipient == bytes(peer):
                        self.archive.store.delivered(bid, recipient)
                    else:
                        self.archive.store.held_by_one_more(bid, recipient)
            case wire.MailRequest():
                raws, more = self.archive.store.mail_for(
                    bytes(peer), now=int(time.time()), limit=message.limit
                )
                self.gossip.send(peer, wire.Mail(raws=tuple(raws), more=more))
            case wire.Mail():
                ids = []
                for b in self._direct_bulletins(peer, message.raws, now):
                    if self._for_us(b):  # (the holder took the depositor's word for it)
                        self._ingest_direct(b)
                    ids.append(wire.BulletinId(b.id))
                if ids:
                    self.gossip.send(peer, wire.MailAck(ids=tuple(ids)))
                if message.more:
                    self.gossip.send(peer, wire.MailRequest(limit=wire.MAX_MAIL))
            case wire.MailAck():
                self.archive.store.forget_mail(bytes(peer), message.ids)
            case wire.Redeem():
                self._answer_redeem(peer, message)
            case wire.Redeemed():
                waiting = self._redeeming.get(bytes(peer))
                if waiting is not None:  # else a late answer, after we gave up
                    try:
                        waiting.send_nowait(message)
                    except (trio.WouldBlock, trio.BrokenResourceError):
                        self._redeeming.pop(bytes(peer), None)

    def _direct_bulletins(self, peer: PeerId, raws: Sequence[bytes], now: float) -> list[Bulletin]:
        """The valid direct bulletins (and key updates) among ``raws``; anything else
        costs ``peer``: direct delivery carries nothing but these. ``peer`` answers only
        for what it can check, the signed envelope: a box that does not open for us is
        its author's doing (the archive flags the author), never the carrier's."""
        found = []
        for raw in raws:
            try:
                b = Bulletin.from_bytes(raw)
            except InvalidBulletin:
                b = None
            if b is None or b.kind not in (Kind.DIRECT, Kind.KEY_UPDATE):
                self._handle(self.gossip.penalize(peer, Offence.INVALID_BULLETIN, now))
                continue
            found.append(b)
        return found

    def _take_deposit(self, sender: PeerId, recipient: bytes, b: Bulletin) -> bool:
        if b.expired(int(time.time())):
            return False
        if recipient == self.identity.public_key:
            if not self._for_us(b):
                return False  # (deposited for us, but it holds no slot for us)
            self._ingest_direct(b)
            return True
        if not self._holds_for(recipient):
            self._handle(self.gossip.penalize(sender, Offence.MISDIRECTED, trio.current_time()))
            return False
        if self._blocked(bytes(sender)) or self._blocked(b.author):
            return False
        return self.archive.store.hold_mail(
            recipient, b, now=int(time.time()), standing=self._standing(b.author, recipient)
        )

    def _holds_for(self, recipient: bytes) -> bool:
        """Whether this node is one of ``recipient``'s holders by the spec's rule
        (docs/spec/gossip.md, "Direct delivery"): among the ``2 * MAX_HOLDERS`` node
        IDs nearest the recipient's that our routing table knows (twice the holders a
        sender picks, so that a sender whose view of the DHT differs from ours is
        not refused, nor charged, for it)."""
        known = [node_id for node_id, _, _ in self.dht.routing_snapshot()]
        target = records.node_id(recipient)
        return records.among_nearest(self.dht.node_id, target, known, 2 * MAX_HOLDERS)

    def _standing(self, author: bytes, recipient: bytes) -> bool:
        """Whether mail from ``author`` to ``recipient`` may use the half of the mail
        bounds that throw-away keys cannot reach: the author is a contact of ours, or
        a member of a channel we share with the recipient."""
        if self.archive.store.contact(author) is not None:
            return True
        for channel in self.archive.channels():
            log = self.archive.memberships.log(channel.id)
            if log is not None and log.is_member(author) and log.is_member(recipient):
                return True
        return False

    def _for_us(self, b: Bulletin) -> bool:
        """Whether a direct bulletin holds a key slot for this group: only then is it
        ours to keep (one whose slot opens but whose box does not is kept, and counted
        unreadable, to its author's blame)."""
        try:
            b.open(self.identity)
        except NotARecipient:
            return False
        except MeshError:
            return True
        return True

    def _ingest_direct(self, b: Bulletin) -> None:
        got = self.archive.ingest(b)
        if got.channel_changed is not None:
            self._log_changed(got.channel_changed)
        if got.result.stored:
            self._notify()

    # Channels ----------------------------------------------------------------------

    def channels(self) -> list[views.ChannelInfo]:
        """The channels this group is in, by name."""
        return [self._channel_info(c) for c in self.archive.channels()]

    def find_channel(self, channel: views.ChannelRef) -> views.ChannelInfo | None:
        """The channel ``channel`` names (see :meth:`Archive.find_channel`), or None.

        Raises:
            AmbiguousChannel: the name or id prefix fits several channels.
        """
        held = self.archive.find_channel(channel)
        return None if held is None else self._channel_info(held)

    async def create_channel(self, name: str) -> views.ChannelInfo:
        """Create a channel with this group as its first member (its membership log
        starts here).

        Raises:
            StoreError: this node already has a channel of that name (a join may
                still bring one: names are labels, the id tells them apart).
        """
        channel, carriers = self.archive.found_channel(name)
        self._subscribe(channel)
        for carrier in carriers:
            self._publish(carrier)
        self._nursery.start_soon(self._find_members, channel)
        return self._channel_info(channel)

    async def invite(
        self,
        channel: views.ChannelRef,
        expires: int | None = DEFAULT_INVITE_EXPIRY,
        offline: bool = False,
        with_history: bool = False,
        for_group: str | bytes | None = None,
    ) -> str:
        """A one-time invite code for ``channel``, redeemed online at this node.

        The code carries this node's address and a token whose public key the
        channel's log records with the expiry (``expires`` seconds from now; None
        means the default, 7 days) and, with ``for_group``, the one group that may
        redeem it. ``with_history`` also hands the new member the earlier epochs.
        ``offline`` makes a self-contained code for groups that cannot be online
        together: it carries the current epoch and the log, so anyone who sees it
        can read the channel until the next rekey, whatever its expiry; the first
        member the invitee meets redeems the token.

        ``channel``, here and in every method that takes one, is a
        :class:`~meshnode.core.views.ChannelInfo`, a channel id (32 bytes), or an
        exact name, else the id in hex (whole or a unique prefix of 8+ digits).

        Raises:
            UnknownChannel: no channel of this node fits ``channel``.
            AmbiguousChannel: several do (a shared name, a short prefix).
        """
        held = self.archive.require_channel(channel)
        lifetime = DEFAULT_INVITE_EXPIRY if expires is None else expires
        if lifetime <= 0:
            raise MeshError("an invite's expiry must be in the future")
        group = None if for_group is None else self._group_key(for_group)
        seed = os.urandom(crypto.KEY_SIZE)
        token = crypto.signing_keypair(seed)[0]
        now = int(time.time())
        op = self.archive.memberships.write(
            held,
            OpType.INVITE,
            token=token,
            expires_at=now + lifetime,
            for_group=group,
            with_history=with_history,
        )
        self._publish(self.archive.carry(held, op))
        grant = self.archive.memberships.grant(held, with_history=with_history) if offline else None
        try:
            return make_code(
                self.identity,
                channel=held,
                token_seed=seed,
                addresses=[self.announce],
                now=now,
                expires_at=now + lifetime,
                grant=grant,
            )
        except ValueError as exc:
            raise MeshError(str(exc)) from None

    async def join(self, code: str) -> views.ChannelInfo:
        """Redeem an invite at the inviting group's node and hold the channel it grants
        (an offline code: hold the channel it carries; the first member met redeems it).

        Raises:
            InvalidInvite: the code is damaged, from 0.1.0, or refused (InviteExpired,
                InviteUsed, InviteRevoked are its kinds).
            InviterUnreachable: no answer from the inviter's node.
        """
        parsed = parse_code(code, now=int(time.time()))
        if parsed.grant is not None:
            channel = self.archive.keep(self.archive.memberships.accept_offline(parsed))
            for address in parsed.addresses:  # (the inviter's node, if it is up)
                if address != self.announce:
                    with contextlib.suppress(MeshError):
                        await self._dial(address)
        else:
            grant = await self._redeem(parsed)
            channel = self.archive.joined(parsed, grant)
        self._subscribe(channel)
        self._nursery.start_soon(self._find_members, channel)
        return self._channel_info(channel)

    async def _redeem(self, code: InviteCode) -> Grant:
        """Dial the inviter, prove the token in that session, and collect the grant."""
        problem = "no address in the code"
        for address in code.addresses:
            try:
                key = await self._dial(address)
            except MeshError as exc:
                problem = str(exc)
                continue
            peer = self._peers.get(key)
            if key != code.inviter or peer is None:
                problem = f"{address} is not the inviting group's node"
                continue
            grant = await self._redeem_at(key, code.token_seed)
            if grant is not None:
                return grant
            problem = f"{address} did not answer"
        raise InviterUnreachable(
            f"could not reach the inviting group's node ({problem}): this code works only "
            "while that node is online; if you cannot be online together, ask them for one "
            "made with 'meshnode channel invite NAME --offline'"
        )

    async def _redeem_at(self, key: bytes, token_seed: bytes) -> Grant | None:
        """Prove the token to the node of group ``key`` in our session with it, and
        collect its grant (None if it does not answer in time).

        Raises:
            InvalidInvite: it refused (InviteUsed, InviteRevoked, InviteExpired).
        """
        peer = self._peers.get(key)
        if peer is None or key in self._redeeming:
            return None
        proof = redeem_proof(token_seed, peer.session.handshake_hash, self.identity.public_key)
        token = crypto.signing_keypair(token_seed)[0]
        send, receive = trio.open_memory_channel[wire.Redeemed](REDEEM_PARTS)
        self._redeeming[key] = send
        try:
            self.gossip.send(PeerId(key), wire.Redeem(token=token, proof=proof))
            self._flush()
            with trio.move_on_after(self._config.session.handshake_timeout * 4):
                return Grant.decode(await _grant_parts(receive))
            return None
        finally:
            self._redeeming.pop(key, None)

    async def _redeem_offline(self, key: bytes, channel_id: bytes) -> None:
        """We joined with an offline code and met a member: have it redeem the token,
        which makes us a member (its add reaches the others as any operation)."""
        seed = self.archive.memberships.pending_token(channel_id)
        if seed is None:
            return
        try:
            grant = await self._redeem_at(key, seed)
        except InvalidInvite as exc:
            log.warning("an offline invite was refused when redeemed: %s", redact.peer(exc))
            self.archive.memberships.forget_token(channel_id)
            return
        if grant is None:
            return
        with contextlib.suppress(InvalidInvite):
            channel = self.archive.keep(self.archive.memberships.accept_grant(channel_id, grant))
            self._log_changed(channel)
            self._changed()

    def _answer_redeem(self, peer: PeerId, message: wire.Redeem) -> None:
        entry = self._peers.get(bytes(peer))
        if entry is None:
            return
        verdict, grant, added = self.archive.memberships.redeem(
            self.archive.channels(),
            token=message.token,
            proof=message.proof,
            handshake_hash=entry.session.handshake_hash,
            invitee=bytes(peer),
        )
        if added is not None:
            self._publish(self.archive.carry(added[0], added[1]))
        if grant is None:
            self.gossip.send(peer, wire.Redeemed(verdict=verdict, part=b"", more=False))
            return
        data = grant.encode()
        size = wire.MAX_GRANT_PART - 64
        parts = [data[i : i + size] for i in range(0, len(data), size)]
        for i, part in enumerate(parts):
            more = i < len(parts) - 1
            self.gossip.send(peer, wire.Redeemed(verdict=verdict, part=part, more=more))

    async def leave(self, channel: views.ChannelRef) -> None:
        """Leave a channel: say so in its log, then forget its keys (its bulletins here
        become unreadable)."""
        held = self.archive.require_channel(channel)
        log = self.archive.memberships.log(held.id)
        if log is not None and log.is_member(self.identity.public_key):
            op = self.archive.memberships.write(held, OpType.LEAVE)
            self._publish(self.archive.carry(held, op))
            self._flush()
        self.archive.remove_channel(held)
        self._handle(self.gossip.unsubscribe(Topic(held.id), now=trio.current_time()))
        self._changed()
        self._flush()

    async def remove(
        self, channel: views.ChannelRef, groups: Sequence[str | bytes]
    ) -> views.ChannelInfo:
        """Remove groups (petnames, fingerprints or keys) from a channel and start the
        epoch they cannot read, in one step; the remaining members get its key.

        Raises:
            UnknownContact: a group that is not another member of the channel.
        """
        held = self.archive.require_channel(channel)
        log = self._log(held)
        targets = []
        for group in groups:
            key = self._member_key(log, group)
            if key == self.identity.public_key:
                raise UnknownContact("to take this group out of a channel, leave it")
            seq = self.archive.store.frontiers(held.id).get(key, 0)
            frontier_id = self.archive.store.id_at(held.id, key, seq) if seq else None
            targets.append(Frontier(key, seq, frontier_id))
        if not targets:
            raise UnknownContact("name at least one group to remove")
        op = self.archive.memberships.write(held, OpType.REMOVE, targets=tuple(targets))
        self._publish(self.archive.carry(held, op))
        # The removed share no epoch with us from now on: their removal goes to them
        # as direct mail, which reaches them through holders even while offline.
        removed = [t.key for t in targets]
        notice = KeyUpdate(held.id, (op.raw,), None)
        self._queue_direct(self.archive.key_update(notice, removed), removed)
        return await self._new_epoch(held)

    async def rekey(
        self, channel: views.ChannelRef, remove: Sequence[str | bytes] = ()
    ) -> views.ChannelInfo:
        """Start a new epoch of ``channel`` (removing ``remove`` first, as ``remove``
        does) and hand its key to every member that remains, from the log."""
        if remove:
            return await self.remove(channel, remove)
        return await self._new_epoch(self.archive.require_channel(channel))

    async def _merge(self, channel_id: bytes, delay: float) -> None:
        """Start the epoch that follows every leaf (docs/spec/membership.md, "Epochs"):
        the most senior member at once, any other after ``merge_delay`` if nobody did."""
        try:
            await trio.sleep(delay)
            held = self.archive.channel(channel_id)
            log = self.archive.memberships.log(channel_id)
            if held is None or log is None or not log.needs_merge():
                return
            if not log.is_member(self.identity.public_key):
                return
            with contextlib.suppress(MeshError):
                await self._new_epoch(held)
        finally:
            self._merging.discard(channel_id)

    async def _new_epoch(self, held: Channel) -> views.ChannelInfo:
        log = self._log(held)
        channel, op, update = self.archive.memberships.new_epoch(held)
        channel = self.archive.keep(channel)
        self._subscribe(channel)
        self._publish(self.archive.carry(channel, op))
        self._hand_over(channel, update, log)
        self._nursery.start_soon(self._find_members, channel)
        return self._channel_info(channel)

    def _hand_over(self, channel: Channel, update: KeyUpdate, log: Log) -> None:
        """Key updates to every member the log keeps (16 to a bulletin)."""
        members = sorted(k for k in log.members() if k != self.identity.public_key)
        for start in range(0, len(members), 16):
            batch = members[start : start + 16]
            self._queue_direct(self.archive.key_update(update, batch), batch)

    async def upgrade(
        self, channel: views.ChannelRef, keep: Sequence[str | bytes] = ()
    ) -> views.ChannelInfo:
        """Give a channel made by meshnode 0.1.0 its membership log: this group and the
        groups in ``keep`` (petnames, fingerprints of its authors, or keys) are its
        members, on a fresh epoch only they get. Until then it is read-only.

        Raises:
            MeshError: the channel has a log already.
        """
        held = self.archive.require_channel(channel)
        authors = self.archive.store.frontiers(held.id)
        kept = [self._group_key(group, among=authors) for group in keep]
        upgraded, carriers, grant = self.archive.upgrade(held, kept)
        self._subscribe(upgraded)
        for carrier in carriers:
            self._publish(carrier)
        others = [k for k in dict.fromkeys(kept) if k != self.identity.public_key]
        for start in range(0, len(others), 16):
            batch = others[start : start + 16]
            self._queue_direct(self.archive.hand_over(grant, batch), batch)
        self._nursery.start_soon(self._find_members, upgraded)
        return self._channel_info(upgraded)

    def members(self, channel: views.ChannelRef) -> list[views.MemberInfo]:
        """The members of ``channel`` by seniority, from its membership log."""
        log = self._log(self.archive.require_channel(channel))
        ranked = sorted(log.members().values(), key=lambda m: (m.rank, m.key))
        return [
            views.MemberInfo(
                key=m.key,
                name=self.archive.author_name(m.key),
                added_by=m.added_by,
                added_at=m.added_at,
            )
            for m in ranked
        ]

    def invites(self, channel: views.ChannelRef) -> list[views.InviteInfo]:
        """The invites of ``channel``, oldest first."""
        log = self._log(self.archive.require_channel(channel))
        return [
            views.InviteInfo(
                id=i.token,
                issued_by=i.issued_by,
                created_at=i.created_at,
                expires_at=i.expires_at,
                used_by=i.used_by,
                revoked=i.revoked,
            )
            for i in log.invites()
        ]

    async def revoke_invite(self, channel: views.ChannelRef, invite_id: bytes | str) -> None:
        """Revoke an unused invite (its id in bytes or hex, or a unique hex prefix)."""
        held = self.archive.require_channel(channel)
        log = self._log(held)
        token = _find_invite(log, invite_id)
        op = self.archive.memberships.write(held, OpType.REVOKE, token=token)
        self._publish(self.archive.carry(held, op))

    def log(self, channel: views.ChannelRef) -> list[views.OperationInfo]:
        """The membership operations of ``channel``, oldest first: who created,
        invited, added, removed and rekeyed, and when."""
        log = self._log(self.archive.require_channel(channel))
        state = log.state()
        epochs = log.epochs()
        out = []
        for op in log.ops():
            groups = (op.key,) if op.type == OpType.ADD else tuple(t.key for t in op.targets)
            epoch = epochs.get(op.epoch_id) if op.type in (OpType.EPOCH, OpType.CREATE) else None
            out.append(
                views.OperationInfo(
                    id=op.id,
                    kind=op.type.name.lower(),
                    author=op.author,
                    author_name=self.archive.author_name(op.author),
                    created_at=op.created_at,
                    groups=groups,
                    group_names=tuple(self.archive.author_name(g) for g in groups),
                    invite=op.token,
                    epoch=None if epoch is None else epoch.number,
                    void=op.id in state.void,
                )
            )
        return out

    def _log(self, channel: Channel) -> Log:
        log = self.archive.memberships.log(channel.id)
        if log is None:
            raise MeshError(
                f"{channel.name!r} was made by meshnode 0.1.0 and has no membership log: "
                f"run 'meshnode channel upgrade {channel.name}' first"
            )
        return log

    def _member_key(self, log: Log, group: str | bytes) -> bytes:
        """A member's key from a petname, a key text, a key or a fingerprint."""
        key = self._group_key(group, among=log.members())
        if not log.is_member(key):
            raise UnknownContact(f"{self.archive.author_name(key)} is not a member of this channel")
        return key

    def _group_key(self, group: str | bytes, among: Iterable[bytes] = ()) -> bytes:
        """A group's key from a key, a petname, a key text, or the fingerprint of one of
        ``among`` (fingerprints name only groups we can list)."""
        if isinstance(group, bytes):
            return group
        wanted = group.strip().lower()
        by_print = [k for k in among if fingerprint(k) == wanted]
        return by_print[0] if by_print else self.archive.resolve_group(group)

    def _removed_by(self, channel: Channel) -> str | None:
        """Who removed this group from ``channel`` (its own name if it left), if so."""
        log = self.archive.memberships.log(channel.id)
        gone = None if log is None else log.departure(self.identity.public_key)
        return None if gone is None else self.archive.author_name(gone.by)

    def _channel_info(self, channel: Channel) -> views.ChannelInfo:
        log = self.archive.memberships.log(channel.id)
        members = (
            len(log.members()) if log is not None else len(self.archive.store.frontiers(channel.id))
        )
        return views.ChannelInfo(
            id=channel.id,
            name=channel.name,
            epoch=channel.epoch,
            members=members,
            bulletins=self.archive.store.channel_posts(channel.id),
            read_only=log is None,
            removed_by=self._removed_by(channel),
        )

    # Posting -----------------------------------------------------------------------

    async def post(
        self,
        channel: views.ChannelRef,
        text: str,
        reply_to: bytes | None = None,
        expires: int | None = None,
    ) -> views.BulletinRecord:
        """Post ``text`` to ``channel``; returns once it is durable in the store."""
        held = self.archive.require_channel(channel)
        self._check_member(held)
        bulletin = self.archive.seal(
            held, text.encode("utf-8"), reply_to=reply_to, expires_in=expires
        )
        return self._published(bulletin)

    def _check_member(self, channel: Channel) -> None:
        """Refuse to post where this group is no longer a member, or in a channel from
        0.1.0 (no log says who may read it)."""
        removed_by = self._removed_by(channel)
        if removed_by is not None:
            raise MeshError(f"this group was removed from {channel.name!r} by {removed_by}")
        if self.archive.memberships.log(channel.id) is None:
            raise MeshError(
                f"{channel.name!r} was made by meshnode 0.1.0 and is read-only: a member "
                f"makes it writable with 'meshnode channel upgrade {channel.name}'"
            )

    async def post_public(self, text: str, expires: int | None = None) -> views.BulletinRecord:
        """Post ``text`` to the whole mesh; returns once it is durable."""
        bulletin = self.archive.seal(None, text.encode("utf-8"), expires_in=expires)
        return self._published(bulletin)

    async def endorse(self, bulletin_id: bytes) -> views.BulletinRecord:
        """State that this group stands behind a bulletin (in the bulletin's channel)."""
        target = self.archive.bulletin(bulletin_id)
        channel = self.archive.channel(target.channel_id) if target.channel_id else None
        if target.channel_id is not None and channel is None:
            raise StoreError("that bulletin is in a channel this group is not in")
        if channel is not None:
            self._check_member(channel)
        bulletin = self.archive.seal(channel, b"", endorses=target.id, kind=Kind.ENDORSEMENT)
        record = self._published(bulletin)
        if target.author != self.identity.public_key and target.author not in self._known_groups():
            self.archive.store.endorse(target.author, now=int(time.time()))
        return record

    async def send(
        self, recipient_keys: Sequence[str | bytes], text: str, expires: int | None = None
    ) -> views.BulletinRecord:
        """Send a direct bulletin to 1 to 16 groups (petnames or keys); durable on return.

        It reaches each recipient's node when it is online, else waits with up to
        eight holders near the recipient until it expires (default 7 days).
        """
        keys = [
            k if isinstance(k, bytes) else self.archive.resolve_group(k) for k in recipient_keys
        ]
        if not keys:
            raise UnknownContact("name at least one recipient")
        bulletin = self.archive.seal(
            keys, text.encode("utf-8"), expires_in=expires or DIRECT_EXPIRY
        )
        self._queue_direct(bulletin, keys)
        record = self.archive.record(self._stored(bulletin))
        assert record is not None
        self._notify()
        return record

    def _publish(self, bulletin: Bulletin) -> None:
        """Publish one of ours (stored already) with the next pass."""
        now = trio.current_time()
        self.gossip.publish(bulletin, now)
        self._store_now.set()
        self._nudge(now)
        self._notify()

    def _published(self, bulletin: Bulletin) -> views.BulletinRecord:
        """:meth:`_publish`, returning the bulletin's record."""
        self._publish(bulletin)
        record = self.archive.record(self._stored(bulletin))
        assert record is not None
        return record

    def _stored(self, bulletin: Bulletin) -> StoredBulletin:
        stored = self.archive.store.get(bulletin.id)
        assert stored is not None
        return stored

    def _queue_direct(self, bulletin: Bulletin, recipients: Sequence[bytes]) -> None:
        others = [r for r in recipients if r != self.identity.public_key]
        self.archive.store.queue_delivery(bulletin, others)
        self._changed()
        self._deliver_now.set()

    # Reading -----------------------------------------------------------------------

    async def bulletins(
        self,
        channel: views.ChannelRef | None = None,
        since: int | None = None,
        follow: bool = True,
    ) -> AsyncIterator[views.BulletinRecord]:
        """Stored history (oldest first), then with ``follow`` live arrivals, forever.

        Raises:
            UnknownChannel: ``channel`` is not one of this node's.
            AmbiguousChannel: ``channel`` fits several of them.
        """
        held = self.archive.require_channel(channel) if channel is not None else None
        cursor = self.archive.store.last_cursor()
        for record in self.archive.history(held, since=since):
            yield record
        while follow:
            arrived = self._arrived  # (taken before the query: a later store sets it)
            batch = self.archive.store.arrivals(after=cursor)
            if not batch:
                await arrived.wait()
                continue
            for stored in batch:
                cursor = stored.cursor
                live = self.archive.record(stored)
                if live is None or (held is not None and live.channel_id != held.id):
                    continue
                if since is None or live.created_at >= since:
                    yield live

    def unreadable(self) -> list[views.UnreadableInfo]:
        """The stored bulletins addressed to this group that do not open, oldest first,
        each with why (``meshnode read --unreadable``): reading skips them, so this is
        where an organizer sees that a rekey's key has not arrived or that an author
        sent content that is damaged."""
        return self.archive.unreadable()

    # Contacts ----------------------------------------------------------------------

    def contacts(self) -> list[views.ContactInfo]:
        return [_contact_info(c) for c in self.archive.store.contacts()]

    def add_contact(self, petname: str, key: str | bytes) -> views.ContactInfo:
        """Name a group (``key`` is its key text ``mk1...`` or 32 bytes)."""
        raw = key if isinstance(key, bytes) else parse_key(key)
        contact = self.archive.store.add_contact(petname, raw, now=int(time.time()))
        self._know_again()
        return _contact_info(contact)

    def verify_contact(self, petname: str) -> views.ContactInfo:
        """Mark a contact verified (its fingerprint was compared in person)."""
        return self._update_contact(petname, verified=True)

    def block_contact(self, petname: str) -> views.ContactInfo:
        """Block a contact: its sessions are refused and closed."""
        info = self._update_contact(petname, blocked=True)
        self._nursery.start_soon(self._close, info.key)
        return info

    def _update_contact(self, petname: str, **change: bool) -> views.ContactInfo:
        contact = self.archive.store.contact_by_name(petname)
        if contact is None:
            raise UnknownContact(f"no contact {petname!r} (see 'meshnode contact list')")
        updated = self.archive.store.update_contact(contact.key, **change)
        assert updated is not None
        self._known = None
        return _contact_info(updated)

    def _blocked(self, key: bytes) -> bool:
        contact = self.archive.store.contact(key)
        return contact is not None and contact.blocked

    # Status and discovery --------------------------------------------------------------

    def status(self) -> views.NodeStatus:
        """What ``meshnode status`` shows."""
        return views.NodeStatus(
            name=self.identity.name,
            key=self.identity.public_key,
            address=self.announce,
            peers=len(self._peers),
            dht_size=self.dht.size_estimate(),
            channels=len(self.archive.channels()),
            last_sync=self._last_sync,
            pending_deliveries=self.archive.store.pending_count(now=int(time.time())),
            held_mail=self.archive.store.mail_count(),
            removed=tuple(
                f"removed from {c.name} by {by}"
                for c in self.archive.channels()
                if (by := self._removed_by(c)) is not None
            ),
            reachable=self._reachable,
            unreadable=self.archive.unreadable_count(),
            storage=self.archive.store.state.value,
            shares=tuple(
                views.ShareUse(name, used, budget)
                for name, (used, budget) in self.archive.store.budget_use().items()
            ),
            evicted=self.archive.store.evicted_count(),
        )

    async def changes(self) -> AsyncIterator[views.NodeStatus]:
        """The status now, then again after each change to the node's sessions,
        channels, syncs, deliveries or held mail, forever: for a watcher that waits on
        the node instead of asking it again and again (``meshnode status --follow``)."""
        while True:
            changed = self._status_changed  # (taken first: a later change sets it)
            yield self.status()
            await changed.wait()

    def _changed(self) -> None:
        self._status_changed.set()
        self._status_changed = trio.Event()

    async def lookup(self, group_key: bytes) -> records.ContactRecord | None:
        """A group's contact record, found through the DHT (None if nobody holds one)."""
        if group_key == self.identity.public_key:
            return self.dht.contact
        return await self.dht.lookup_contact(group_key)

    # Background loops ----------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await trio.sleep_until(self.gossip.next_deadline())
            self._handle(self.gossip.tick(trio.current_time()))
            self._flush()

    async def _presence(self) -> None:
        """Publish our contact record, then our channels' rendezvous, again and again;
        keep at least ``d_low`` sessions for the mesh-wide (public) overlay."""
        while True:
            with contextlib.suppress(MeshError):
                await self.dht.publish_contact([self.announce])
            for channel in self.archive.channels():
                await self._find_members(channel)
            await self._fill_overlay()
            await trio.sleep(self._config.overlay_interval)

    async def _fill_overlay(self) -> None:
        """Dial nodes from the routing table while there are fewer than ``d_low`` sessions.

        A node's sessions listen on its DHT port, so routing entries are dialable."""
        connected = {records.node_id(k) for k in self._peers}
        for node_id, host, port in self.dht.routing_snapshot():
            if len(self._peers) >= self._config.gossip.d_low:
                return
            if node_id in connected:
                continue
            with contextlib.suppress(MeshError):
                await self._dial(f"{host}:{port}")

    async def _find_members(self, channel: Channel) -> None:
        """Put our contact in today's rendezvous of ``channel`` and dial members found there
        until the mesh has ``d`` of them."""
        tag = channel.rendezvous_tag(day_of(int(time.time())))
        with contextlib.suppress(MeshError):
            if self.dht.contact is None:
                await self.dht.publish_contact([self.announce])
            await self.dht.publish_rendezvous(tag)
        found = await self.dht.lookup_rendezvous(tag)
        wanted = self._config.gossip.d
        sharing = [
            k for k in self._peers if Topic(channel.id) in self.gossip.shared_topics(PeerId(k))
        ]
        for contact in found:
            if len(sharing) >= wanted:
                break
            key = contact.group_key
            if key == self.identity.public_key or key in self._peers or self._blocked(key):
                continue
            for address in contact.addresses:
                try:
                    await self._dial(address)
                except MeshError:
                    continue
                sharing.append(key)
                break

    async def _deliveries(self) -> None:
        """Deliver queued direct bulletins: to the recipient's node, else to holders."""
        while True:
            with trio.move_on_after(self._config.delivery_interval):
                await self._deliver_now.wait()
            self._deliver_now = trio.Event()
            for bulletin_id, recipient, holders in self.archive.store.pending_deliveries(
                now=int(time.time())
            ):
                stored = self.archive.store.get(bulletin_id)
                if stored is None:
                    continue
                if await self._deposit_with(recipient, recipient, stored.raw):
                    continue
                if holders < MAX_HOLDERS:
                    for key in await self._holders(recipient):
                        with contextlib.suppress(MeshError):
                            await self._deposit_with(key, recipient, stored.raw, holder=True)

    async def _deposit_with(
        self, peer: bytes, recipient: bytes, raw: bytes, *, holder: bool = False
    ) -> bool:
        """Open a session with ``peer`` if needed and deposit; True if the deposit went out."""
        if peer not in self._peers:
            if holder:
                return False
            contact = await self.lookup(peer)
            if contact is None:
                return False
            for address in contact.addresses:
                with contextlib.suppress(MeshError):
                    await self._dial(address)
                    break
        if peer not in self._peers:
            return False
        bid = wire.BulletinId(crypto.blake2b_256(raw))
        self._deposits[(peer, bid)] = recipient
        sent = self.gossip.send(PeerId(peer), wire.Deposit(recipient=recipient, raws=(raw,)))
        self._flush()
        return sent

    async def _mail(self) -> None:
        """Collect what holders keep for us, at start and every ``mail_interval``."""
        while True:
            for address in await self._near(self.identity.public_key):
                with contextlib.suppress(MeshError):
                    await self._dial(address)
            for key in self._peers:
                self.gossip.send(PeerId(key), wire.MailRequest(limit=wire.MAX_MAIL))
            self._flush()
            await trio.sleep(self._config.mail_interval)

    async def _holders(self, group_key: bytes) -> list[bytes]:
        """Keys of the holders for ``group_key`` (the nodes nearest its node ID), with a
        session to each: those already connected count too, others are dialled."""
        connected = {records.node_id(k): k for k in self._peers}
        keys: list[bytes] = []
        for node_id, address in await self.dht.closest(group_key, MAX_HOLDERS):
            key = connected.get(node_id)
            if key is None:
                with contextlib.suppress(MeshError):
                    key = await self._dial(address)
            if key is not None and key != group_key:
                keys.append(key)
        return keys

    async def _near(self, group_key: bytes) -> list[str]:
        """Addresses of the holders for ``group_key`` (the nodes nearest its node ID)
        that this node has no session with yet."""
        connected = {records.node_id(k) for k in self._peers}
        found = await self.dht.closest(group_key, MAX_HOLDERS)
        return [address for node_id, address in found if node_id not in connected]

    async def _purge(self) -> None:
        while True:
            await trio.sleep(self._config.purge_interval)
            try:
                purged = self.archive.purge_expired()
            except StoreError as exc:  # tried again next time
                log.error("could not purge expired data: %s", exc)
                continue
            if purged:
                self._changed()  # (held mail and unreadable bulletins may have expired)

    # Helpers -----------------------------------------------------------------------

    def _subscribe(self, channel: Channel) -> None:
        """Take part in the channel's topic, proving every leaf epoch we hold (so
        sibling epochs do not split the topic), else the newest."""
        log = self.archive.memberships.log(channel.id)
        leaves = [] if log is None else [e.id for e in log.leaves()[:MAX_LEAF_PROOFS]]
        held = [wire.member_key(k.secret) for k in channel.keys if k.id in leaves]
        keys = tuple(held) if held else channel_keys(channel)
        self._handle(self.gossip.subscribe(Topic(channel.id), keys, now=trio.current_time()))
        self._changed()
        self._flush()


async def _grant_parts(receive: trio.MemoryReceiveChannel[wire.Redeemed]) -> bytes:
    """The parts of an inviter's answer, joined; a refusal raises its error."""
    parts: list[bytes] = []
    size = 0
    async for message in receive:
        if message.verdict != wire.Verdict.GRANTED:
            raise refusal(message.verdict)
        parts.append(message.part)
        size += len(message.part)
        if size > MAX_GRANT:
            break
        if not message.more:
            return b"".join(parts)
    raise InvalidInvite("the inviter's answer is too large or cut short: ask for a new code")


def _find_invite(log: Log, invite_id: bytes | str) -> bytes:
    """An invite's token from its id (bytes, hex or a unique hex prefix of 8 or more)."""
    tokens = [i.token for i in log.invites()]
    if isinstance(invite_id, bytes):
        found = [t for t in tokens if t == invite_id]
    else:
        wanted = invite_id.strip().lower()
        found = [t for t in tokens if len(wanted) >= 8 and t.hex().startswith(wanted)]
    if len(found) != 1:
        raise UnknownInvite(
            f"no single invite {invite_id if isinstance(invite_id, str) else invite_id.hex()} "
            "in this channel (see 'meshnode channel invites')"
        )
    return found[0]


def _contact_info(c: Contact) -> views.ContactInfo:
    return views.ContactInfo(key=c.key, petname=c.petname, verified=c.verified, blocked=c.blocked)


@contextlib.asynccontextmanager
async def start_node(
    identity: Identity,
    store: Store,
    *,
    listen: str = DEFAULT_LISTEN,
    announce: str | None = None,
    bootstrap: Sequence[str] = (),
    network_key: bytes | None = None,
    config: NodeConfig | None = None,
) -> AsyncIterator[Node]:
    """Run a node for ``identity`` on ``store`` (open, and left open on exit): bind,
    start its loops and join the mesh; on exit close its sessions and DHT.

    Arguments as for :func:`meshnode.launch.open_node`, which opens the data
    directory and its store and calls this.

    Raises:
        OSError: the address cannot be bound.
        ValueError: a malformed address or network key.
    """
    cfg = config or NodeConfig()
    key = network_key if network_key is not None else OPEN_MESH_KEY
    if len(key) != 32:
        raise ValueError("a network key is 32 bytes")
    host, port = ports.parse(listen, bootstrap, announce)
    archive = Archive(identity, store, clock=lambda: int(time.time()))
    async with contextlib.AsyncExitStack() as stack:
        dht, listeners = await ports.bind(
            stack, identity, host, port, network_key=key, store=store, config=cfg.dht,
            bootstrap=bootstrap,
        )  # fmt: skip
        nursery = await stack.enter_async_context(trio.open_nursery())
        node = Node(
            identity=identity,
            archive=archive,
            dht=dht,
            network_key=key,
            address=f"{host}:{dht.port}",
            announce=announced(host, dht.port, announce),
            config=cfg,
            nursery=nursery,
        )
        await nursery.start(
            functools.partial(
                transport.serve_listeners,
                node._accept,
                listeners,
                identity=identity,
                network_key=key,
                config=cfg.session,
            )
        )
        loops = (node._ticker, node._storer, node._presence, node._deliveries, node._mail)
        for loop in (*loops, node._purge):
            nursery.start_soon(loop)
        for address in bootstrap:
            with contextlib.suppress(MeshError):
                await node._dial(address)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()
