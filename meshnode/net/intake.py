"""The commit pass: what is received is stored in group passes, and only then relayed.

Theory of operation:
1. A received bulletin waits, pending in gossip (so the machine's
   ``max_pending`` bounds the wait list), for the next pass, with where it came
   from: its author's trust and the peer and source network that delivered it,
   as the store's admission weighs them (docs/spec/store.md, "Budget").
2. A pass stores everything received since the last one in one transaction
   and only then accepts it, i.e. relays it; our own bulletins published
   meanwhile go out with it. Relayed bulletins are committed without an fsync
   (see ``Store.add_unsynced``); our own were stored durably before ``post``
   returned, so every operation that returns a bulletin returns a durable one.
3. Passes are ``store_interval`` apart at least, so under load a pass holds
   more and costs less per bulletin, and a peer gets one write per pass, not
   one per bulletin. The pass rides on the first session read or post after
   the interval (:meth:`Intake.nudge`), or half an interval later at the
   latest; the first after a quiet spell runs at once.
4. Not heard at all: an expired bulletin (docs/spec/gossip.md, "Expiry"), a
   channel bulletin whose author is not a member; one whose author the log
   does not know yet is held until the log says (docs/spec/membership.md).
5. A store error is our disk, not the senders' doing: the pass's bulletins are
   refused without a charge, and fetched again by anti-entropy.
6. A known group (a contact, a member of one of our channels) that endorses a
   bulletin vouches for the bulletin's author.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import trio

from meshnode.core.address import network_of
from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.membership import Post
from meshnode.errors import StoreError
from meshnode.store import LOCAL, Insert, Origin, Trust

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from meshnode.core.channel import Channel
    from meshnode.core.gossip import BulletinReceived
    from meshnode.net.context import Context
    from meshnode.net.peers import Peers

log = logging.getLogger("meshnode.node")


class Intake:
    """Received bulletins, stored in group passes before they are relayed."""

    def __init__(
        self,
        ctx: Context,
        peers: Peers,
        *,
        store_interval: float,
        on_log_changed: Callable[[Channel], None],
    ) -> None:
        """``on_log_changed(channel)`` runs when a stored bulletin changed a channel's
        membership log or epoch."""
        self._ctx = ctx
        self._peers = peers
        self._interval = store_interval
        self._on_log_changed = on_log_changed
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

    def received(self, event: BulletinReceived) -> None:
        """A bulletin the machine took from a peer: stored with the next pass."""
        self._to_store.append((event.bulletin, self._origin(event)))
        self._store_now.set()

    def release(self, bulletins: Iterable[Bulletin]) -> None:
        """Bulletins held until their channel's log knew their authors: stored with
        the next pass."""
        self._to_store.extend((b, LOCAL) for b in bulletins)
        self._store_now.set()

    def publish(self, bulletin: Bulletin) -> None:
        """Publish one of ours (stored already) with the next pass."""
        now = trio.current_time()
        self._ctx.gossip.publish(bulletin, now)
        self._store_now.set()
        self.nudge(now)
        self._ctx.notify()

    def nudge(self, now: float) -> None:
        """A session read or a post: the waiting pass, if it is due, runs now."""
        if now >= self._commit_due:
            self._store_due.set()

    async def run_passes(self) -> None:
        """Group passes: what every session received since the last pass is stored in
        one transaction and only then accepted, i.e. relayed, and our own bulletins
        published meanwhile go out with it. Passes are ``store_interval`` apart at
        least, so under load a pass holds more and costs less per bulletin, and a
        peer gets one write per pass, not one per bulletin. (Relayed bulletins are
        committed without an fsync: see ``Store.add_unsynced``; our own were stored
        durably before ``post`` returned.)"""
        ctx = self._ctx
        interval = self._interval
        last = -math.inf
        while True:
            await self._store_now.wait()
            due = last + interval
            if trio.current_time() < due:
                # The pass rides on the first session read or post after ``due`` (see
                # ``nudge``), so a steady stream costs no timer wake-up of its own;
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
                self._peers.flush()
                continue
            batch = [b for b, _ in admitted]
            try:
                results = ctx.archive.store_unsynced(batch, [o for _, o in admitted])
                self._on_stored(batch, results, trio.current_time())
            except StoreError as exc:
                # Our disk, not the senders' doing: refused without a charge (those
                # already accepted stay so), and fetched again by anti-entropy.
                log.error("could not store %d bulletins: %s", len(batch), exc)
                now = trio.current_time()
                for bulletin in batch:
                    ctx.gossip.reject(bulletin.id, now)
            self._peers.flush()

    def _admitted(self, batch: list[tuple[Bulletin, Origin]]) -> list[tuple[Bulletin, Origin]]:
        """The received bulletins that are heard: an expired one is neither stored nor
        relayed (docs/spec/gossip.md, "Expiry"), nor is a channel bulletin whose
        author is not a member; one whose author the log does not know yet is held
        until the log says (docs/spec/membership.md)."""
        ctx = self._ctx
        now, wall = trio.current_time(), int(time.time())
        heard = []
        for bulletin, origin in batch:
            if bulletin.expired(wall):
                ctx.handle(ctx.gossip.reject(bulletin.id, now))
                continue
            verdict = ctx.archive.memberships.admit(bulletin)
            if verdict is Post.ACCEPT:
                heard.append((bulletin, origin))
                continue
            if verdict is Post.HOLD:
                ctx.archive.memberships.hold(bulletin)
            ctx.handle(ctx.gossip.reject(bulletin.id, now))
        return heard

    def _origin(self, received: BulletinReceived) -> Origin:
        """Where a received bulletin comes from, as the store's admission weighs it
        (docs/spec/store.md, "Budget"): its author's trust, and the peer and source
        network that delivered it."""
        author = received.bulletin.author
        if author == self._ctx.identity.public_key:
            trust = Trust.OWN
        elif author in self.known_groups():
            trust = Trust.KNOWN
        elif self._ctx.archive.store.endorsed(author):
            trust = Trust.ENDORSED
        else:
            trust = Trust.STRANGER
        session = self._peers.session(bytes(received.peer))
        network = b"" if session is None else network_of(session.remote_address)
        return Origin(trust, peer=bytes(received.peer), network=network)

    def known_groups(self) -> frozenset[bytes]:
        """Our contacts (unless blocked) and the members of our channels."""
        if self._known is None:
            archive = self._ctx.archive
            known = {c.key for c in archive.store.contacts() if not c.blocked}
            for channel in archive.channels():
                log = archive.memberships.log(channel.id)
                if log is not None:
                    known.update(log.members())
            known.discard(self._ctx.identity.public_key)
            self._known = frozenset(known)
        return self._known

    def forget_known(self) -> None:
        """A contact changed: the known groups are read again when next asked for."""
        self._known = None

    def know_again(self) -> None:
        """Contacts or members changed: their held bulletins rank as known (so eviction
        spares them and strangers' bounds stop counting them)."""
        self._known = None
        try:
            self._ctx.archive.store.raise_trust(self.known_groups(), Trust.KNOWN)
        except StoreError as exc:
            log.error("could not rank the bulletins of known groups: %s", exc)

    def _on_stored(self, batch: list[Bulletin], results: list[Insert], now: float) -> None:
        ctx = self._ctx
        self._endorsed(batch, results)
        unreadable = ctx.archive.unreadable_count()
        for got in ctx.archive.taken(batch, results):
            if got.channel_changed is not None:
                self._on_log_changed(got.channel_changed)
        if ctx.archive.unreadable_count() != unreadable:
            ctx.changed()
        for bulletin, result in zip(batch, results, strict=True):
            if result in (Insert.OVER_QUOTA, Insert.NO_ROOM, Insert.EXPIRED):
                ctx.gossip.reject(bulletin.id, now)
            else:
                ctx.gossip.accept(bulletin.id, now)
        ctx.notify()

    def _endorsed(self, batch: list[Bulletin], results: list[Insert]) -> None:
        """A known group's endorsement vouches for the endorsed bulletin's author."""
        me, known = self._ctx.identity.public_key, self.known_groups()
        store = self._ctx.archive.store
        for bulletin, result in zip(batch, results, strict=True):
            if not (
                result.stored
                and bulletin.kind == Kind.ENDORSEMENT
                and bulletin.endorses is not None
                and bulletin.author in known
            ):
                continue
            author = store.author_of(bulletin.endorses)
            if author is not None and author != me and author not in known:
                store.endorse(author, now=int(time.time()))
