"""The node: one group's presence on the mesh, a facade over the shell's rooms.

Theory of operation:
1. :func:`start_node` binds the sessions (TCP) and the DHT (UDP) on one port
   number, starts the node's loops in one nursery and yields the
   :class:`Node`; leaving the block stops them and closes the sessions and the
   DHT. It takes an identity and an open store: the public entry point,
   :func:`meshnode.launch.open_node`, opens the data directory and calls it.
2. One :class:`~meshnode.core.gossip.Gossip` machine carries every session.
   Each room of ``meshnode/net/`` does one job and states its own rules:
   ``peers`` (the session registry, dial tie-break), ``intake`` (the commit
   pass: stored, then relayed), ``bulletins`` (our own, durable before they
   leave; reading), ``delivery`` (direct delivery, mail held for others),
   ``channels`` (channel and membership operations), ``presence`` (the
   background loops), ``contacts``, ``status``, ``ports`` (binding) and
   ``interfaces`` (the address to announce). They share one
   :class:`~meshnode.net.context.Context` and never import this module.
3. :class:`Node` builds the rooms, dispatches the machine's events to them
   (:meth:`Node._handle`) and offers their operations as the node API.

Everything timed is in :class:`NodeConfig`, so tests run in seconds.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from meshnode import redact
from meshnode.archive import Archive
from meshnode.core import records, views, wire
from meshnode.core.address import is_wildcard, join_address, split_address
from meshnode.core.gossip import (
    BulletinReceived,
    DeliveryReceived,
    DropPeer,
    Event,
    ForkDetected,
    Gossip,
    GossipConfig,
    SyncCompleted,
    TopicsShared,
)
from meshnode.core.identity import Identity, fingerprint
from meshnode.core.session import OPEN_MESH_KEY
from meshnode.core.wire import PUBLIC_TOPIC, PeerId
from meshnode.errors import MeshError
from meshnode.net import connect, ports, transport
from meshnode.net import dht as _dht
from meshnode.net.bulletins import Bulletins
from meshnode.net.channels import DEFAULT_INVITE_EXPIRY, Channels
from meshnode.net.contacts import Contacts
from meshnode.net.context import Context
from meshnode.net.delivery import Courier
from meshnode.net.intake import Intake
from meshnode.net.interfaces import announced
from meshnode.net.peers import Peers
from meshnode.net.presence import Presence
from meshnode.net.status import Status
from meshnode.store import Budget, Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from meshnode.core.channel import Channel

log = logging.getLogger("meshnode.node")

DEFAULT_LISTEN: Final = "0.0.0.0:7447"


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
        store_interval: seconds at most between writing a relayed bulletin to the
            store and committing it: one commit serves every pass in between (see
            ``net/intake.py``); a crash takes back at most that long of relayed
            bulletins, which acknowledged nothing.
        author_quota: bytes of bulletins stored per author.
        budget: bytes the store may hold, per share.
        merge_delay: seconds a member other than the most senior waits before it
            starts the epoch that merges sibling epochs itself.
        discover_peers: dial the channel members found at rendezvous and peers for
            the public overlay (docs/spec/gossip.md, "Finding peers"); off, the node
            keeps only the sessions dialled by hand, through invites or by others,
            and still publishes its rendezvous so that others find it (a fixed
            topology, as benchmarks need).
    """

    session: transport.SessionConfig = field(default_factory=transport.SessionConfig)
    dht: _dht.DHTConfig = field(default_factory=_dht.DHTConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    contact_lifetime: int = records.DEFAULT_LIFETIME
    overlay_interval: float = 60.0
    delivery_interval: float = 60.0
    mail_interval: float = 600.0
    purge_interval: float = 3600.0
    store_interval: float = 0.5
    author_quota: int = 64 * 1024 * 1024
    budget: Budget = field(default_factory=Budget)
    merge_delay: float = 60.0
    discover_peers: bool = True


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
        self._nursery = nursery
        self.gossip = Gossip(
            local=PeerId(identity.public_key), holdings=archive, rng=os.urandom,
            now=trio.current_time(), config=config.gossip,
        )  # fmt: skip
        ctx = self._ctx = Context(
            identity=identity, archive=archive, dht=dht, gossip=self.gossip, announce=announce,
            nursery=nursery, handle=self._handle,
        )  # fmt: skip
        host = split_address(address)[0]  # (dial from it: peers see where we listen)
        local_host = None if is_wildcard(host) else host
        peers = self._peers = Peers(
            ctx, network_key=network_key, config=config.session, local_host=local_host,
        )  # fmt: skip
        intake = self._intake = Intake(
            ctx, peers, store_interval=config.store_interval, on_log_changed=self._log_changed
        )
        delivery = self._delivery = Courier(
            ctx, peers, delivery_interval=config.delivery_interval,
            mail_interval=config.mail_interval, on_log_changed=self._log_changed,
            on_redeem=self._redeem_received,
        )  # fmt: skip
        presence = self._presence = Presence(
            ctx, peers, overlay_interval=config.overlay_interval,
            purge_interval=config.purge_interval, d=config.gossip.d, d_low=config.gossip.d_low,
            d_high=config.gossip.d_high, discover=config.discover_peers,
        )  # fmt: skip
        self._channels = Channels(
            ctx, peers, intake, delivery, presence, merge_delay=config.merge_delay,
            redeem_timeout=config.session.handshake_timeout * 4,
        )  # fmt: skip
        self._bulletins = Bulletins(ctx, intake, delivery, self._channels)
        self._contacts = Contacts(ctx, peers, intake)
        self._status = Status(ctx, peers, self._channels)
        self.gossip.subscribe(PUBLIC_TOPIC, now=trio.current_time())
        archive.store.watch(ctx.changed)
        self._intake.know_again()
        for channel in archive.channels():
            self._channels.subscribe(channel)

    # Wiring: the rooms call back through these -------------------------------------

    def _handle(self, events: list[Event]) -> None:
        """Act on the machine's events, each in the room whose job it is."""
        for event in events:
            match event:
                case BulletinReceived():
                    self._intake.received(event)
                case ForkDetected():
                    author = redact.peer(fingerprint(event.author))
                    log.warning("fork: %s signed two bulletins with seq %d", author, event.seq)
                case DropPeer():
                    log.warning("dropping a peer: %s (score %.0f)", event.reason, event.score)
                    self._nursery.start_soon(self._peers.close, bytes(event.peer))
                case SyncCompleted():
                    self._status.synced()
                case DeliveryReceived():
                    self._delivery.received(event.peer, event.message)
                case TopicsShared():
                    self._channels.catch_up(bytes(event.peer), event.topics)

    def _log_changed(self, channel: Channel) -> None:
        self._channels.log_changed(channel)

    def _redeem_received(self, peer: PeerId, message: wire.Redeem | wire.Redeemed) -> None:
        self._channels.redeem_received(peer, message)

    # Sessions ------------------------------------------------------------------------

    def peers(self) -> list[views.PeerInfo]:
        """The open sessions, oldest first, with the bytes each has carried."""
        return self._peers.info()

    async def connect(self, address: str) -> views.PeerInfo:
        """Open a session with the node at ``address`` (or return the one already open).

        Raises:
            PeerDisconnected: nothing answers there, or the handshake failed
                (another mesh's network key, or not a meshnode node).
            OperationTimeout: no answer within the session's ``handshake_timeout``.
        """
        key = await self._peers.dial(address)
        return next(p for p in self.peers() if p.key == key)

    # Channels ------------------------------------------------------------------------

    def channels(self) -> list[views.ChannelInfo]:
        """The channels this group is in, by name."""
        return [self._channels.info(c) for c in self.archive.channels()]

    def find_channel(self, channel: views.ChannelRef) -> views.ChannelInfo | None:
        """The channel ``channel`` names (see :meth:`Archive.find_channel`), or None.

        Raises:
            AmbiguousChannel: the name or id prefix fits several channels.
        """
        held = self.archive.find_channel(channel)
        return None if held is None else self._channels.info(held)

    async def create_channel(self, name: str) -> views.ChannelInfo:
        """Create a channel with this group as its first member (its membership log
        starts here).

        Raises:
            StoreError: this node already has a channel of that name (a join may
                still bring one: names are labels, the id tells them apart).
        """
        return await self._channels.create(name)

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
        return await self._channels.invite(
            channel, expires, offline=offline, with_history=with_history, for_group=for_group
        )

    async def join(self, code: str) -> views.ChannelInfo:
        """Redeem an invite at the inviting group's node and hold the channel it grants
        (an offline code: hold the channel it carries; the first member met redeems it).

        Raises:
            InvalidInvite: the code is damaged, from 0.1.0, or refused (InviteExpired,
                InviteUsed, InviteRevoked are its kinds).
            InviterUnreachable: no answer from the inviter's node.
        """
        return await self._channels.join(code)

    async def leave(self, channel: views.ChannelRef) -> None:
        """Leave a channel: say so in its log, then forget its keys (its bulletins here
        become unreadable)."""
        await self._channels.leave(channel)

    async def remove(
        self, channel: views.ChannelRef, groups: Sequence[str | bytes]
    ) -> views.ChannelInfo:
        """Remove groups (petnames, fingerprints or keys) from a channel and start the
        epoch they cannot read, in one step; the remaining members get its key.

        Raises:
            UnknownContact: a group that is not another member of the channel.
        """
        return await self._channels.remove(channel, groups)

    async def rekey(
        self, channel: views.ChannelRef, remove: Sequence[str | bytes] = ()
    ) -> views.ChannelInfo:
        """Start a new epoch of ``channel`` (removing ``remove`` first, as ``remove``
        does) and hand its key to every member that remains, from the log."""
        return await self._channels.rekey(channel, remove)

    async def upgrade(
        self, channel: views.ChannelRef, keep: Sequence[str | bytes] = ()
    ) -> views.ChannelInfo:
        """Give a channel made by meshnode 0.1.0 its membership log: this group and the
        groups in ``keep`` (petnames, fingerprints of its authors, or keys) are its
        members, on a fresh epoch only they get. Until then it is read-only.

        Raises:
            MeshError: the channel has a log already.
        """
        return await self._channels.upgrade(channel, keep)

    def members(self, channel: views.ChannelRef) -> list[views.MemberInfo]:
        """The members of ``channel`` by seniority, from its membership log."""
        return self._channels.members(channel)

    def invites(self, channel: views.ChannelRef) -> list[views.InviteInfo]:
        """The invites of ``channel``, oldest first."""
        return self._channels.invites(channel)

    async def revoke_invite(self, channel: views.ChannelRef, invite_id: bytes | str) -> None:
        """Revoke an unused invite (its id in bytes or hex, or a unique hex prefix)."""
        await self._channels.revoke_invite(channel, invite_id)

    def log(self, channel: views.ChannelRef) -> list[views.OperationInfo]:
        """The membership operations of ``channel``, oldest first: who created,
        invited, added, removed and rekeyed, and when."""
        return self._channels.log(channel)

    # Posting -------------------------------------------------------------------------

    async def post(
        self,
        channel: views.ChannelRef,
        text: str,
        reply_to: bytes | None = None,
        expires: int | None = None,
    ) -> views.BulletinRecord:
        """Post ``text`` to ``channel``; returns once it is durable in the store."""
        return self._bulletins.post(channel, text, reply_to, expires)

    async def post_public(self, text: str, expires: int | None = None) -> views.BulletinRecord:
        """Post ``text`` to the whole mesh; returns once it is durable."""
        return self._bulletins.post_public(text, expires)

    async def endorse(self, bulletin_id: bytes) -> views.BulletinRecord:
        """State that this group stands behind a bulletin (in the bulletin's channel)."""
        return self._bulletins.endorse(bulletin_id)

    async def send(
        self, recipients: Sequence[str | bytes], text: str, expires: int | None = None
    ) -> views.BulletinRecord:
        """Send a direct bulletin to 1 to 16 groups (petnames or keys); durable on return.

        It reaches each recipient's node when it is online, else waits with up to
        eight holders near the recipient until it expires (default 7 days).
        """
        return self._bulletins.send(recipients, text, expires)

    # Reading -------------------------------------------------------------------------

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
        async with contextlib.aclosing(self._bulletins.read(channel, since, follow)) as found:
            async for record in found:
                yield record

    def unreadable(self) -> list[views.UnreadableInfo]:
        """The stored bulletins addressed to this group that do not open, oldest first,
        each with why (``meshnode read --unreadable``): reading skips them, so this is
        where an organizer sees that a rekey's key has not arrived or that an author
        sent content that is damaged."""
        return self.archive.unreadable()

    # Contacts ----------------------------------------------------------------------

    def contacts(self) -> list[views.ContactInfo]:
        return self._contacts.infos()

    def add_contact(self, petname: str, key: str | bytes) -> views.ContactInfo:
        """Name a group (``key`` is its key text ``mk1...`` or 32 bytes)."""
        return self._contacts.add(petname, key)

    def verify_contact(self, petname: str) -> views.ContactInfo:
        """Mark a contact verified (its fingerprint was compared in person)."""
        return self._contacts.verify(petname)

    def block_contact(self, petname: str) -> views.ContactInfo:
        """Block a contact: its sessions are refused and closed."""
        return self._contacts.block(petname)

    # Status and discovery ------------------------------------------------------------

    def status(self) -> views.NodeStatus:
        """What ``meshnode status`` shows."""
        return self._status.now()

    async def changes(self) -> AsyncIterator[views.NodeStatus]:
        """The status now, then again after each change to the node's sessions,
        channels, syncs, deliveries or held mail, forever: for a watcher that waits on
        the node instead of asking it again and again (``meshnode status --follow``)."""
        while True:
            changed = self._ctx.status_changed  # (taken first: a later change sets it)
            yield self.status()
            await changed.wait()

    async def lookup(self, group_key: bytes) -> records.ContactRecord | None:
        """A group's contact record, found through the DHT (None if nobody holds one)."""
        if group_key == self.identity.public_key:
            return self.dht.contact
        return await self.dht.lookup_contact(group_key)


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
            identity=identity, archive=archive, dht=dht, network_key=key, config=cfg,
            address=join_address(host, dht.port), announce=announced(host, dht.port, announce),
            nursery=nursery,
        )  # fmt: skip
        await nursery.start(
            functools.partial(
                connect.serve_listeners, node._peers.accept, listeners, identity=identity,
                network_key=key, config=cfg.session,
            )
        )  # fmt: skip
        presence, delivery = node._presence, node._delivery
        loops = (presence.run_ticks, node._intake.run_passes, presence.run_presence)
        for loop in (*loops, delivery.run_deliveries, delivery.run_mail, presence.run_purges):
            nursery.start_soon(loop)
        for address in bootstrap:
            with contextlib.suppress(MeshError):
                await node._peers.dial(address)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()
