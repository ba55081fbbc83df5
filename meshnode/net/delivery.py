"""Direct delivery: deposits, acknowledgements, mail held for others, holders, retries.

Theory of operation (docs/spec/gossip.md, "Direct delivery"):
1. A direct bulletin (and a key update, which travels the same way) is queued
   in the store for each recipient (:meth:`Delivery.queue`). Every
   ``delivery_interval``, or at once when something was queued, each pending
   one is deposited with the recipient's node (a session is opened through its
   contact record if need be), else, while fewer than ``MAX_HOLDERS`` hold it,
   with the nodes nearest the recipient's node ID: its holders.
2. A DEPOSIT_ACK says which deposits were stored: one stored by the recipient
   is delivered, one stored by a holder is held by one more.
3. A node keeps a deposit made out to another group only if it is one of that
   group's holders by the spec's rule (else the depositor is charged), and
   never from or for a blocked group; mail from a contact, or between members
   of a channel we share with the recipient, has standing in the mail bounds.
4. At start and every ``mail_interval`` the node dials the holders for its own
   key and asks every peer for the mail it keeps for us (MAIL_REQUEST); what
   comes back (MAIL) is acknowledged (MAIL_ACK), so the holder forgets it, and
   kept if it holds a key slot for us.
5. Direct delivery carries nothing but direct bulletins and key updates:
   anything else costs the peer that sent it. A box that does not open for us
   is its author's doing (the archive flags the author), never the carrier's.
6. Nothing is acknowledged for what the store could not write, so the peer
   keeps it and sends it again later: our disk is not its fault.
7. REDEEM and REDEEMED (an invite's redemption, ``net/channels.py``) travel as
   delivery messages and are handed on as they arrive, under rule 6 too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import trio

from meshnode.core import crypto, records, wire
from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.channel import Channel
from meshnode.core.gossip import Offence
from meshnode.core.identity import fingerprint
from meshnode.core.wire import PeerId
from meshnode.errors import InvalidBulletin, MeshError, NotARecipient, StoreError
from meshnode.net import redact
from meshnode.net.context import Context
from meshnode.net.peers import Peers

log = logging.getLogger("meshnode.node")

DIRECT_EXPIRY: Final = 7 * 86400
"""Direct bulletins wait for offline recipients this long unless told otherwise."""
MAX_HOLDERS: Final = 8


class Delivery:
    """Direct bulletins to their recipients' nodes or holders, and mail held for others."""

    def __init__(
        self,
        ctx: Context,
        peers: Peers,
        *,
        delivery_interval: float,
        mail_interval: float,
        on_log_changed: Callable[[Channel], None],
        on_redeem: Callable[[PeerId, wire.Redeem | wire.Redeemed], None],
    ) -> None:
        """``on_log_changed(channel)`` runs when a key update delivered to us changed a
        channel's membership log or epoch; ``on_redeem(peer, message)`` takes the
        invites' REDEEM and REDEEMED, which travel as delivery messages."""
        self._ctx = ctx
        self._peers = peers
        self._delivery_interval = delivery_interval
        self._mail_interval = mail_interval
        self._on_log_changed = on_log_changed
        self._on_redeem = on_redeem
        self._deliver_now = trio.Event()
        self.deposits: dict[tuple[bytes, wire.BulletinId], bytes] = {}
        """(peer, bulletin id) -> recipient of deposits awaiting an ack."""

    def queue(self, bulletin: Bulletin, recipients: Sequence[bytes]) -> None:
        """Deliver ``bulletin`` (stored already) to ``recipients`` other than us."""
        others = [r for r in recipients if r != self._ctx.identity.public_key]
        self._ctx.archive.store.queue_delivery(bulletin, others)
        self._ctx.changed()
        self._deliver_now.set()

    def received(self, peer: PeerId, message: wire.DeliveryMessage) -> None:
        """A delivery message from ``peer``: answered at once."""
        try:
            self._deliver(peer, message)
        except StoreError as exc:
            # Nothing is acknowledged for what we could not write, so the peer keeps
            # it and sends it again later; our disk is not its fault.
            log.error(
                "could not take direct delivery from %s: %s", redact.peer(fingerprint(peer)), exc
            )
        self._ctx.changed()
        self._peers.flush()

    def _deliver(self, peer: PeerId, message: wire.DeliveryMessage) -> None:
        gossip, store = self._ctx.gossip, self._ctx.archive.store
        now = trio.current_time()
        match message:
            case wire.Deposit():
                stored: list[wire.BulletinId] = []
                refused: list[wire.BulletinId] = []
                for b in self._direct_bulletins(peer, message.raws, now):
                    ok = self._take_deposit(peer, message.recipient, b)
                    (stored if ok else refused).append(wire.BulletinId(b.id))
                gossip.send(peer, wire.DepositAck(stored=tuple(stored), refused=tuple(refused)))
            case wire.DepositAck():
                for bid in (*message.stored, *message.refused):
                    recipient = self.deposits.pop((bytes(peer), bid), None)
                    if recipient is None or bid not in message.stored:
                        continue
                    if recipient == bytes(peer):
                        store.delivered(bid, recipient)
                    else:
                        store.held_by_one_more(bid, recipient)
            case wire.MailRequest():
                raws, more = store.mail_for(bytes(peer), now=int(time.time()), limit=message.limit)
                gossip.send(peer, wire.Mail(raws=tuple(raws), more=more))
            case wire.Mail():
                ids = []
                for b in self._direct_bulletins(peer, message.raws, now):
                    if self._for_us(b):  # (the holder took the depositor's word for it)
                        self._ingest(b)
                    ids.append(wire.BulletinId(b.id))
                if ids:
                    gossip.send(peer, wire.MailAck(ids=tuple(ids)))
                if message.more:
                    gossip.send(peer, wire.MailRequest(limit=wire.MAX_MAIL))
            case wire.MailAck():
                store.forget_mail(bytes(peer), message.ids)
            case wire.Redeem() | wire.Redeemed():
                self._on_redeem(peer, message)

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
                self._ctx.handle(self._ctx.gossip.penalize(peer, Offence.INVALID_BULLETIN, now))
                continue
            found.append(b)
        return found

    def _take_deposit(self, sender: PeerId, recipient: bytes, b: Bulletin) -> bool:
        ctx = self._ctx
        if b.expired(int(time.time())):
            return False
        if recipient == ctx.identity.public_key:
            if not self._for_us(b):
                return False  # (deposited for us, but it holds no slot for us)
            self._ingest(b)
            return True
        if not self.holds_for(recipient):
            ctx.handle(ctx.gossip.penalize(sender, Offence.MISDIRECTED, trio.current_time()))
            return False
        if ctx.blocked(bytes(sender)) or ctx.blocked(b.author):
            return False
        return ctx.archive.store.hold_mail(
            recipient, b, now=int(time.time()), standing=self.standing(b.author, recipient)
        )

    def holds_for(self, recipient: bytes) -> bool:
        """Whether this node is one of ``recipient``'s holders by the spec's rule
        (docs/spec/gossip.md, "Direct delivery"): among the ``2 * MAX_HOLDERS`` node
        IDs nearest the recipient's that our routing table knows (twice the holders a
        sender picks, so that a sender whose view of the DHT differs from ours is
        not refused, nor charged, for it)."""
        dht = self._ctx.dht
        known = [node_id for node_id, _, _ in dht.routing_snapshot()]
        target = records.node_id(recipient)
        return records.among_nearest(dht.node_id, target, known, 2 * MAX_HOLDERS)

    def standing(self, author: bytes, recipient: bytes) -> bool:
        """Whether mail from ``author`` to ``recipient`` may use the half of the mail
        bounds that throw-away keys cannot reach: the author is a contact of ours, or
        a member of a channel we share with the recipient."""
        archive = self._ctx.archive
        if archive.store.contact(author) is not None:
            return True
        for channel in archive.channels():
            log = archive.memberships.log(channel.id)
            if log is not None and log.is_member(author) and log.is_member(recipient):
                return True
        return False

    def _for_us(self, b: Bulletin) -> bool:
        """Whether a direct bulletin holds a key slot for this group: only then is it
        ours to keep (one whose slot opens but whose box does not is kept, and counted
        unreadable, to its author's blame)."""
        try:
            b.open(self._ctx.identity)
        except NotARecipient:
            return False
        except MeshError:
            return True
        return True

    def _ingest(self, b: Bulletin) -> None:
        got = self._ctx.archive.ingest(b)
        if got.channel_changed is not None:
            self._on_log_changed(got.channel_changed)
        if got.result.stored:
            self._ctx.notify()

    # Background loops ----------------------------------------------------------------

    async def run_deliveries(self) -> None:
        """Deliver queued direct bulletins: to the recipient's node, else to holders."""
        store = self._ctx.archive.store
        while True:
            with trio.move_on_after(self._delivery_interval):
                await self._deliver_now.wait()
            self._deliver_now = trio.Event()
            for bulletin_id, recipient, holders in store.pending_deliveries(now=int(time.time())):
                stored = store.get(bulletin_id)
                if stored is None:
                    continue
                if await self.deposit_with(recipient, recipient, stored.raw):
                    continue
                if holders < MAX_HOLDERS:
                    for key in await self._holders(recipient):
                        with contextlib.suppress(MeshError):
                            await self.deposit_with(key, recipient, stored.raw, holder=True)

    async def deposit_with(
        self, peer: bytes, recipient: bytes, raw: bytes, *, holder: bool = False
    ) -> bool:
        """Open a session with ``peer`` if needed and deposit; True if the deposit went out."""
        if peer not in self._peers:
            if holder:
                return False
            contact = await self._ctx.dht.lookup_contact(peer)
            if contact is None:
                return False
            for address in contact.addresses:
                with contextlib.suppress(MeshError):
                    await self._peers.dial(address)
                    break
        if peer not in self._peers:
            return False
        bid = wire.BulletinId(crypto.blake2b_256(raw))
        self.deposits[(peer, bid)] = recipient
        sent = self._ctx.gossip.send(PeerId(peer), wire.Deposit(recipient=recipient, raws=(raw,)))
        self._peers.flush()
        return sent

    async def run_mail(self) -> None:
        """Collect what holders keep for us, at start and every ``mail_interval``."""
        while True:
            for address in await self._near(self._ctx.identity.public_key):
                with contextlib.suppress(MeshError):
                    await self._peers.dial(address)
            for key in self._peers:
                self._ctx.gossip.send(PeerId(key), wire.MailRequest(limit=wire.MAX_MAIL))
            self._peers.flush()
            await trio.sleep(self._mail_interval)

    async def _holders(self, group_key: bytes) -> list[bytes]:
        """Keys of the holders for ``group_key`` (the nodes nearest its node ID), with a
        session to each: those already connected count too, others are dialled."""
        connected = {records.node_id(k): k for k in self._peers}
        keys: list[bytes] = []
        for node_id, address in await self._ctx.dht.closest(group_key, MAX_HOLDERS):
            key = connected.get(node_id)
            if key is None:
                with contextlib.suppress(MeshError):
                    key = await self._peers.dial(address)
            if key is not None and key != group_key:
                keys.append(key)
        return keys

    async def _near(self, group_key: bytes) -> list[str]:
        """Addresses of the holders for ``group_key`` (the nodes nearest its node ID)
        that this node has no session with yet."""
        connected = {records.node_id(k) for k in self._peers}
        found = await self._ctx.dht.closest(group_key, MAX_HOLDERS)
        return [address for node_id, address in found if node_id not in connected]
