"""The store pass: what is received is written to the store in passes, and only
then relayed; the writes are committed in groups.

Theory of operation:
1. A received bulletin waits, pending in gossip (so the machine's
   ``max_pending`` bounds the wait list), for the next pass, with where it came
   from: its author's trust and the peer and source network that delivered it,
   as the store's admission weighs them (docs/spec/store.md, "Budget").
2. A pass writes everything received since the last one into the store's relay
   group (``Store.add_relayed``) and only then accepts it, i.e. relays it and
   shows it to readers; our own bulletins published meanwhile go out with it.
   A pass runs as soon as it has work: what arrives while one runs waits for
   the next, so under load a pass holds more and costs less per bulletin, and a
   peer gets one write per pass, not one per bulletin.
3. The relay group is committed (without an fsync) ``store_interval`` after its
   first write, so one commit serves every pass in between; a durable write
   (our own post, say) commits it first. Our own bulletins were stored durably
   before ``post`` returned, so every operation that returns a bulletin returns
   a durable one; a crash takes back at most the relayed bulletins of the
   uncommitted group, which acknowledged nothing and are fetched again.
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
        self._commit_at = math.inf
        """When the relay group is due to be committed (infinity: none is open)."""

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
        self._ctx.gossip.publish(bulletin, trio.current_time())
        self._store_now.set()
        self._ctx.notify()

    async def run_passes(self) -> None:
        """Passes, each as soon as it has work, and the relay group's commit
        ``store_interval`` after its first write (see the module's docstring)."""
        ctx = self._ctx
        while True:
            with trio.move_on_at(self._commit_at):
                await self._store_now.wait()
            if self._store_now.is_set():
                self._store_now = trio.Event()
                if self._pass() and self._commit_at == math.inf:
                    self._commit_at = trio.current_time() + self._interval
                self._peers.flush()
            if trio.current_time() >= self._commit_at:
                self._commit_at = math.inf
                try:
                    ctx.archive.commit_relayed()
                except StoreError as exc:
                    log.error("could not commit the bulletins relayed lately: %s", exc)

    def _pass(self) -> bool:
        """Write what was received into the relay group and accept (relay) it; True if
        anything was written."""
        ctx = self._ctx
        admitted, self._to_store = self._admitted(self._to_store), []
        if not admitted:  # only our own to publish
            return False
        batch = [b for b, _ in admitted]
        try:
            results = ctx.archive.store_relayed(batch, [o for _, o in admitted])
        except StoreError as exc:
            # Our disk, not the senders' doing: refused without a charge (those
            # already accepted stay so), and fetched again by anti-entropy.
            log.error("could not store %d bulletins: %s", len(batch), exc)
            now = trio.current_time()
            for bulletin in batch:
                ctx.gossip.reject(bulletin.id, now)
            return False
        self._on_stored(batch, results, trio.current_time())
        return True

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
        known = self.known_groups()
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
            if author is not None:
                self.vouch(author)

    def vouch(self, author: bytes) -> None:
        """We or a known group endorsed a bulletin of ``author``: unless it is us or
        known already, it is trusted as endorsed from now on."""
        if author != self._ctx.identity.public_key and author not in self.known_groups():
            self._ctx.archive.store.endorse(author, now=int(time.time()))
