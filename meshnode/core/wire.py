"""Peer messages: what two nodes say to each other inside a Noise session.

Rules (normative text: docs/spec/gossip.md, "Messages"; sync ranges: docs/spec/sync.md):
1. A message is one session payload: ``version (1 byte) || type (1 byte) ||
   body``, where ``body`` is the canonical msgpack encoding of an array whose
   shape depends on the type. The whole message is at most MAX_MESSAGE bytes.
2. Decoding is strict and total: the size is checked before anything is
   parsed, msgpack is bounded (no strings, no maps, bin and array lengths
   capped) and canonical, every field's type and range is checked, and any
   failure raises :class:`~meshnode.errors.MalformedMessage` and nothing else.
3. Each message is a frozen, keyword-only dataclass whose constructor
   validates it (raising :class:`~meshnode.errors.LocalProtocolError`), so an
   ill-formed message can be neither built nor received. ``decode`` turns the
   local error into the remote one: the peer sent it.
4. Raw bulletins travel as msgpack ``bin`` and are never re-encoded: a relay
   forwards the bytes it verified. Ids are BLAKE2b-256 of those bytes.
5. Topics are 32 bytes: a channel id, or PUBLIC_TOPIC (32 zero bytes, the
   public stream id). A channel id is named to a peer only after both sides
   proved membership with per-session proofs (``membership_proof``), so a
   node never reveals its channels to a non-member.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar, Final, NewType, TypeAlias

from meshnode.core import bulletin as _bulletin
from meshnode.core import codec, crypto
from meshnode.errors import LocalProtocolError, MalformedMessage

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

PeerId = NewType("PeerId", bytes)
"""A peer: the 32-byte Ed25519 key of its group, as its Noise session proved it."""
Topic = NewType("Topic", bytes)
"""What gossip and sync are about: a channel id or PUBLIC_TOPIC."""
BulletinId = NewType("BulletinId", bytes)
"""BLAKE2b-256 of a bulletin's raw bytes."""

WIRE_VERSION: Final = 1
PUBLIC_TOPIC: Final = Topic(_bulletin.PUBLIC_STREAM)
ID_SIZE: Final = 32
PROOF_SIZE: Final = 16
FINGERPRINT_SIZE: Final = 16
MAX_BULLETIN: Final = _bulletin.MAX_SIZE
MIN_BULLETIN: Final = crypto.SIGNATURE_SIZE + 1
# One message carries at least one bulletin of the maximum size plus its framing.
MAX_MESSAGE: Final = MAX_BULLETIN + 256
MAX_BATCH: Final = 256
MAX_PROOFS: Final = 256
MAX_ANNOUNCE: Final = 1024
MAX_WANT: Final = 256
MAX_DONTWANT: Final = 1024
MAX_BACKOFF: Final = 3600
MAX_SYNC_RANGES: Final = 256
MAX_SYNC_IDS: Final = 1024
MAX_PREFIX: Final = ID_SIZE
MAX_DEPOSIT: Final = 16
MAX_MAIL: Final = 256
MAX_MAIL_ACK: Final = 1024
MAX_NONCE: Final = 2**64 - 1
SIGNATURE_SIZE: Final = crypto.SIGNATURE_SIZE
MAX_GRANT_PART: Final = MAX_BULLETIN
MAX_TIMESTAMP: Final = _bulletin.MAX_TIME - 1
_MAX_ARRAY: Final = max(
    MAX_BATCH, MAX_PROOFS, MAX_ANNOUNCE, MAX_WANT, MAX_DONTWANT, MAX_SYNC_IDS, MAX_MAIL_ACK
)

MEMBER_LABEL: Final = b"meshnode/v1/channel/member"
PROOF_LABEL: Final = b"meshnode/v1/gossip/member-proof"

INFINITY: Final = b"\xff" * 8
"""The bound above every item: sync ranges up to it cover the rest of the topic."""


class MessageType(IntEnum):
    """The second byte of every message."""

    HELLO = 1
    GRAFT = 2
    PRUNE = 3
    BULLETINS = 4
    ANNOUNCE = 5
    WANT = 6
    SYNC = 7
    DEPOSIT = 8
    DEPOSIT_ACK = 9
    MAIL_REQUEST = 10
    MAIL = 11
    MAIL_ACK = 12
    PING = 13
    PONG = 14
    REDEEM = 15
    REDEEMED = 16
    DONTWANT = 17


class RangeMode(IntEnum):
    """What a sync range says about the items between its lower and upper bound."""

    SKIP = 0
    FINGERPRINT = 1
    IDLIST = 2
    DIFF = 3


# -- membership proofs -------------------------------------------------------------


def member_key(epoch_secret: bytes) -> bytes:
    """The key a member proves it holds: ``derive(epoch secret, MEMBER_LABEL)``.

    Separate from the epoch key so that proving membership never uses the
    encryption key itself.
    """
    return crypto.derive(epoch_secret, MEMBER_LABEL)


def membership_proof(key: bytes, session_id: bytes, sender: bytes) -> bytes:
    """What ``sender`` puts in its HELLO to prove it holds ``key`` in this session.

    Bound to the session (a proof cannot be replayed in another session) and to
    the sender's key (a peer cannot echo our proofs back to claim our channels).
    """
    return crypto.derive(key, PROOF_LABEL + session_id + sender, PROOF_SIZE)


# -- sync bounds -------------------------------------------------------------------


def make_bound(timestamp: int, prefix: bytes = b"") -> bytes:
    """A sync bound: 8-byte big-endian timestamp then an id prefix (0 to 32 bytes).

    Items are the bytes ``timestamp || id``; an item lies below a bound when it
    sorts before it, so bounds and items compare as plain bytes.
    """
    if not 0 <= timestamp <= MAX_TIMESTAMP or len(prefix) > MAX_PREFIX:
        raise LocalProtocolError("a sync bound's timestamp or prefix is out of range")
    return timestamp.to_bytes(8, "big") + prefix


def bound_timestamp(bound: bytes) -> int | None:
    """The timestamp of a bound, None for INFINITY."""
    return None if bound == INFINITY else int.from_bytes(bound[:8], "big")


def _valid_bound(bound: object) -> bool:
    if not isinstance(bound, bytes):
        return False
    if bound == INFINITY:
        return True
    return 8 <= len(bound) <= 8 + MAX_PREFIX and int.from_bytes(bound[:8], "big") <= MAX_TIMESTAMP


# -- validation helpers ------------------------------------------------------------


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise LocalProtocolError(what)


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == ID_SIZE


def _check_ids(ids: object, low: int, high: int, what: str) -> None:
    _need(
        isinstance(ids, tuple) and low <= len(ids) <= high and all(_is_id(i) for i in ids),
        f"{what}: {low} to {high} ids of {ID_SIZE} bytes",
    )


def _check_raws(raws: object, low: int, high: int, what: str) -> None:
    _need(
        isinstance(raws, tuple)
        and low <= len(raws) <= high
        and all(isinstance(r, bytes) and MIN_BULLETIN <= len(r) <= MAX_BULLETIN for r in raws),
        f"{what}: {low} to {high} bulletins of {MIN_BULLETIN} to {MAX_BULLETIN} bytes",
    )


def _check_uint(value: object, high: int, what: str) -> None:
    _need(type(value) is int and 0 <= value <= high, f"{what}: an integer from 0 to {high}")


def _check_bool(value: object, what: str) -> None:
    _need(type(value) is bool, f"{what}: a boolean")


def _list(value: object, size: int | None = None) -> list[object]:
    if not isinstance(value, list):
        raise LocalProtocolError("expected an array")
    _need(size is None or len(value) == size, "an array of the wrong length")
    return value


# Field readers for decoding: they narrow types; constructors check ranges.


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise LocalProtocolError("expected bytes")
    return value


def _int(value: object) -> int:
    if type(value) is not int:
        raise LocalProtocolError("expected an integer")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise LocalProtocolError("expected a boolean")
    return value


def _blobs(value: object) -> tuple[bytes, ...]:
    return tuple(_bytes(v) for v in _list(value))


def _idlist(value: object) -> tuple[BulletinId, ...]:
    return tuple(BulletinId(_bytes(v)) for v in _list(value))


# -- messages ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Hello:
    """Sent first on every session and again whenever our subscriptions change.

    Each HELLO replaces the previous one. ``public`` says we take part in the
    public topic; ``proofs`` holds one membership proof per channel key we
    present, in random order and padded with random proofs, so a non-member
    learns nothing but a rough count.
    """

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    public: bool
    proofs: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_bool(self.public, "hello public flag")
        _need(
            isinstance(self.proofs, tuple)
            and len(self.proofs) <= MAX_PROOFS
            and all(isinstance(p, bytes) and len(p) == PROOF_SIZE for p in self.proofs),
            f"hello: at most {MAX_PROOFS} proofs of {PROOF_SIZE} bytes",
        )

    def _body(self) -> list[object]:
        return [int(self.public), list(self.proofs)]

    @classmethod
    def _parse(cls, body: list[object]) -> Hello:
        flags, proofs = _list(body, 2)
        _need(_int(flags) in (0, 1), "hello flags: 0 or 1")
        return cls(public=_int(flags) == 1, proofs=_blobs(proofs))


@dataclass(frozen=True, kw_only=True, slots=True)
class Graft:
    """Ask the peer to add us to its mesh for ``topic`` (eager push both ways)."""

    TYPE: ClassVar[MessageType] = MessageType.GRAFT
    topic: Topic

    def __post_init__(self) -> None:
        _need(_is_id(self.topic), "graft topic: 32 bytes")

    def _body(self) -> list[object]:
        return [self.topic]

    @classmethod
    def _parse(cls, body: list[object]) -> Graft:
        (topic,) = _list(body, 1)
        return cls(topic=Topic(_bytes(topic)))


@dataclass(frozen=True, kw_only=True, slots=True)
class Prune:
    """Leave (or refuse) the mesh for ``topic``; do not graft again for ``backoff`` s."""

    TYPE: ClassVar[MessageType] = MessageType.PRUNE
    topic: Topic
    backoff: int

    def __post_init__(self) -> None:
        _need(_is_id(self.topic), "prune topic: 32 bytes")
        _check_uint(self.backoff, MAX_BACKOFF, "prune backoff")

    def _body(self) -> list[object]:
        return [self.topic, self.backoff]

    @classmethod
    def _parse(cls, body: list[object]) -> Prune:
        topic, backoff = _list(body, 2)
        return cls(topic=Topic(_bytes(topic)), backoff=_int(backoff))


@dataclass(frozen=True, kw_only=True, slots=True)
class Bulletins:
    """Raw bulletins: an eager push, or the answer to a WANT."""

    TYPE: ClassVar[MessageType] = MessageType.BULLETINS
    raws: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_raws(self.raws, 1, MAX_BATCH, "bulletins")

    def _body(self) -> list[object]:
        return [list(self.raws)]

    @classmethod
    def _parse(cls, body: list[object]) -> Bulletins:
        (raws,) = _list(body, 1)
        return cls(raws=_blobs(raws))


@dataclass(frozen=True, kw_only=True, slots=True)
class Announce:
    """Ids of recent bulletins on ``topic`` (lazy gossip, GossipSub's IHAVE)."""

    TYPE: ClassVar[MessageType] = MessageType.ANNOUNCE
    topic: Topic
    ids: tuple[BulletinId, ...]

    def __post_init__(self) -> None:
        _need(_is_id(self.topic), "announce topic: 32 bytes")
        _check_ids(self.ids, 1, MAX_ANNOUNCE, "announce")

    def _body(self) -> list[object]:
        return [self.topic, list(self.ids)]

    @classmethod
    def _parse(cls, body: list[object]) -> Announce:
        topic, ids = _list(body, 2)
        return cls(topic=Topic(_bytes(topic)), ids=_idlist(ids))


@dataclass(frozen=True, kw_only=True, slots=True)
class Want:
    """Ask for bulletins of ``topic`` by id (GossipSub's IWANT; also gap and sync fetches)."""

    TYPE: ClassVar[MessageType] = MessageType.WANT
    topic: Topic
    ids: tuple[BulletinId, ...]

    def __post_init__(self) -> None:
        _need(_is_id(self.topic), "want topic: 32 bytes")
        _check_ids(self.ids, 1, MAX_WANT, "want")

    def _body(self) -> list[object]:
        return [self.topic, list(self.ids)]

    @classmethod
    def _parse(cls, body: list[object]) -> Want:
        topic, ids = _list(body, 2)
        return cls(topic=Topic(_bytes(topic)), ids=_idlist(ids))


@dataclass(frozen=True, kw_only=True, slots=True)
class DontWant:
    """Ids of bulletins the sender now has: do not push them to it (GossipSub v1.2's
    IDONTWANT). No topic: the ids say nothing the peer could not tell from a push."""

    TYPE: ClassVar[MessageType] = MessageType.DONTWANT
    ids: tuple[BulletinId, ...]

    def __post_init__(self) -> None:
        _check_ids(self.ids, 1, MAX_DONTWANT, "dontwant")

    def _body(self) -> list[object]:
        return [list(self.ids)]

    @classmethod
    def _parse(cls, body: list[object]) -> DontWant:
        (ids,) = _list(body, 1)
        return cls(ids=_idlist(ids))


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncRange:
    """One range of a SYNC message: from the previous range's upper bound to ``upper``.

    SKIP says nothing more is needed here; FINGERPRINT carries the sender's
    fingerprint of its items in the range; IDLIST all the sender's ids in it;
    DIFF the ids in it that the receiver lacks (final: no answer expected).
    """

    upper: bytes
    mode: RangeMode
    fingerprint: bytes | None = None
    ids: tuple[BulletinId, ...] = ()

    def __post_init__(self) -> None:
        _need(_valid_bound(self.upper), "sync range bound: a timestamp and a short id prefix")
        _need(isinstance(self.mode, RangeMode), "sync range mode: unknown")
        if self.mode == RangeMode.FINGERPRINT:
            _need(
                isinstance(self.fingerprint, bytes)
                and len(self.fingerprint) == FINGERPRINT_SIZE
                and self.ids == (),
                f"fingerprint range: a {FINGERPRINT_SIZE}-byte fingerprint and no ids",
            )
        else:
            _need(self.fingerprint is None, "only a fingerprint range has a fingerprint")
        if self.mode in (RangeMode.IDLIST, RangeMode.DIFF):
            _check_ids(self.ids, 1 if self.mode == RangeMode.DIFF else 0, MAX_SYNC_IDS, "id range")
        else:
            _need(self.ids == (), "only id-list and diff ranges carry ids")


@dataclass(frozen=True, kw_only=True, slots=True)
class Sync:
    """One step of range-based set reconciliation on ``topic`` (docs/spec/sync.md).

    ``opened_by_sender`` tells the two reconciliations a pair may run at once
    apart: true in the messages of the one the sender opened.
    Ranges have strictly increasing upper bounds; trailing SKIPs are omitted,
    so an empty list means "nothing more to say".
    """

    TYPE: ClassVar[MessageType] = MessageType.SYNC
    topic: Topic
    opened_by_sender: bool
    ranges: tuple[SyncRange, ...]

    def __post_init__(self) -> None:
        _need(_is_id(self.topic), "sync topic: 32 bytes")
        _check_bool(self.opened_by_sender, "sync opened_by_sender")
        _need(
            isinstance(self.ranges, tuple)
            and len(self.ranges) <= MAX_SYNC_RANGES
            and all(isinstance(r, SyncRange) for r in self.ranges),
            f"sync: at most {MAX_SYNC_RANGES} ranges",
        )
        _need(sum(len(r.ids) for r in self.ranges) <= MAX_SYNC_IDS, "sync: too many ids")
        previous, previous_mode = b"", None
        for r in self.ranges:
            _need(previous != INFINITY and r.upper > previous, "sync bounds must increase")
            _need(
                not (r.mode == RangeMode.SKIP and previous_mode == RangeMode.SKIP),
                "sync: consecutive skip ranges",
            )
            previous, previous_mode = r.upper, r.mode
        _need(previous_mode != RangeMode.SKIP, "sync: trailing skip range")

    def _body(self) -> list[object]:
        ranges: list[object] = []
        last = 0
        for r in self.ranges:
            ts = bound_timestamp(r.upper)
            if ts is None:
                delta = 0
            else:
                delta, last = 1 + ts - last, ts
            payload: object
            if r.mode == RangeMode.FINGERPRINT:
                payload = r.fingerprint
            elif r.mode == RangeMode.SKIP:
                payload = None
            else:
                payload = list(r.ids)
            ranges.append([delta, r.upper[8:], int(r.mode), payload])
        return [self.topic, self.opened_by_sender, ranges]

    @classmethod
    def _parse(cls, body: list[object]) -> Sync:
        topic, opened, raw_ranges = _list(body, 3)
        ranges = []
        last = 0
        for item in _list(raw_ranges):
            raw_delta, raw_prefix, raw_mode, payload = _list(item, 4)
            delta, prefix, mode = _int(raw_delta), _bytes(raw_prefix), _int(raw_mode)
            _check_uint(delta, MAX_TIMESTAMP + 1, "sync bound timestamp")
            _need(len(prefix) <= MAX_PREFIX, "sync bound prefix too long")
            _need(mode in _RANGE_MODES, "sync range mode")
            if delta == 0:
                _need(prefix == b"", "an infinite bound has no prefix")
                upper = INFINITY
            else:
                last += delta - 1
                _need(last <= MAX_TIMESTAMP, "sync bound timestamp out of range")
                upper = last.to_bytes(8, "big") + prefix
            fingerprint: bytes | None = None
            ids: tuple[BulletinId, ...] = ()
            if mode == RangeMode.FINGERPRINT:
                fingerprint = _bytes(payload)
            elif mode == RangeMode.SKIP:
                _need(payload is None, "a skip range has no payload")
            else:
                ids = _idlist(payload)
            ranges.append(
                SyncRange(upper=upper, mode=RangeMode(mode), fingerprint=fingerprint, ids=ids)
            )
        return cls(topic=Topic(_bytes(topic)), opened_by_sender=_bool(opened), ranges=tuple(ranges))


@dataclass(frozen=True, kw_only=True, slots=True)
class Deposit:
    """Direct bulletins for ``recipient``: deliver them, or hold them until it asks.

    Sent to the recipient's own node when it is online, else to its holders
    (docs/spec/gossip.md, "Direct delivery").
    """

    TYPE: ClassVar[MessageType] = MessageType.DEPOSIT
    recipient: bytes
    raws: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _need(_is_id(self.recipient), "deposit recipient: a 32-byte group key")
        _check_raws(self.raws, 1, MAX_DEPOSIT, "deposit")

    def _body(self) -> list[object]:
        return [self.recipient, list(self.raws)]

    @classmethod
    def _parse(cls, body: list[object]) -> Deposit:
        recipient, raws = _list(body, 2)
        return cls(recipient=_bytes(recipient), raws=_blobs(raws))


@dataclass(frozen=True, kw_only=True, slots=True)
class DepositAck:
    """Which deposited bulletins the holder keeps (``stored``) and which it refuses."""

    TYPE: ClassVar[MessageType] = MessageType.DEPOSIT_ACK
    stored: tuple[BulletinId, ...]
    refused: tuple[BulletinId, ...]

    def __post_init__(self) -> None:
        _check_ids(self.stored, 0, MAX_DEPOSIT, "deposit ack stored")
        _check_ids(self.refused, 0, MAX_DEPOSIT, "deposit ack refused")

    def _body(self) -> list[object]:
        return [list(self.stored), list(self.refused)]

    @classmethod
    def _parse(cls, body: list[object]) -> DepositAck:
        stored, refused = _list(body, 2)
        return cls(stored=_idlist(stored), refused=_idlist(refused))


@dataclass(frozen=True, kw_only=True, slots=True)
class MailRequest:
    """The recipient's node asks a holder for up to ``limit`` bulletins held for it."""

    TYPE: ClassVar[MessageType] = MessageType.MAIL_REQUEST
    limit: int

    def __post_init__(self) -> None:
        _need(type(self.limit) is int and 1 <= self.limit <= MAX_MAIL, "mail request limit")

    def _body(self) -> list[object]:
        return [self.limit]

    @classmethod
    def _parse(cls, body: list[object]) -> MailRequest:
        (limit,) = _list(body, 1)
        return cls(limit=_int(limit))


@dataclass(frozen=True, kw_only=True, slots=True)
class Mail:
    """Held bulletins for the session's peer; ``more`` says another request would get more."""

    TYPE: ClassVar[MessageType] = MessageType.MAIL
    raws: tuple[bytes, ...]
    more: bool

    def __post_init__(self) -> None:
        _check_raws(self.raws, 0, MAX_MAIL, "mail")
        _check_bool(self.more, "mail more flag")

    def _body(self) -> list[object]:
        return [list(self.raws), self.more]

    @classmethod
    def _parse(cls, body: list[object]) -> Mail:
        raws, more = _list(body, 2)
        return cls(raws=_blobs(raws), more=_bool(more))


@dataclass(frozen=True, kw_only=True, slots=True)
class MailAck:
    """The recipient has these bulletins: the holder may forget them."""

    TYPE: ClassVar[MessageType] = MessageType.MAIL_ACK
    ids: tuple[BulletinId, ...]

    def __post_init__(self) -> None:
        _check_ids(self.ids, 1, MAX_MAIL_ACK, "mail ack")

    def _body(self) -> list[object]:
        return [list(self.ids)]

    @classmethod
    def _parse(cls, body: list[object]) -> MailAck:
        (ids,) = _list(body, 1)
        return cls(ids=_idlist(ids))


@dataclass(frozen=True, kw_only=True, slots=True)
class Ping:
    """Liveness and round-trip probe; the peer answers PONG with the same nonce."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    nonce: int

    def __post_init__(self) -> None:
        _check_uint(self.nonce, MAX_NONCE, "ping nonce")

    def _body(self) -> list[object]:
        return [self.nonce]

    @classmethod
    def _parse(cls, body: list[object]) -> Ping:
        (nonce,) = _list(body, 1)
        return cls(nonce=_int(nonce))


@dataclass(frozen=True, kw_only=True, slots=True)
class Pong:
    """The answer to a PING."""

    TYPE: ClassVar[MessageType] = MessageType.PONG
    nonce: int

    def __post_init__(self) -> None:
        _check_uint(self.nonce, MAX_NONCE, "pong nonce")

    def _body(self) -> list[object]:
        return [self.nonce]

    @classmethod
    def _parse(cls, body: list[object]) -> Pong:
        (nonce,) = _list(body, 1)
        return cls(nonce=_int(nonce))


@dataclass(frozen=True, kw_only=True, slots=True)
class Redeem:
    """An invitee proves it holds an invite's token (docs/spec/channel.md, "Redeeming
    an invite"): ``proof`` is the token's signature over the session."""

    TYPE: ClassVar[MessageType] = MessageType.REDEEM
    token: bytes
    proof: bytes

    def __post_init__(self) -> None:
        _need(_is_id(self.token), "redeem token: a 32-byte public key")
        _need(
            isinstance(self.proof, bytes) and len(self.proof) == SIGNATURE_SIZE,
            f"redeem proof: {SIGNATURE_SIZE} bytes",
        )

    def _body(self) -> list[object]:
        return [self.token, self.proof]

    @classmethod
    def _parse(cls, body: list[object]) -> Redeem:
        token, proof = _list(body, 2)
        return cls(token=_bytes(token), proof=_bytes(proof))


class Verdict(IntEnum):
    """The inviter's answer to a REDEEM."""

    GRANTED = 0
    REFUSED = 1
    """The proof does not verify or names no invite: nothing more is said."""
    USED = 2
    EXPIRED = 3
    REVOKED = 4
    NOT_FOR_YOU = 5
    UNAVAILABLE = 6
    """The inviter cannot grant now (it no longer holds the channel, its log is full)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Redeemed:
    """The answer to a REDEEM: a verdict and, when granted, one part of the grant
    (its parts concatenated are the grant; ``more`` says another part follows)."""

    TYPE: ClassVar[MessageType] = MessageType.REDEEMED
    verdict: Verdict
    part: bytes
    more: bool

    def __post_init__(self) -> None:
        _need(isinstance(self.verdict, Verdict), "redeemed verdict")
        _need(
            isinstance(self.part, bytes) and len(self.part) <= MAX_GRANT_PART,
            f"redeemed part: at most {MAX_GRANT_PART} bytes",
        )
        _need(self.verdict == Verdict.GRANTED or not (self.part or self.more), "a refusal is bare")
        _check_bool(self.more, "redeemed more flag")

    def _body(self) -> list[object]:
        return [int(self.verdict), self.part, self.more]

    @classmethod
    def _parse(cls, body: list[object]) -> Redeemed:
        verdict, part, more = _list(body, 3)
        code = _int(verdict)
        _need(code in _VERDICTS, "redeemed verdict")
        return cls(verdict=Verdict(code), part=_bytes(part), more=_bool(more))


_VERDICTS: Final = frozenset(int(v) for v in Verdict)

GossipMessage: TypeAlias = (
    Hello | Graft | Prune | Bulletins | Announce | Want | DontWant | Ping | Pong
)
DeliveryMessage: TypeAlias = Deposit | DepositAck | MailRequest | Mail | MailAck | Redeem | Redeemed
Message: TypeAlias = GossipMessage | Sync | DeliveryMessage

_RANGE_MODES: Final = frozenset(int(m) for m in RangeMode)
_CLASSES: Final[dict[int, Callable[[list[object]], Message]]] = {
    int(cls.TYPE): cls._parse
    for cls in (
        Hello,
        Graft,
        Prune,
        Bulletins,
        Announce,
        Want,
        Sync,
        Deposit,
        DepositAck,
        MailRequest,
        Mail,
        MailAck,
        Ping,
        Pong,
        Redeem,
        Redeemed,
        DontWant,
    )
}


def encode(message: Message) -> bytes:
    """The bytes of ``message`` for one session payload.

    Raises:
        LocalProtocolError: the encoding exceeds MAX_MESSAGE (too many or too
            large bulletins in one message; split them with ``batch_raws``).
    """
    data = bytes((WIRE_VERSION, message.TYPE)) + codec.pack(message._body())
    if len(data) > MAX_MESSAGE:
        raise LocalProtocolError(f"a {len(data)}-byte message exceeds {MAX_MESSAGE} bytes")
    return data


def encode_bulletins(raws: Sequence[bytes]) -> bytes:
    """``encode(Bulletins(raws=...))`` without building the message: the hot path.

    The caller guarantees what ``batch_raws`` guarantees (count, sizes, total).
    """
    return bytes((WIRE_VERSION, MessageType.BULLETINS)) + codec.pack([raws])


def batch_raws(raws: Sequence[bytes], limit: int = MAX_BATCH) -> list[list[bytes]]:
    """Split raw bulletins into batches that each encode within MAX_MESSAGE."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    budget = MAX_MESSAGE - 16
    for raw in raws:
        cost = len(raw) + 5
        if current and (size + cost > budget or len(current) >= limit):
            batches.append(current)
            current, size = [], 0
        current.append(raw)
        size += cost
    if current:
        batches.append(current)
    return batches


def decode(data: bytes) -> Message:
    """Parse one message, strictly.

    Raises:
        MalformedMessage: anything at all wrong with ``data``; nothing else.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage("a message is bytes")
    if not 2 < len(data) <= MAX_MESSAGE:
        raise MalformedMessage(f"a message is 3 to {MAX_MESSAGE} bytes, not {len(data)}")
    data = bytes(data)
    if data[0] != WIRE_VERSION:
        raise MalformedMessage(f"wire version {data[0]} is not supported (this node speaks 1)")
    parse = _CLASSES.get(data[1])
    if parse is None:
        raise MalformedMessage(f"unknown message type {data[1]}")
    try:
        body = codec.unpack_canonical(
            data[2:],
            max_size=MAX_MESSAGE,
            max_str=0,
            max_bin=MAX_BULLETIN,
            max_array=_MAX_ARRAY,
            max_map=0,
        )
    except codec.DecodeError as exc:
        raise MalformedMessage(f"malformed {MessageType(data[1]).name} message: {exc}") from None
    try:
        return parse(_list(body))
    except (LocalProtocolError, ValueError) as exc:
        raise MalformedMessage(f"malformed {MessageType(data[1]).name} message: {exc}") from None
