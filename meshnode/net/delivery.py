"""Direct delivery's shell: the I/O around :mod:`meshnode.core.delivery`.

Theory of operation (docs/spec/gossip.md, "Direct delivery"):
1. The rules (what is kept, refused, charged, acknowledged; the holder rule;
   the retry schedule) are the sans-I/O machine's, :class:`meshnode.core.delivery.Delivery`,
   over the store (its mailbox) and this room (its judge: standing, holders,
   blocked groups). This room feeds it the delivery messages gossip routes
   here and carries out its actions in order: sends, charges, and direct
   bulletins for us to store.
2. A direct bulletin (and a key update, which travels the same way) is queued
   in the store for each recipient (:meth:`Courier.queue`). Every
   ``delivery_interval``, or at once when something was queued, the machine says
   what is due; each is deposited with the recipient's node (a session is opened
   through its contact record if need be), else with as many of the nodes nearest
   the recipient's node ID as it still needs: its holders.
3. At start and every ``mail_interval`` the node dials the holders for its own
   key and asks every peer for the mail it keeps for us.
4. Nothing is acknowledged for what the store could not write (the machine's
   actions stop at the error, before the ack), so the peer keeps it and sends
   it again later: our disk is not its fault.
5. REDEEM and REDEEMED (an invite's redemption, ``net/channels.py``) travel as
   delivery messages and are handed on as they arrive, under rule 4 too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

import trio

from meshnode import redact
from meshnode.core import records, wire
from meshnode.core.delivery import MAX_HOLDERS, Action, Charge, Delivery, Send, Take, is_holder
from meshnode.core.identity import fingerprint
from meshnode.core.wire import PeerId
from meshnode.errors import MeshError, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from meshnode.core.bulletin import Bulletin
    from meshnode.core.channel import Channel
    from meshnode.net.context import Context
    from meshnode.net.peers import Peers

log = logging.getLogger("meshnode.node")

DIRECT_EXPIRY: Final = 7 * 86400
"""Direct bulletins wait for offline recipients this long unless told otherwise."""


class Courier:
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
        self.machine = Delivery(ctx.identity, ctx.archive.store, self)

    def queue(self, bulletin: Bulletin, recipients: Sequence[bytes]) -> None:
        """Deliver ``bulletin`` (stored already) to ``recipients`` other than us."""
        others = [r for r in recipients if r != self._ctx.identity.public_key]
        self._ctx.archive.store.queue_delivery(bulletin, others)
        self._ctx.changed()
        self._deliver_now.set()

    def received(self, peer: PeerId, message: wire.DeliveryMessage) -> None:
        """A delivery message from ``peer``: answered at once (the session read that
        brought it ends with a flush)."""
        try:
            if isinstance(message, wire.Redeem | wire.Redeemed):
                self._on_redeem(peer, message)
                return
            self._carry_out(self.machine.receive(bytes(peer), message, now=int(time.time())))
        except StoreError as exc:
            # Nothing is acknowledged for what we could not write, so the peer keeps
            # it and sends it again later; our disk is not its fault.
            log.error(
                "could not take direct delivery from %s: %s", redact.peer(fingerprint(peer)), exc
            )
        self._ctx.changed()

    def _carry_out(self, actions: Sequence[Action]) -> None:
        """The machine's actions, in order: an error stops the rest (rule 4)."""
        ctx = self._ctx
        for action in actions:
            match action:
                case Send():
                    ctx.gossip.send(PeerId(action.peer), action.message)
                case Charge():
                    now = trio.current_time()
                    ctx.handle(ctx.gossip.penalize(PeerId(action.peer), action.offence, now))
                case Take():
                    got = ctx.archive.ingest(action.bulletin)
                    if got.channel_changed is not None:
                        self._on_log_changed(got.channel_changed)
                    if got.result.stored:
                        ctx.notify()

    # The machine's judge -----------------------------------------------------------

    def holds_for(self, recipient: bytes) -> bool:
        """Whether this node is one of ``recipient``'s holders by the spec's rule, from
        our routing table (:func:`meshnode.core.delivery.is_holder`)."""
        dht = self._ctx.dht
        return is_holder(dht.node_id, recipient, [i for i, _, _ in dht.routing_snapshot()])

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

    def blocked(self, key: bytes) -> bool:
        return self._ctx.blocked(key)

    # Background loops ----------------------------------------------------------------

    async def run_deliveries(self) -> None:
        """Deliver what the machine says is due: to the recipient's node, else to holders."""
        store = self._ctx.archive.store
        while True:
            with trio.move_on_after(self._delivery_interval):
                await self._deliver_now.wait()
            self._deliver_now = trio.Event()
            for due in self.machine.due(now=int(time.time())):
                stored = store.get(due.bulletin_id)
                if stored is None:
                    continue
                if await self.deposit_with(due.recipient, due.recipient, stored.raw):
                    continue
                if due.holders > 0:
                    for key in await self._holders(due.recipient):
                        with contextlib.suppress(MeshError):
                            await self.deposit_with(key, due.recipient, stored.raw, holder=True)

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
        send = self.machine.deposit(peer, recipient, raw)
        sent = self._ctx.gossip.send(PeerId(peer), send.message)
        self._peers.flush()
        return sent

    async def run_mail(self) -> None:
        """Collect what holders keep for us, at start and every ``mail_interval``."""
        while True:
            for address in await self._near(self._ctx.identity.public_key):
                with contextlib.suppress(MeshError):
                    await self._peers.dial(address)
            self._carry_out(self.machine.collect(list(self._peers)))
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
