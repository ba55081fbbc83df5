"""What a node holds and writes: its bulletins, channels and contacts over the store.

The node's trio code calls this synchronous layer, which never blocks on the
network. It:
- seals the node's own bulletins with the next sequence number and ``prev``
  of their stream, and stores them before anyone hears of them (so a post is
  durable when it returns);
- takes in received bulletins (stored once, forks kept, quotas enforced) and
  keeps one :class:`~meshnode.core.sync.RangeIndex` per topic beside the
  store, which is the :class:`~meshnode.core.sync.Holdings` gossip and sync
  read;
- applies key updates addressed to this group to the channels it holds;
- turns stored bulletins into the :class:`~meshnode.core.views.BulletinRecord`
  an organizer reads, when this group can open them;
- remembers the stored bulletins addressed to this group that do not open
  (:class:`~meshnode.core.views.UnreadableInfo`): reading skips them, never
  stops at them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from meshnode import redact
from meshnode.core import crypto, views
from meshnode.core.bulletin import (
    DIRECT_STREAM,
    PUBLIC_STREAM,
    TEXT_PLAIN,
    Bulletin,
    Content,
    Kind,
)
from meshnode.core.channel import KEY_UPDATE_TYPE, Channel
from meshnode.core.identity import Identity, fingerprint, normalize_name, parse_key
from meshnode.core.invite import GRANT_TYPE, Grant, InviteCode
from meshnode.core.membership import OP_CONTENT_TYPE, KeyUpdate
from meshnode.core.operation import Op, decode_op
from meshnode.core.sync import RangeIndex, topic_of
from meshnode.errors import (
    AmbiguousChannel,
    BulletinTooLarge,
    InvalidBulletin,
    InvalidKey,
    MeshError,
    NotARecipient,
    StoreError,
    UnknownBulletin,
    UnknownChannel,
    UnknownContact,
    WrongEpoch,
)
from meshnode.memberships import Memberships

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from meshnode.core.wire import Topic
    from meshnode.store import Insert, Origin, Store, StoredBulletin

log = logging.getLogger("meshnode.archive")

_KIND_NAMES = {
    Kind.PUBLIC: "public",
    Kind.CHANNEL: "channel",
    Kind.DIRECT: "direct",
    Kind.ENDORSEMENT: "endorsement",
    Kind.KEY_UPDATE: "key-update",
    Kind.MEMBERSHIP: "membership",
}


_RECENT = 256
"""Verified bulletins kept in memory for ``Archive.record`` (the newest stored)."""


@dataclass(frozen=True, slots=True)
class _Unopened:
    """Why a bulletin addressed to us does not open, with what lists it."""

    author: bytes
    kind: Kind
    channel_id: bytes | None
    created_at: int
    reason: str
    author_at_fault: bool


@dataclass(frozen=True, slots=True)
class Ingested:
    """What taking in one bulletin did."""

    result: Insert
    channel_changed: Channel | None = None
    """A key update addressed to us, or the channel's membership log, changed this
    channel (a new epoch, new members, a removal)."""


class Archive:
    """A node's bulletins, channels and contacts; the gossip machine's Holdings.

    Args:
        identity: this group's identity (its own bulletins are sealed with it).
        store: the open store.
        clock: the Unix time in seconds, written into bulletins.
        rng: random bytes for nonces and keys.
    """

    def __init__(
        self,
        identity: Identity,
        store: Store,
        *,
        clock: Callable[[], int],
        rng: crypto.Rng = os.urandom,
    ) -> None:
        self.identity = identity
        self.store = store
        self._clock = clock
        self._rng = rng
        self._channels: dict[bytes, Channel] = {c.id: c for c in store.channels()}
        self.memberships = Memberships(identity, store, clock=clock, rng=rng)
        for channel_id in self._channels:
            self.memberships.load(channel_id)
        self._indexes: dict[Topic, RangeIndex] = {}
        self._recent: dict[bytes, Bulletin] = {}
        """The newest bulletins stored, already verified, by id: ``record`` reads them
        without decoding and verifying their bytes again (at most ``_RECENT``)."""
        self._contents: dict[bytes, Content] = {}
        """The contents of recently opened bulletins (at most ``_RECENT``)."""
        self._unopened: dict[bytes, _Unopened] | None = None
        """Stored bulletins addressed to us that do not open, by id (None until first
        asked for). One pass over the store makes it, the first time a status or a
        listing needs it; after that it is kept up to date as bulletins are stored
        or read, channels joined, rekeyed or left, and bulletins expire, so a status
        costs a ``len``, not a decryption of the store. It lives in memory, not in the
        store: whether a bulletin opens depends on the keys held, which key updates
        change, so a saved verdict would need the same re-checks, and the one pass per
        start is bounded by the channels and direct bulletins held."""
        self._flagged: set[bytes] = set()
        """Authors who signed a box that does not open (or malformed content), logged
        once each: the signature covers the ciphertext, so that is the author's doing,
        never a carrier's (carriers are charged only for what they can check, the
        envelope: see ``Bulletin.from_bytes``)."""

    # Holdings (read by gossip and sync) ----------------------------------------

    def has(self, bulletin_id: bytes) -> bool:
        """Held, or evicted (not to be fetched again: docs/spec/store.md, "Budget")."""
        return self.store.known(bulletin_id)

    def get(self, topic: Topic, ids: Sequence[bytes]) -> list[bytes]:
        index = self.index(topic)
        wanted = [i for i in ids if i in index]
        return [s.raw for s in self.store.get_many(wanted, now=self._clock())]

    def seq_id(self, topic: Topic, author: bytes, seq: int) -> bytes | None:
        return self.store.id_at(topic, author, seq)

    def index(self, topic: Topic) -> RangeIndex:
        index = self._indexes.get(topic)
        if index is None:
            index = self._indexes[topic] = RangeIndex(self.store.items(topic, now=self._clock()))
        return index

    # Channels ----------------------------------------------------------------------

    def channels(self) -> list[Channel]:
        """The channels this group is in, by name."""
        return sorted(self._channels.values(), key=lambda c: c.name)

    def channel(self, channel_id: bytes) -> Channel | None:
        return self._channels.get(channel_id)

    def named(self, name: str) -> list[Channel]:
        """The channels called ``name``: names are labels, so there may be several."""
        wanted = name.strip()
        return sorted((c for c in self._channels.values() if c.name == wanted), key=lambda c: c.id)

    def find_channel(self, ref: views.ChannelRef) -> Channel | None:
        """The channel ``ref`` names, or None: every API call that takes a channel
        resolves it here, so a name, an id and a record mean the same everywhere.

        ``ref`` is a :class:`~meshnode.core.views.ChannelInfo`, a channel id (32
        bytes), or a text: an exact name first, else the id in hex, whole or a
        unique prefix of at least 8 digits.

        Raises:
            AmbiguousChannel: two channels have that name (a join may bring a
                second one), or the hex prefix fits several ids.
        """
        if isinstance(ref, views.ChannelInfo):
            return self._channels.get(ref.id)
        if isinstance(ref, bytes):
            return self._channels.get(ref)
        named = self.named(ref)
        if len(named) > 1:
            raise AmbiguousChannel(
                f"{len(named)} channels are named {ref.strip()!r} ({_ids(named)}): "
                "name the one you mean by its id (see 'meshnode channel list')"
            )
        if named:
            return named[0]
        prefix = ref.strip().lower()
        if len(prefix) < 8:
            return None
        matches = [c for c in self._channels.values() if c.id.hex().startswith(prefix)]
        if len(matches) > 1:
            raise AmbiguousChannel(
                f"the id prefix {prefix!r} fits {len(matches)} channels ({_ids(matches)}): "
                "give more digits of the id"
            )
        return matches[0] if matches else None

    def require_channel(self, ref: views.ChannelRef) -> Channel:
        """:meth:`find_channel`, raising UnknownChannel with what to do next."""
        channel = self.find_channel(ref)
        if channel is None:
            raise UnknownChannel(
                f"no channel {_shown(ref)} on this node (see 'meshnode channel list')"
            )
        return channel

    def add_channel(self, channel: Channel) -> Channel:
        """Keep a channel (merging epochs with the copy already held). A channel
        may share its name with one already here: a join brings the inviter's
        label; the id tells them apart."""
        held = self._channels.get(channel.id)
        if held is not None:
            known = {k.id for k in held.keys}
            for key in channel.keys:
                if key.id not in known:
                    held = held.with_key(key)
            channel = held
        self.store.save_channel(channel, now=self._clock())
        self._channels[channel.id] = channel
        self._reopen(channel.id, joined=held is None)
        return channel

    def remove_channel(self, channel: Channel) -> None:
        self.store.delete_channel(channel.id)
        self._channels.pop(channel.id, None)
        self.memberships.forget(channel.id)
        self._contents.clear()  # (what it opened may not open again if it comes back)
        if self._unopened is not None:  # its bulletins are no longer ours to read
            for bid in [i for i, u in self._unopened.items() if u.channel_id == channel.id]:
                del self._unopened[bid]

    def found_channel(self, name: str) -> tuple[Channel, list[Bulletin]]:
        """A new channel with this group as its only member, and the carriers of its
        first operations (stored; to publish).

        Raises:
            StoreError: this node already has a channel of that name.
        """
        if self.named(normalize_name(name)):
            raise StoreError(f"a channel named {name!r} already exists here")
        channel, ops = self.memberships.found(name)
        self.keep(channel)
        return channel, [self.carry(channel, op) for op in ops]

    def carry(self, channel: Channel, op: Op) -> Bulletin:
        """The carrier of one of our operations: a membership bulletin in the channel's
        current epoch, so gossip and sync replicate the log as they do posts."""
        return self.seal(channel, op.raw, content_type=OP_CONTENT_TYPE, kind=Kind.MEMBERSHIP)

    def keep(self, channel: Channel) -> Channel:
        """Hold this version of a channel (kept by the store already): a new epoch,
        a channel just joined. What did not open before is tried again."""
        joined = channel.id not in self._channels
        self._channels[channel.id] = channel
        self._reopen(channel.id, joined=joined)
        return channel

    def joined(self, code: InviteCode, grant: Grant) -> Channel:
        """Hold the channel an inviter granted (see ``Memberships.accept_grant``)."""
        return self.keep(self.memberships.accept_grant(code.channel_id, grant))

    def upgrade(
        self, channel: Channel, keep: Sequence[bytes]
    ) -> tuple[Channel, list[Bulletin], Grant]:
        """Give a channel from 0.1.0 its membership log (``Memberships.upgrade``):
        the channel on its new epoch, the carriers of the operations (to publish)
        and the grant the kept groups get."""
        channel, ops = self.memberships.upgrade(channel, keep)
        self.keep(channel)
        grant = self.memberships.grant(channel, with_history=False)
        return channel, [self.carry(channel, op) for op in ops], grant

    def hand_over(self, grant: Grant, recipients: Sequence[bytes]) -> Bulletin:
        """Seal a grant for ``recipients`` (at most 16), as direct mail."""
        return self.seal(
            list(recipients),
            grant.encode(),
            content_type=GRANT_TYPE,
            kind=Kind.KEY_UPDATE,
            expires_in=7 * 86400,
        )

    def refresh(self, channel_id: bytes) -> Channel | None:
        """The channel on its log's current epoch (kept), after the log changed."""
        held = self._channels.get(channel_id)
        if held is None:
            return None
        return self.keep(self.memberships.retry(self.memberships.follow(held)))

    # Writing our own ---------------------------------------------------------------

    def _next(self, stream: bytes) -> tuple[int, bytes | None]:
        me = self.identity.public_key
        seq = self.store.frontiers(stream).get(me, 0)
        prev = self.store.id_at(stream, me, seq) if seq else None
        return seq + 1, prev

    def seal(
        self,
        audience: Channel | Sequence[bytes] | None,
        data: bytes,
        *,
        content_type: str = TEXT_PLAIN,
        expires_in: int | None = None,
        reply_to: bytes | None = None,
        endorses: bytes | None = None,
        kind: Kind | None = None,
    ) -> Bulletin:
        """Seal, sign and durably store a bulletin of this group's; returns it.

        Raises:
            BulletinTooLarge: the text does not fit the 64 KiB envelope.
        """
        now = self._clock()
        stream = (
            audience.id
            if isinstance(audience, Channel)
            else (DIRECT_STREAM if audience is not None else PUBLIC_STREAM)
        )
        seq, prev = self._next(stream)
        try:
            bulletin = Bulletin.seal(
                self.identity,
                audience,
                data,
                seq=seq,
                prev=prev,
                now=now,
                rng=self._rng,
                content_type=content_type,
                expires_at=None if expires_in is None else now + expires_in,
                reply_to=reply_to,
                endorses=endorses,
                kind=kind,
            )
        except ValueError as exc:
            if "exceeds" in str(exc):
                raise BulletinTooLarge(
                    f"the text is too long for one bulletin ({len(data)} bytes; "
                    "a bulletin is at most 64 KiB with its envelope)"
                ) from None
            raise MeshError(str(exc)) from None
        self.ingest(bulletin)
        return bulletin

    def key_update(self, update: KeyUpdate, recipients: Sequence[bytes]) -> Bulletin:
        """Seal the key update handing a new epoch to ``recipients`` (at most 16)."""
        return self.seal(
            list(recipients),
            update.encode(),
            content_type=KEY_UPDATE_TYPE,
            kind=Kind.KEY_UPDATE,
            expires_in=7 * 86400,
        )

    # Taking in ---------------------------------------------------------------------

    def ingest(self, bulletin: Bulletin) -> Ingested:
        """Store a verified bulletin; index it; apply it if it is a key update for us."""
        result = self.store.add(bulletin, now=self._clock())
        self._forget_evicted()
        return self._taken(bulletin, result)

    def store_relayed(
        self, bulletins: Sequence[Bulletin], origins: Sequence[Origin]
    ) -> list[Insert]:
        """Relayed bulletins, in two steps: this writes them into the store's relay
        group (``Store.add_relayed``, which weighs each one's origin; readable at once,
        committed by :meth:`commit_relayed`); then :meth:`taken` indexes them. Until
        then nothing serves them: gossip and sync read the index."""
        results = self.store.add_relayed(bulletins, now=self._clock(), origins=origins)
        self._forget_evicted()
        return results

    def commit_relayed(self) -> None:
        """Commit the relay group; if that fails, its bulletins leave the indexes.

        Raises:
            StoreError: the commit failed (the group is rolled back).
        """
        try:
            self.store.commit_relayed()
        finally:
            self._forget_evicted()

    def _forget_evicted(self) -> None:
        """Take what the store evicted out of the indexes, so that nothing serves it."""
        for bulletin_id in self.store.take_evictions():
            for index in self._indexes.values():
                index.discard(bulletin_id)
            self._recent.pop(bulletin_id, None)
            self._contents.pop(bulletin_id, None)

    def taken(self, bulletins: Sequence[Bulletin], results: Sequence[Insert]) -> list[Ingested]:
        """Index bulletins the store took (and apply key updates)."""
        return [self._taken(b, r) for b, r in zip(bulletins, results, strict=True)]

    def _taken(self, bulletin: Bulletin, result: Insert) -> Ingested:
        if not result.stored:
            return Ingested(result)
        self._remember(bulletin)
        if self._unopened is not None:
            self._note(bulletin)
        topic = topic_of(bulletin)
        if topic is not None:
            self.index(topic).add(bulletin.created_at, bulletin.id)
            if bulletin.kind == Kind.MEMBERSHIP:
                return Ingested(result, self._take_carrier(bulletin))
            return Ingested(result)
        if bulletin.kind == Kind.KEY_UPDATE and bulletin.author != self.identity.public_key:
            return Ingested(result, self._apply_key_update(bulletin))
        return Ingested(result)

    def _remember(self, bulletin: Bulletin) -> None:
        _keep(self._recent, bulletin.id, bulletin)

    def _take_carrier(self, bulletin: Bulletin) -> Channel | None:
        """Take the operation a membership bulletin carries into its channel's log."""
        channel = self._channels.get(bulletin.channel_id or b"")
        if channel is None or bulletin.author == self.identity.public_key:
            return None
        try:
            content = bulletin.open(channel)
        except MeshError:
            return None  # an epoch we do not hold: its operation reaches us otherwise
        if content.content_type != OP_CONTENT_TYPE:
            return None
        if not self.memberships.take(channel, [content.data]):
            return None
        return self.refresh(channel.id)

    def _apply_key_update(self, bulletin: Bulletin) -> Channel | None:
        try:
            content = bulletin.open(self.identity)
            if content.content_type == GRANT_TYPE:
                return self._take_upgrade(Grant.decode(content.data), bulletin.author)
            if content.content_type != KEY_UPDATE_TYPE:
                return None
            update = KeyUpdate.decode(content.data)
        except MeshError:
            return None  # not for us, or damaged: kept as held mail, nothing to apply
        held = self._channels.get(update.channel_id)
        if held is None or any(k.secret == update.secret for k in held.keys):
            return None  # (a channel we do not hold, or a key we have)
        log = self.memberships.log(held.id)
        if log is None or not (update.secret is None or log.is_member(bulletin.author)):
            return None  # only a member hands keys; operations alone the log judges
        channel = self.memberships.apply_key_update(held, update)
        return None if channel is None else self.keep(self.memberships.retry(channel))

    def _take_upgrade(self, grant: Grant, sender: bytes) -> Channel | None:
        """A member upgraded a channel from 0.1.0 that we hold without a log: its log
        is ours if it keeps us and comes from a group that posted in the channel or
        that we named (the first such log we see is the one we keep; whoever merely
        holds an old code has posted nothing there)."""
        held = self._channels.get(grant.channel.id)
        if held is None or self.memberships.log(held.id) is not None:
            return None
        if sender not in self.store.frontiers(held.id) and self.store.contact(sender) is None:
            return None
        root = next((r for r in grant.ops if crypto.blake2b_256(r) == grant.root), None)
        if root is None or decode_op(root).author != sender:
            return None
        return self.keep(self.memberships.accept_grant(held.id, grant))

    def purge_expired(self) -> int:
        """Drop expired bulletins from the store and from the indexes."""
        removed = self.store.purge_expired(now=self._clock())
        if removed:
            self._indexes.clear()  # rebuilt from the store on next use
            self._recent.clear()
            self._contents.clear()
            if self._unopened is not None:
                self._unopened = {i: u for i, u in self._unopened.items() if self.store.has(i)}
        return removed

    # Reading -----------------------------------------------------------------------

    def record(self, stored: StoredBulletin) -> views.BulletinRecord | None:
        """The bulletin as an organizer reads it, or None if this group cannot open it:
        not ours (another channel's, a direct one for others, a key update), or ours
        but unreadable (then remembered for :meth:`unreadable`)."""
        b = self._recent.get(stored.id) or Bulletin.from_bytes(stored.raw)
        content = self._note(b)
        if content is None:
            return None
        channel = self._channels.get(b.channel_id) if b.channel_id is not None else None
        try:
            text = content.text
        except UnicodeDecodeError:
            text = f"({content.content_type}, {len(content.data)} bytes)"
        return views.BulletinRecord(
            id=b.id,
            author=b.author,
            author_name=self.author_name(b.author),
            kind=_KIND_NAMES[b.kind],
            channel=channel.name if channel is not None else None,
            channel_id=b.channel_id,
            text=text,
            created_at=b.created_at,
            expires_at=b.expires_at,
            reply_to=b.reply_to,
            endorses=b.endorses,
            seq=b.seq,
            cursor=stored.cursor,
        )

    def history(
        self, channel: Channel | None, *, since: int | None = None
    ) -> list[views.BulletinRecord]:
        """Readable bulletins in order: one channel's, or everything readable."""
        if channel is not None:
            rows = self.store.channel_bulletins(channel.id, since=since)
        else:
            rows = []
            cursor = 0
            while batch := self.store.arrivals(after=cursor):
                rows.extend(batch)
                cursor = batch[-1].cursor
        records = [
            r
            for r in map(self.record, rows)
            if r is not None and (since is None or r.created_at >= since)
        ]
        if channel is None:
            # By creation time (arrival order within a second); sorting the rows
            # instead decoded and verified every bulletin a second time.
            records.sort(key=lambda r: r.created_at)
        return records

    def unreadable_count(self) -> int:
        """How many stored bulletins addressed to us do not open (cheap: see
        ``_unopened``)."""
        return len(self._unreadable())

    def unreadable(self) -> list[views.UnreadableInfo]:
        """The stored bulletins addressed to us that do not open, oldest first, with
        why: a channel's we hold, or direct ones with a key slot for us."""
        infos = []
        for bid, u in self._unreadable().items():
            channel = self._channels.get(u.channel_id) if u.channel_id is not None else None
            infos.append(
                views.UnreadableInfo(
                    id=bid,
                    author=u.author,
                    author_name=self.author_name(u.author),
                    kind=_KIND_NAMES[u.kind],
                    channel=channel.name if channel is not None else None,
                    channel_id=u.channel_id,
                    created_at=u.created_at,
                    reason=u.reason,
                    author_at_fault=u.author_at_fault,
                )
            )
        return sorted(infos, key=lambda i: (i.created_at, i.id))

    def _unreadable(self) -> dict[bytes, _Unopened]:
        """``_unopened``, made by one pass over what may be ours the first time."""
        if self._unopened is None:
            self._unopened = {}
            rows = self.store.stream_bulletins(DIRECT_STREAM)
            for channel_id in self._channels:
                rows += self.store.channel_bulletins(channel_id)
            for stored in rows:
                self._note(Bulletin.from_bytes(stored.raw))
        return self._unopened

    def _reopen(self, channel_id: bytes, *, joined: bool) -> None:
        """Bring ``_unopened`` up to date for a channel just joined (its held bulletins
        are tried) or given new epochs (those that did not open are tried again)."""
        if self._unopened is None:
            return
        if joined:
            rows = self.store.channel_bulletins(channel_id)
        else:
            ids = [i for i, u in self._unopened.items() if u.channel_id == channel_id]
            rows = self.store.get_many(ids, now=self._clock())
        for stored in rows:
            self._unopened.pop(stored.id, None)
            self._note(Bulletin.from_bytes(stored.raw))

    def _note(self, b: Bulletin) -> Content | None:
        """The content of ``b`` for this group, or None: not ours to read, or ours but
        unreadable, which is then remembered (if ``_unopened`` is made yet). The
        content of a recent bulletin is kept, so storing it and reading it at once
        decrypt it once."""
        content = self._contents.get(b.id)
        if content is not None:
            return content
        opened = self._open(b)
        if isinstance(opened, Content):
            _keep(self._contents, b.id, opened)
        if not isinstance(opened, _Unopened):
            return opened
        if self._unopened is not None:
            self._unopened[b.id] = opened
        if opened.author_at_fault and b.author not in self._flagged:
            self._flagged.add(b.author)
            log.warning(
                "bad content: %s signed a bulletin that does not open (%s)",
                redact.peer(fingerprint(b.author)),
                opened.reason,
            )
        return None

    def _open(self, b: Bulletin) -> Content | _Unopened | None:
        """The content of ``b`` for this group; None when it is not ours to read (a
        key update or membership operation, another channel's, a direct one without
        a slot for us), else why it does not open. A ciphertext that does not
        authenticate or content that is malformed is the author's fault (it signed
        them; for a channel, unless a rekeyer handed us another secret for that
        epoch than the author's); an epoch whose key we lack is nobody's yet (the
        key update may be on its way)."""
        if b.kind in (Kind.KEY_UPDATE, Kind.MEMBERSHIP):
            return None  # (membership operations are read through the log)
        key: Channel | Identity | None = None
        if b.channel_id is not None:
            key = self._channels.get(b.channel_id)
            if key is None:
                return None
        elif b.kind == Kind.DIRECT:
            key = self.identity
        try:
            return b.open(key)
        except NotARecipient:
            return None
        except WrongEpoch:
            reason, fault = f"unknown epoch {b.epoch}", False
        except InvalidBulletin as exc:
            reason, fault = str(exc), True
        return _Unopened(b.author, b.kind, b.channel_id, b.created_at, reason, fault)

    def bulletin(self, bulletin_id: bytes) -> Bulletin:
        """A held bulletin, raising UnknownBulletin."""
        stored = self.store.get(bulletin_id)
        if stored is None:
            raise UnknownBulletin(f"no bulletin {bulletin_id.hex()} on this node")
        return Bulletin.from_bytes(stored.raw)

    # Contacts ----------------------------------------------------------------------

    def author_name(self, key: bytes) -> str:
        """The petname given to a group, else its own name if this is us, else its
        fingerprint."""
        if key == self.identity.public_key:
            return self.identity.name
        contact = self.store.contact(key)
        return contact.petname if contact is not None else fingerprint(key)

    def resolve_group(self, name_or_key: str) -> bytes:
        """A group key from a contact's petname or a key text (``mk1...``)."""
        contact = self.store.contact_by_name(name_or_key.strip())
        if contact is not None:
            return contact.key
        try:
            return parse_key(name_or_key)
        except InvalidKey:
            raise UnknownContact(
                f"no contact {name_or_key!r}: add one with 'meshnode contact add NAME KEY'"
            ) from None


def _ids(channels: Sequence[Channel]) -> str:
    return ", ".join(c.id.hex() for c in channels)


def _shown(ref: views.ChannelRef) -> str:
    """A channel reference as an error message shows it (ids in hex, as listed)."""
    if isinstance(ref, views.ChannelInfo):
        return f"{ref.name!r} ({ref.id.hex()})"
    if isinstance(ref, bytes):
        return ref.hex()
    return repr(ref)


_V = TypeVar("_V")


def _keep(recent: dict[bytes, _V], key: bytes, value: _V) -> None:
    """Put ``value`` in a cache of the ``_RECENT`` newest, dropping the oldest."""
    recent[key] = value
    if len(recent) > _RECENT:
        del recent[next(iter(recent))]
