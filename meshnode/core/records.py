"""Signed DHT records: contact and rendezvous records, validation, merging, expiry.

Any node of a Kademlia DHT may store any value under any key, so nothing a
DHT node hands us is trusted until it passes :func:`validate` here. The shell
(:mod:`meshnode.net.dht`) runs it on every path: STORE requests, FIND_VALUE
replies and our own publishes. Normative text: ``docs/spec/dht.md``.

Rules:
1. A record is the canonical msgpack encoding of an array whose first element
   is its :class:`RecordType`. Nothing else is a record; the whole encoding
   is at most :data:`MAX_RECORD_SIZE` bytes, well below the 8 KiB that an
   rpcudp request may carry, so a valid record always fits one datagram.
   Every integer field is a msgpack integer: ``true`` and ``false`` decode to
   Python bools, a subclass of int, and are refused wherever an integer
   belongs (type tags included), so a valid record re-encodes to exactly the
   bytes it was decoded from.
2. A **contact record** ``[1, group_key, seq, created, expires, addresses,
   signature]`` maps a group's Ed25519 key to the addresses its node listens
   on. ``signature`` is the group's over ``CONTACT_SIGN_LABEL || pack(the six
   fields before it)``. It lives under :func:`contact_key` of the group key,
   and it proves the node ID, which is :func:`node_id` of that same key.
3. A **rendezvous record** ``[2, rendezvous_key, entries]`` gathers the
   contact records of a channel's members for one day. ``rendezvous_key`` is
   the Ed25519 public key whose seed is derived from the day's rendezvous tag
   (:func:`rendezvous_keypair`); each entry is ``[contact_record, signature]``
   with the signature by that tag key over ``RENDEZVOUS_SIGN_LABEL ||
   contact_record``. The record lives under :func:`rendezvous_dht_key`, a hash
   of the tag key, so a storing node can check every entry without knowing the
   tag, and only someone who holds the tag (a member) can add an entry.
4. Entries are sorted by group key, one per group, at most
   :data:`MAX_RENDEZVOUS_ENTRIES`. Merging keeps the highest ``seq`` per group,
   drops expired entries and, when over the caps, keeps the newest ``created``.
5. Time is an input: ``created`` may be at most :data:`MAX_CLOCK_SKEW` ahead of
   ``now``; ``expires`` must be after ``now`` and at most :data:`MAX_LIFETIME`
   ahead of it.
6. Every failure is :class:`InvalidRecord`; a valid record that brings nothing
   newer than the one held is :class:`StaleRecord`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Final, TypeAlias

from meshnode.core import codec, crypto
from meshnode.core.address import check_address
from meshnode.errors import AuthenticationError, InvalidRecord, StaleRecord

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from meshnode.core.identity import Identity

NODE_ID_LABEL: Final = b"meshnode/v1/node-id"
CONTACT_SIGN_LABEL: Final = b"meshnode/v1/record/contact"
CONTACT_KEY_LABEL: Final = b"meshnode/v1/dht/contact"
RENDEZVOUS_SEED_LABEL: Final = b"meshnode/v1/record/rendezvous-seed"
RENDEZVOUS_SIGN_LABEL: Final = b"meshnode/v1/record/rendezvous"
RENDEZVOUS_KEY_LABEL: Final = b"meshnode/v1/dht/rendezvous"

NODE_ID_SIZE: Final = 20
"""Kademlia's ids (and so its keys) are 160 bits."""
TAG_SIZE: Final = 32
MAX_RECORD_SIZE: Final = 7 * 1024
MAX_LIFETIME: Final = 7 * 86400
DEFAULT_LIFETIME: Final = 86400
MAX_CLOCK_SKEW: Final = 600
MAX_ADDRESSES: Final = 4
MAX_ADDRESS_SIZE: Final = 128
"""The longest address in a contact record, in bytes (records are kept small: one datagram)."""
MAX_RENDEZVOUS_ENTRIES: Final = 32
MAX_SEQ: Final = 2**63 - 1
MAX_TIME: Final = 2**40


class RecordType(IntEnum):
    """The first element of every record; the wire value is the integer."""

    CONTACT = 1
    RENDEZVOUS = 2


def node_id(public_key: bytes) -> bytes:
    """The 20-byte Kademlia node ID of a group's node, derived from its Ed25519 key.

    Deriving it (rather than drawing it at random as stock kademlia does) lets
    a contact record prove which node ID belongs to which group.
    """
    return crypto.derive(public_key, NODE_ID_LABEL, NODE_ID_SIZE)


def among_nearest(own: bytes, target: bytes, others: Iterable[bytes], n: int) -> bool:
    """Whether node ID ``own`` is among the ``n`` IDs nearest ``target`` (XOR distance)
    of ``others`` and itself: how a node decides, from its own routing table, that it
    is one of a recipient's holders (docs/spec/gossip.md, "Direct delivery")."""
    goal = int.from_bytes(target)
    mine = int.from_bytes(own) ^ goal
    return sum(1 for o in others if o != own and int.from_bytes(o) ^ goal < mine) < n


def contact_key(group_key: bytes) -> bytes:
    """The DHT key under which a group's contact record is stored."""
    return crypto.derive(group_key, CONTACT_KEY_LABEL, NODE_ID_SIZE)


def rendezvous_keypair(tag: bytes) -> tuple[bytes, bytes]:
    """The (public, secret) Ed25519 key pair of a rendezvous tag.

    Only holders of the tag (members of the channel) can derive the secret
    half, so only they can sign entries; anyone can check them.
    """
    if len(tag) != TAG_SIZE:
        raise ValueError("a rendezvous tag is 32 bytes")
    return crypto.signing_keypair(crypto.derive(tag, RENDEZVOUS_SEED_LABEL))


def rendezvous_dht_key(rendezvous_key: bytes) -> bytes:
    """The DHT key of the rendezvous record whose tag key is ``rendezvous_key``."""
    return crypto.derive(rendezvous_key, RENDEZVOUS_KEY_LABEL, NODE_ID_SIZE)


def rendezvous_key_for_tag(tag: bytes) -> bytes:
    """The DHT key members look up for a rendezvous tag."""
    return rendezvous_dht_key(rendezvous_keypair(tag)[0])


def _check_times(created: int, expires: int, now: int) -> None:
    if created > now + MAX_CLOCK_SKEW:
        raise InvalidRecord("record created in the future: check this machine's clock")
    if expires <= now:
        raise InvalidRecord("record has expired")
    if expires > now + MAX_LIFETIME:
        raise InvalidRecord("record expires more than 7 days ahead")


def _is_uint(value: object, limit: int) -> bool:
    # msgpack's true and false decode to bool, a subclass of int: never an integer here.
    return type(value) is int and 0 <= value <= limit


def _is_tag(value: object, tag: RecordType) -> bool:
    return type(value) is int and value == tag


@dataclass(frozen=True, kw_only=True)
class ContactRecord:
    """A group's signed statement of where its node listens (rule 2).

    The constructor checks the fields' types and ranges; the signature and the
    expiry are checked by :func:`validate` and :func:`decode`, which know
    ``now``. Build one with :func:`make_contact`.
    """

    group_key: bytes
    seq: int
    created: int
    expires: int
    addresses: tuple[str, ...]
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not (
            isinstance(self.group_key, bytes)
            and len(self.group_key) == crypto.KEY_SIZE
            and _is_uint(self.seq, MAX_SEQ)
            and _is_uint(self.created, MAX_TIME)
            and _is_uint(self.expires, MAX_TIME)
            and self.created < self.expires
            and isinstance(self.addresses, tuple)
            and 1 <= len(self.addresses) <= MAX_ADDRESSES
            and len(set(self.addresses)) == len(self.addresses)
            and isinstance(self.signature, bytes)
            and len(self.signature) == crypto.SIGNATURE_SIZE
        ):
            raise InvalidRecord("not a well-formed contact record")
        for address in self.addresses:
            try:
                check_address(address, MAX_ADDRESS_SIZE)
            except ValueError as exc:
                raise InvalidRecord(f"not a usable host:port address: {exc}") from None

    @property
    def key(self) -> bytes:
        """The DHT key this record belongs under."""
        return contact_key(self.group_key)

    @property
    def node_id(self) -> bytes:
        """The node ID this record proves for its group."""
        return node_id(self.group_key)

    def _body(self) -> list[object]:
        return [
            RecordType.CONTACT.value,
            self.group_key,
            self.seq,
            self.created,
            self.expires,
            list(self.addresses),
        ]

    def signed_message(self) -> bytes:
        """The bytes the group signs: the label and the body's canonical encoding."""
        return CONTACT_SIGN_LABEL + codec.pack(self._body())

    def encode(self) -> bytes:
        """The canonical encoding, as stored in the DHT."""
        return codec.pack([*self._body(), self.signature])

    def checked(self, now: int) -> ContactRecord:
        """This record, once the group's signature and the expiry are checked.

        Raises:
            InvalidRecord: a bad signature, expired, or outside the time rules.
        """
        _check_times(self.created, self.expires, now)
        try:
            crypto.verify(self.group_key, self.signed_message(), self.signature)
        except AuthenticationError:
            raise InvalidRecord("contact record signature does not verify") from None
        return self


@dataclass(frozen=True, kw_only=True)
class RendezvousEntry:
    """One member's contact record, countersigned with the rendezvous tag key."""

    contact: ContactRecord
    signature: bytes = field(repr=False)

    def encode(self) -> list[object]:
        """The entry as it appears in the record's array."""
        return [self.contact.encode(), self.signature]


@dataclass(frozen=True, kw_only=True)
class RendezvousRecord:
    """A channel's members for one day: their contact records under the tag key (rule 3)."""

    rendezvous_key: bytes
    entries: tuple[RendezvousEntry, ...]

    def __post_init__(self) -> None:
        if not (
            isinstance(self.rendezvous_key, bytes)
            and len(self.rendezvous_key) == crypto.KEY_SIZE
            and isinstance(self.entries, tuple)
            and 1 <= len(self.entries) <= MAX_RENDEZVOUS_ENTRIES
        ):
            raise InvalidRecord("not a well-formed rendezvous record")
        keys = [e.contact.group_key for e in self.entries]
        if any(a >= b for a, b in itertools.pairwise(keys)):
            raise InvalidRecord("rendezvous entries must be sorted by group key, one per group")

    @property
    def key(self) -> bytes:
        """The DHT key this record belongs under."""
        return rendezvous_dht_key(self.rendezvous_key)

    @property
    def contacts(self) -> tuple[ContactRecord, ...]:
        """The members' contact records, in group-key order."""
        return tuple(e.contact for e in self.entries)

    @property
    def expires(self) -> int:
        """When the last entry expires: a storing node may forget the record then."""
        return max(e.contact.expires for e in self.entries)

    def encode(self) -> bytes:
        """The canonical encoding, as stored in the DHT."""
        return codec.pack(
            [RecordType.RENDEZVOUS.value, self.rendezvous_key, [e.encode() for e in self.entries]]
        )

    def checked(self, now: int) -> RendezvousRecord:
        """This record without its expired entries, once every other entry is checked.

        Expired entries are dropped rather than refused: a storing node that has
        not pruned yet (or a stock node, which never does) still serves the rest.

        Raises:
            InvalidRecord: a bad signature in a live entry, an entry outside
                the time rules, every entry expired, or too big.
        """
        if len(self.encode()) > MAX_RECORD_SIZE:
            raise InvalidRecord(f"record larger than {MAX_RECORD_SIZE} bytes")
        live = []
        for entry in self.entries:
            if entry.contact.expires <= now:
                continue
            entry.contact.checked(now)
            try:
                crypto.verify(
                    self.rendezvous_key,
                    RENDEZVOUS_SIGN_LABEL + entry.contact.encode(),
                    entry.signature,
                )
            except AuthenticationError:
                raise InvalidRecord("rendezvous entry not signed with the tag key") from None
            live.append(entry)
        if not live:
            raise InvalidRecord("record has expired")
        if len(live) == len(self.entries):
            return self
        return RendezvousRecord(rendezvous_key=self.rendezvous_key, entries=tuple(live))


Record: TypeAlias = ContactRecord | RendezvousRecord


def make_contact(
    identity: Identity,
    addresses: Sequence[str],
    *,
    seq: int,
    now: int,
    lifetime: int = DEFAULT_LIFETIME,
) -> ContactRecord:
    """A contact record for ``identity``'s node, signed, valid from ``now``.

    Args:
        identity: the group whose node listens at ``addresses``.
        addresses: one to four ``host:port`` strings others can reach (never
            ``0.0.0.0``: a wildcard tells the reader nothing).
        seq: must grow with every new record of this group, or storing nodes
            keep the old one; the shell uses the wall clock and a saved counter.
        now: the Unix time the record is made.
        lifetime: seconds until it expires, at most 7 days.

    Raises:
        InvalidRecord: a bad address, too many addresses, or a bad lifetime.
    """
    if not 0 < lifetime <= MAX_LIFETIME:
        raise InvalidRecord("a record lives between 1 second and 7 days")
    unsigned = ContactRecord(
        group_key=identity.public_key,
        seq=seq,
        created=now,
        expires=now + lifetime,
        addresses=tuple(addresses),
        signature=bytes(crypto.SIGNATURE_SIZE),
    )
    return ContactRecord(
        group_key=unsigned.group_key,
        seq=seq,
        created=now,
        expires=unsigned.expires,
        addresses=unsigned.addresses,
        signature=identity.sign(unsigned.signed_message()),
    )


def make_rendezvous(tag: bytes, contacts: Iterable[ContactRecord], *, now: int) -> RendezvousRecord:
    """A rendezvous record for ``tag`` holding ``contacts``, each signed with the tag key.

    Expired contacts are left out, the newest per group is kept, and the caps
    of rule 4 apply.

    Raises:
        InvalidRecord: no contact is left to publish.
    """
    public, secret = rendezvous_keypair(tag)
    entries = [
        RendezvousEntry(
            contact=c, signature=crypto.sign(secret, RENDEZVOUS_SIGN_LABEL + c.encode())
        )
        for c in contacts
    ]
    chosen = _select(entries, now)
    if not chosen:
        raise InvalidRecord("a rendezvous record needs at least one unexpired contact")
    return RendezvousRecord(rendezvous_key=public, entries=chosen)


def _select(entries: Iterable[RendezvousEntry], now: int) -> tuple[RendezvousEntry, ...]:
    """Rule 4: newest seq per group, unexpired, capped by count and size, sorted."""
    best: dict[bytes, RendezvousEntry] = {}
    for entry in entries:
        c = entry.contact
        if c.expires <= now:
            continue
        held = best.get(c.group_key)
        if held is None or c.seq > held.contact.seq:
            best[c.group_key] = entry
    newest_first = sorted(best.values(), key=lambda e: (-e.contact.created, e.contact.group_key))
    # Array and map headers: the record array (1), type (1), key (34), entries header (3).
    size = 1 + 1 + 2 + crypto.KEY_SIZE + 3
    kept: list[RendezvousEntry] = []
    for entry in newest_first:
        grown = size + len(codec.pack(entry.encode()))
        if len(kept) == MAX_RENDEZVOUS_ENTRIES or grown > MAX_RECORD_SIZE:
            break
        kept.append(entry)
        size = grown
    return tuple(sorted(kept, key=lambda e: e.contact.group_key))


def _contact_from(doc: object) -> ContactRecord:
    if not (isinstance(doc, list) and len(doc) == 7 and _is_tag(doc[0], RecordType.CONTACT)):
        raise InvalidRecord("not a contact record")
    _tag, group_key, seq, created, expires, addresses, signature = doc
    if not (isinstance(addresses, list) and all(isinstance(a, str) for a in addresses)):
        raise InvalidRecord("not a well-formed contact record")
    return ContactRecord(
        group_key=group_key,
        seq=seq,
        created=created,
        expires=expires,
        addresses=tuple(addresses),
        signature=signature,
    )


def _unpack(value: bytes) -> object:
    if not isinstance(value, bytes):
        raise InvalidRecord("a record is bytes")
    if len(value) > MAX_RECORD_SIZE:
        raise InvalidRecord(f"record larger than {MAX_RECORD_SIZE} bytes")
    try:
        return codec.unpack_canonical(
            value,
            max_size=MAX_RECORD_SIZE,
            max_str=MAX_ADDRESS_SIZE,
            max_bin=MAX_RECORD_SIZE,
            max_array=MAX_RENDEZVOUS_ENTRIES,
        )
    except codec.DecodeError:
        raise InvalidRecord("not a canonical msgpack record") from None


def _parse(value: bytes) -> Record:
    doc = _unpack(value)
    if not isinstance(doc, list) or not doc or type(doc[0]) is not int:
        raise InvalidRecord("not a record")
    if _is_tag(doc[0], RecordType.CONTACT):
        return _contact_from(doc)
    if not _is_tag(doc[0], RecordType.RENDEZVOUS) or len(doc) != 3:
        raise InvalidRecord(f"unknown record type {doc[0]!r}")
    _tag, rendezvous_key, raw_entries = doc
    if not isinstance(raw_entries, list):
        raise InvalidRecord("not a well-formed rendezvous record")
    entries = []
    for raw in raw_entries:
        if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], bytes)):
            raise InvalidRecord("not a well-formed rendezvous entry")
        contact = _contact_from(_unpack(raw[0]))
        if not isinstance(raw[1], bytes):
            raise InvalidRecord("not a well-formed rendezvous entry")
        entries.append(RendezvousEntry(contact=contact, signature=raw[1]))
    return RendezvousRecord(rendezvous_key=rendezvous_key, entries=tuple(entries))


def decode(value: bytes, now: int) -> Record:
    """Parse and fully check a record (structure, signatures, expiry, size).

    A rendezvous record comes back without its expired entries.

    Raises:
        InvalidRecord: for any bytes that are not a valid record at ``now``.
    """
    return _parse(value).checked(now)


def validate(key: bytes, value: bytes, now: int) -> Record:
    """:func:`decode`, and check that ``key`` is the DHT key the record belongs under.

    This is the single gate for every value the DHT accepts, serves or returns.

    Raises:
        InvalidRecord: unknown type, wrong key, bad signature, bad expiry, too big.
    """
    record = decode(value, now)
    if record.key != key:
        raise InvalidRecord("record stored under a key that is not its own")
    return record


def merge(old: Record, new: Record, now: int) -> Record:
    """The record to hold after ``new`` arrives for the key ``old`` is held under.

    Contact records: a higher ``seq`` replaces a lower one. Rendezvous records:
    the union by group, newest ``seq`` per group, expired entries dropped,
    capped (rule 4).

    Raises:
        InvalidRecord: the two records do not belong under the same key.
        StaleRecord: ``new`` brings nothing newer than ``old``.
    """
    if old.key != new.key:
        raise InvalidRecord("records for different keys cannot be merged")
    if isinstance(old, ContactRecord) and isinstance(new, ContactRecord):
        if new.seq <= old.seq:
            raise StaleRecord("a contact record with this sequence number or newer is held")
        return new
    if isinstance(old, RendezvousRecord) and isinstance(new, RendezvousRecord):
        merged = _select((*old.entries, *new.entries), now)
        if not merged:
            raise StaleRecord("every entry has expired")
        if merged == _select(old.entries, now):
            raise StaleRecord("the rendezvous record brings no newer entry")
        return RendezvousRecord(rendezvous_key=old.rendezvous_key, entries=merged)
    raise InvalidRecord("records of different types cannot be merged")


def combine(found: Iterable[Record], now: int) -> Record | None:
    """The best view of one key from several nodes' answers, each validated for it.

    Contact records: the highest ``seq``. Rendezvous records: the union of
    their entries by :func:`merge`. An answer of another type is ignored, so
    the first answer's type wins. None when there is no answer.
    """
    best: Record | None = None
    for record in found:
        if best is None:
            best = record
            continue
        try:
            best = merge(best, record, now)
        except InvalidRecord:  # StaleRecord too: what we have is as new
            continue
    return best
