"""The bulletin envelope: canonical encoding, signatures, sealing and opening.

Rules (normative text: docs/spec/bulletin.md):
1. A bulletin is ``body || signature``. ``body`` is the canonical msgpack
   encoding of an 11-element array; ``signature`` is 64 bytes of Ed25519 by the
   author over ``b"meshnode/v1/bulletin" || body``. The id is BLAKE2b-256 of
   the whole bulletin.
2. Exactly one encoding is valid: the decoder re-encodes the body and refuses
   any difference, and checks every field's type, range and the rules between
   fields before the signature. Every decode failure is InvalidBulletin.
3. Streams: an author's public bulletins (and public endorsements) form one
   stream, its bulletins in a channel another, its direct bulletins (and key
   updates) a third. Within a stream ``seq`` counts from 1 and ``prev`` is the
   id of the bulletin with ``seq - 1`` (nil for the first), so gaps and forks show.
4. Payloads: public kinds carry ``[content_type, data]`` in the clear; channel
   kinds carry ``nonce || XChaCha20-Poly1305(epoch key, [content_type, data],
   ad = the body before the payload)``; direct kinds carry an ephemeral X25519
   key, one anonymous 48-byte key slot per reader, and the content under a
   random content key (as SSB's private-box does). The author always holds a slot.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from meshnode.core import codec, crypto, providers
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity
from meshnode.errors import (
    AuthenticationError,
    InvalidBulletin,
    NotARecipient,
    WrongChannel,
    WrongEpoch,
)

VERSION: Final = 1
SIGN_LABEL: Final = b"meshnode/v1/bulletin"
SLOT_LABEL: Final = b"meshnode/v1/direct-slot"
MAX_SIZE: Final = 64 * 1024
MAX_RECIPIENTS: Final = 16
MAX_CONTENT_TYPE: Final = 64
MAX_SEQ: Final = 2**63 - 1
MAX_TIME: Final = 2**40
SLOT_SIZE: Final = crypto.KEY_SIZE + crypto.TAG_SIZE
TEXT_PLAIN: Final = "text/plain"
PUBLIC_STREAM: Final = bytes(32)
DIRECT_STREAM: Final = b"\xff" * 32
_FIELDS: Final = 11
_ZERO_NONCE: Final = bytes(crypto.XNONCE_SIZE)
_ARRAY_OF_FIELDS: Final = bytes([0x90 | _FIELDS])  # msgpack fixarray header, 11 elements


class Kind(IntEnum):
    """What a bulletin is; the wire value is the integer."""

    PUBLIC = 0
    CHANNEL = 1
    DIRECT = 2
    ENDORSEMENT = 3
    KEY_UPDATE = 4
    MEMBERSHIP = 5
    """A membership-log operation of a channel (docs/spec/membership.md)."""


@dataclass(frozen=True, slots=True)
class Content:
    """What an opened bulletin says: a content type and its data."""

    content_type: str
    data: bytes

    @property
    def text(self) -> str:
        """The data as text (every ``text/*`` content is valid UTF-8)."""
        return self.data.decode("utf-8")


Audience = Channel | Sequence[bytes] | None
"""Who may read: a channel, a list of recipient group keys, or None for everyone."""


@dataclass(frozen=True, slots=True, eq=False)
class Bulletin:
    """A decoded, verified bulletin. Construct with ``seal`` or ``from_bytes`` only."""

    raw: bytes
    id: bytes
    kind: Kind
    author: bytes
    seq: int
    prev: bytes | None
    created_at: int
    expires_at: int | None
    channel_id: bytes | None
    epoch: int | None
    reply_to: bytes | None
    endorses: bytes | None
    payload: object
    ad_size: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bulletin) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def expired(self, now: int) -> bool:
        """Whether its expiry has passed at Unix time ``now``: then no node takes,
        stores, relays or serves it (docs/spec/gossip.md, "Expiry")."""
        return self.expires_at is not None and self.expires_at <= now

    @property
    def stream(self) -> bytes:
        """The stream this bulletin is chained in (see rule 3)."""
        if self.channel_id is not None:
            return self.channel_id
        if self.kind in (Kind.DIRECT, Kind.KEY_UPDATE):
            return DIRECT_STREAM
        return PUBLIC_STREAM

    def to_bytes(self) -> bytes:
        """The signed bytes, exactly as they travel and are stored."""
        return self.raw

    @classmethod
    def seal(
        cls,
        author: Identity,
        audience: Audience,
        data: bytes,
        *,
        seq: int,
        prev: bytes | None,
        now: int,
        rng: crypto.Rng,
        content_type: str = TEXT_PLAIN,
        expires_at: int | None = None,
        reply_to: bytes | None = None,
        endorses: bytes | None = None,
        kind: Kind | None = None,
    ) -> Bulletin:
        """Build, encrypt for ``audience`` and sign a bulletin.

        ``kind`` defaults from the audience (public, channel or direct); pass
        ENDORSEMENT with ``endorses`` or KEY_UPDATE with recipients explicitly.
        """
        if kind is None:
            kind = (
                Kind.PUBLIC
                if audience is None
                else (Kind.CHANNEL if isinstance(audience, Channel) else Kind.DIRECT)
            )
        _check_kind_audience(kind, audience, endorses)
        problem = _content_problem(content_type, data)
        if problem is not None:
            raise ValueError(problem)
        channel = audience if isinstance(audience, Channel) else None
        channel_id: bytes | None = None
        epoch: int | None = None
        aud: object = None
        if channel is not None:
            channel_id, epoch = channel.id, channel.epoch
            aud = [channel_id, epoch]
        header = [
            VERSION,
            int(kind),
            author.public_key,
            seq,
            prev,
            now,
            expires_at,
            aud,
            reply_to,
            endorses,
        ]
        try:
            # The 10 header fields packed as one array, its 1-byte array header
            # swapped for the 11-element one: the body up to the payload.
            prefix = _ARRAY_OF_FIELDS + codec.pack(header)[1:]
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"bulletin field out of range: {exc}") from None
        payload: object
        if audience is None:
            payload = [content_type, data]
        elif isinstance(audience, Channel):
            nonce = rng(crypto.XNONCE_SIZE)
            plain = codec.pack([content_type, data])
            key = audience.epoch_key(epoch)
            payload = nonce + crypto.xchacha_encrypt(key, nonce, plain, prefix)
        else:
            plain = codec.pack([content_type, data])
            payload = _seal_direct(author, audience, plain, prefix, rng)
        body = prefix + codec.pack(payload)
        raw = body + author.sign(SIGN_LABEL + body)
        if len(raw) > MAX_SIZE:
            raise ValueError(f"bulletin of {len(raw)} bytes exceeds the {MAX_SIZE}-byte limit")
        bulletin = cls(
            raw=raw,
            id=crypto.blake2b_256(raw),
            kind=kind,
            author=author.public_key,
            seq=seq,
            prev=prev,
            created_at=now,
            expires_at=expires_at,
            channel_id=channel_id,
            epoch=epoch,
            reply_to=reply_to,
            endorses=endorses,
            payload=payload,
            ad_size=len(prefix),
        )
        _check_header(bulletin)
        return bulletin

    @classmethod
    def create(
        cls,
        author: Identity,
        audience: Audience,
        text: str,
        *,
        seq: int,
        prev: bytes | None = None,
        expires: int | None = None,
        reply_to: bytes | None = None,
        content_type: str = TEXT_PLAIN,
    ) -> Bulletin:
        """Sign (and encrypt for ``audience``) a text bulletin made now: :meth:`seal`
        with the installed clock and random source.

        ``audience`` is a Channel, a list of recipient group keys (direct), or
        None (public). ``expires`` is a lifetime in seconds.
        """
        system = providers.current()
        now = system.now()
        return cls.seal(
            author,
            audience,
            text.encode("utf-8"),
            seq=seq,
            prev=prev,
            now=now,
            rng=system.random,
            content_type=content_type,
            expires_at=None if expires is None else now + expires,
            reply_to=reply_to,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Bulletin:
        """Decode and verify a bulletin; any problem raises :class:`InvalidBulletin`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidBulletin("a bulletin is bytes")
        raw = bytes(data)
        if not crypto.SIGNATURE_SIZE < len(raw) <= MAX_SIZE:
            raise InvalidBulletin(f"a bulletin is at most {MAX_SIZE} bytes and signed")
        body, sig = raw[: -crypto.SIGNATURE_SIZE], raw[-crypto.SIGNATURE_SIZE :]
        try:
            doc = codec.unpack(
                body,
                max_size=MAX_SIZE,
                max_str=MAX_SIZE,
                max_bin=MAX_SIZE,
                max_array=MAX_RECIPIENTS + 1,
                max_map=0,
            )
        except codec.DecodeError as exc:
            raise InvalidBulletin(f"not a bulletin: {exc}") from None
        if not isinstance(doc, list) or len(doc) != _FIELDS:
            raise InvalidBulletin("not a bulletin: wrong structure")
        version, kind, author, seq, prev, created, expires, aud, reply_to, endorses, payload = doc
        if version != VERSION or type(version) is not int:
            raise InvalidBulletin(f"bulletin version {codec.describe(version)} is not supported")
        if type(kind) is not int or kind not in _KINDS:
            raise InvalidBulletin(f"unknown bulletin kind {codec.describe(kind)}")
        try:
            packed_payload = codec.pack(payload)
            canonical = codec.pack(doc) == body
        except (ValueError, TypeError, OverflowError):
            canonical = False
        if not canonical:
            raise InvalidBulletin("not the canonical encoding of a bulletin")
        channel_id: bytes | None = None
        epoch: int | None = None
        if aud is not None:
            if not (
                isinstance(aud, list)
                and len(aud) == 2
                and _is_key(aud[0])
                and type(aud[1]) is int
                and 0 <= aud[1] < 2**32
            ):
                raise InvalidBulletin("malformed audience")
            channel_id, epoch = aud[0], aud[1]
        bulletin = cls(
            raw=raw,
            id=crypto.blake2b_256(raw),
            kind=Kind(kind),
            author=author,
            seq=seq,
            prev=prev,
            created_at=created,
            expires_at=expires,
            channel_id=channel_id,
            epoch=epoch,
            reply_to=reply_to,
            endorses=endorses,
            payload=payload,
            ad_size=len(body) - len(packed_payload),
        )
        _check_header(bulletin)
        _check_payload(bulletin)
        try:
            crypto.verify(author, SIGN_LABEL + body, sig)
        except AuthenticationError:
            raise InvalidBulletin("signature does not verify") from None
        return bulletin

    def open(self, key: Channel | Identity | None = None) -> Content:
        """The content: pass the channel for channel kinds, a recipient's identity for
        direct kinds, nothing for public ones.

        Raises:
            WrongChannel: a channel bulletin opened with another channel or an epoch
                whose key is not held (WrongEpoch).
            NotARecipient: a direct bulletin not addressed to ``key``.
        """
        body = self.raw[: -crypto.SIGNATURE_SIZE]
        ad = body[: self.ad_size]
        if self.channel_id is not None:
            if not isinstance(key, Channel) or key.id != self.channel_id:
                raise WrongChannel("this bulletin belongs to another channel")
            assert isinstance(self.payload, bytes)
            assert self.epoch is not None
            nonce, ct = self.payload[: crypto.XNONCE_SIZE], self.payload[crypto.XNONCE_SIZE :]
            keys = key.epoch_keys(self.epoch)
            if not keys:
                raise WrongEpoch(
                    f"this member does not hold the key of epoch {self.epoch} of {key.name!r}"
                )
            for epoch_key in keys:  # siblings share a number: try each
                try:
                    plain = crypto.xchacha_decrypt(epoch_key, nonce, ct, ad)
                except AuthenticationError:
                    continue
                return _decode_content(plain)
            raise InvalidBulletin("channel content does not decrypt: altered")
        if self.kind in (Kind.DIRECT, Kind.KEY_UPDATE):
            if not isinstance(key, Identity):
                raise NotARecipient("a direct bulletin opens only with a recipient's identity")
            return _decode_content(_open_direct(key, self.payload, ad))
        assert isinstance(self.payload, list)
        return Content(self.payload[0], self.payload[1])


_KINDS: Final = frozenset(int(k) for k in Kind)


def _is_key(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == crypto.KEY_SIZE


def _check_kind_audience(kind: Kind, audience: Audience, endorses: bytes | None) -> None:
    direct = kind in (Kind.DIRECT, Kind.KEY_UPDATE)
    if direct != (audience is not None and not isinstance(audience, Channel)):
        raise ValueError("direct bulletins and key updates go to a list of recipients")
    if kind == Kind.PUBLIC and audience is not None:
        raise ValueError("a public bulletin has no audience")
    if kind in (Kind.CHANNEL, Kind.MEMBERSHIP) and not isinstance(audience, Channel):
        raise ValueError("a channel bulletin needs its channel")
    if (kind == Kind.ENDORSEMENT) != (endorses is not None):
        raise ValueError("an endorsement, and only an endorsement, names the endorsed id")


def _content_problem(content_type: object, data: object) -> str | None:
    """What is wrong with a content type and its data, if anything."""
    if not (
        isinstance(content_type, str)
        and 0 < len(content_type) <= MAX_CONTENT_TYPE
        and content_type.isascii()
        and content_type.isprintable()
    ):
        return f"a content type is 1 to {MAX_CONTENT_TYPE} printable ASCII characters"
    if not isinstance(data, bytes):
        return "content data is bytes"
    # MIME types are case-insensitive (RFC 2045): "Text/Plain" is text too.
    if content_type[:5].lower() == "text/":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "text content is not valid UTF-8"
    return None


def _check_content(content_type: object, data: object) -> None:
    problem = _content_problem(content_type, data)
    if problem is not None:
        raise InvalidBulletin(problem)


def _check_header(b: Bulletin) -> None:
    ok = (
        _is_key(b.author)
        and type(b.seq) is int
        and 1 <= b.seq <= MAX_SEQ
        and (b.prev is None if b.seq == 1 else _is_key(b.prev))
        and type(b.created_at) is int
        and 0 <= b.created_at < MAX_TIME
        and (
            b.expires_at is None
            or (type(b.expires_at) is int and b.created_at < b.expires_at < MAX_TIME)
        )
        and (b.reply_to is None or _is_key(b.reply_to))
        and (b.endorses is None or _is_key(b.endorses))
        and (b.endorses is not None) == (b.kind == Kind.ENDORSEMENT)
    )
    if not ok:
        raise InvalidBulletin("malformed bulletin header")
    channel_kind = b.kind in (Kind.CHANNEL, Kind.MEMBERSHIP) or (
        b.kind == Kind.ENDORSEMENT and b.channel_id
    )
    if (b.channel_id is not None) != bool(channel_kind):
        raise InvalidBulletin("audience does not match the bulletin kind")


def _check_payload(b: Bulletin) -> None:
    p = b.payload
    if b.channel_id is not None:
        if not (isinstance(p, bytes) and len(p) >= crypto.XNONCE_SIZE + crypto.TAG_SIZE):
            raise InvalidBulletin("malformed channel payload")
    elif b.kind in (Kind.DIRECT, Kind.KEY_UPDATE):
        if not (
            isinstance(p, list)
            and len(p) == 3
            and _is_key(p[0])
            and isinstance(p[1], list)
            and 1 <= len(p[1]) <= MAX_RECIPIENTS + 1
            and all(isinstance(s, bytes) and len(s) == SLOT_SIZE for s in p[1])
            and all(a < b for a, b in itertools.pairwise(p[1]))
            and isinstance(p[2], bytes)
            and len(p[2]) >= crypto.XNONCE_SIZE + crypto.TAG_SIZE
        ):
            raise InvalidBulletin("malformed direct payload")
    else:
        if not (isinstance(p, list) and len(p) == 2):
            raise InvalidBulletin("malformed public payload")
        _check_content(p[0], p[1])


def _decode_content(plain: bytes) -> Content:
    try:
        doc = codec.unpack_canonical(
            plain, max_size=MAX_SIZE, max_str=MAX_CONTENT_TYPE, max_bin=MAX_SIZE, max_array=2
        )
    except codec.DecodeError:
        raise InvalidBulletin("malformed content") from None
    if not (isinstance(doc, list) and len(doc) == 2):
        raise InvalidBulletin("malformed content")
    _check_content(doc[0], doc[1])
    return Content(doc[0], doc[1])


def _slot_key(shared: bytes, ephemeral: bytes, recipient_x: bytes) -> bytes:
    return crypto.derive(shared, SLOT_LABEL + ephemeral + recipient_x)


def _seal_direct(
    author: Identity, recipients: Sequence[bytes], plain: bytes, ad: bytes, rng: crypto.Rng
) -> list[object]:
    readers = list(dict.fromkeys(recipients))
    if not 1 <= len(readers) <= MAX_RECIPIENTS or not all(_is_key(r) for r in readers):
        raise ValueError(f"a direct bulletin goes to 1 to {MAX_RECIPIENTS} group keys")
    if author.public_key not in readers:
        readers.append(author.public_key)
    content_key = rng(crypto.KEY_SIZE)
    eph_secret = rng(crypto.KEY_SIZE)
    eph = crypto.x25519_public(eph_secret)
    slots = []
    for reader in readers:
        try:
            rx = crypto.ed25519_pk_to_x25519(reader)
            shared = crypto.x25519(eph_secret, rx)
        except AuthenticationError:
            raise ValueError("a recipient key is not a valid group key") from None
        slots.append(
            crypto.xchacha_encrypt(_slot_key(shared, eph, rx), _ZERO_NONCE, content_key, b"")
        )
    slots.sort()  # order says nothing of who is who, and sealing ignores recipient order
    nonce = rng(crypto.XNONCE_SIZE)
    return [eph, slots, nonce + crypto.xchacha_encrypt(content_key, nonce, plain, ad)]


def _open_direct(identity: Identity, payload: object, ad: bytes) -> bytes:
    assert isinstance(payload, list)
    eph, slots, boxed = payload
    try:
        key = _slot_key(identity.dh(eph), eph, identity.x25519_public)
    except AuthenticationError:
        raise NotARecipient("this direct bulletin is not addressed to this group") from None
    for slot in slots:
        try:
            content_key = crypto.xchacha_decrypt(key, _ZERO_NONCE, slot, b"")
        except AuthenticationError:
            continue
        nonce, ct = boxed[: crypto.XNONCE_SIZE], boxed[crypto.XNONCE_SIZE :]
        try:
            return crypto.xchacha_decrypt(content_key, nonce, ct, ad)
        except AuthenticationError:
            raise InvalidBulletin("direct content does not decrypt: altered") from None
    raise NotARecipient("this direct bulletin is not addressed to this group")
