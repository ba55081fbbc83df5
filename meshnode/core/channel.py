"""Channels: a shared secret, the keys and tags derived from it, invites and epochs.

Theory of operation:
- A channel is born from a random 32-byte *founding secret*. It has no owner:
  whoever holds a secret of the channel is a member.
- Everything else is derived with keyed BLAKE2b and a purpose label
  (:func:`meshnode.core.crypto.derive`):

  * channel id = derive(founding secret, ``meshnode/v1/channel/id``), stable for life;
  * each *epoch* has its own secret (epoch 0's is the founding secret; later
    ones are fresh random bytes made by the member who rekeys);
  * epoch key = derive(epoch secret, ``meshnode/v1/channel/epoch-key``),
    the XChaCha20-Poly1305 key of every channel bulletin in that epoch;
  * rendezvous tag for Unix day ``d`` = derive(epoch secret,
    ``meshnode/v1/channel/rendezvous`` || d as 8 bytes big-endian): what members
    look up in the DHT to find each other. It changes every day and every epoch.

- A rekey draws a new epoch secret from randomness, not from anything a member
  holds, so a removed member can derive neither the new key nor the new tags.
  The secret reaches the remaining members in key-update bulletins
  (:class:`meshnode.core.membership.KeyUpdate`). Old epoch secrets are kept: history stays
  readable for those who had it.
- An invite is a signed, checksummed text code (``mni1...``) carrying the name,
  the founding secret, the current epoch and its secret, bootstrap addresses,
  creation time, an optional expiry and the inviter's key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Self

from meshnode.core import codec, crypto, providers, textcode
from meshnode.core.address import check_address
from meshnode.core.identity import Identity, normalize_name
from meshnode.errors import (
    AuthenticationError,
    InvalidInvite,
    InviteExpired,
    MeshError,
    WrongEpoch,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ID_LABEL: Final = b"meshnode/v1/channel/id"
EPOCH_ID_LABEL: Final = b"meshnode/v1/channel/epoch-id"
EPOCH_KEY_LABEL: Final = b"meshnode/v1/channel/epoch-key"
RENDEZVOUS_LABEL: Final = b"meshnode/v1/channel/rendezvous"
INVITE_SIGN_LABEL: Final = b"meshnode/v1/invite"
INVITE_PREFIX: Final = "mni1"
INVITE_VERSION: Final = 1
DAY: Final = 86400
MAX_BOOTSTRAP: Final = 8
MAX_ADDRESS_SIZE: Final = 262
"""The longest bootstrap address in an invite, in bytes."""
MAX_EPOCH: Final = 2**32 - 1
MAX_INVITE_TIME: Final = 2**64 - 1
MAX_INVITE_BODY: Final = 2507
"""The largest invite body the field limits allow (8 longest addresses, the
longest name, the largest numbers): a reader's cap that refuses no invite a
writer can make."""
KEY_UPDATE_TYPE: Final = "application/vnd.meshnode.key-update"


def day_of(now: int) -> int:
    """The Unix day number of a Unix time, the period of rendezvous tags."""
    return now // DAY


@dataclass(frozen=True, slots=True)
class EpochKey:
    """One epoch's secret as a member holds it, with its number (its depth in the
    epoch tree) and its public id (``membership.md``)."""

    number: int
    secret: bytes = field(repr=False)
    id: bytes = field(init=False)
    key: bytes = field(init=False, repr=False, compare=False)
    """The encryption key of the epoch's channel bulletins (derived once: every
    bulletin sealed or opened asks for it)."""

    def __post_init__(self) -> None:
        if not 0 <= self.number <= MAX_EPOCH or len(self.secret) != crypto.KEY_SIZE:
            raise ValueError("an epoch is a number with a 32-byte secret")
        object.__setattr__(self, "id", crypto.derive(self.secret, EPOCH_ID_LABEL))
        object.__setattr__(self, "key", crypto.derive(self.secret, EPOCH_KEY_LABEL))


@dataclass(frozen=True)
class Channel:
    """A channel as one member holds it: its name and id, the epoch secrets it holds
    and the epoch its new bulletins use.

    Siblings (epochs started at the same time on the same parent) share a
    number, so a number may have several secrets; readers try each.
    """

    name: str
    id: bytes
    keys: tuple[EpochKey, ...] = field(repr=False)
    current: bytes = field(repr=False)
    """The id of the epoch new bulletins use."""

    def __post_init__(self) -> None:
        if len(self.id) != crypto.KEY_SIZE:
            raise ValueError("a channel id is 32 bytes")
        object.__setattr__(self, "name", normalize_name(self.name))
        keys = tuple(sorted({k.id: k for k in self.keys}.values(), key=lambda k: (k.number, k.id)))
        if not any(k.id == self.current for k in keys):
            raise ValueError("a channel holds the secret of its current epoch")
        object.__setattr__(self, "keys", keys)

    @classmethod
    def from_secret(cls, name: str, secret: bytes) -> Self:
        """The channel of a founding secret (``Channel.create`` draws one at random):
        its id is derived from it, and it is the secret of epoch 0."""
        if len(secret) != crypto.KEY_SIZE:
            raise ValueError("a channel secret is 32 bytes")
        first = EpochKey(0, secret)
        return cls(name=name, id=crypto.derive(secret, ID_LABEL), keys=(first,), current=first.id)

    @classmethod
    def create(cls, name: str) -> Self:
        """A new channel with a fresh random secret (from the installed providers);
        its creator is its first member."""
        return cls.from_secret(name, providers.current().random(crypto.KEY_SIZE))

    @classmethod
    def from_epochs(cls, name: str, secret: bytes, epochs: Mapping[int, bytes]) -> Self:
        """A channel of the first format (one secret per number, the highest current),
        as 0.1.0 stored it and its invites carried it."""
        channel = cls.from_secret(name, secret)
        for number, epoch_secret in sorted(epochs.items()):
            if number == 0 and epoch_secret != secret:
                raise ValueError("epoch 0's secret is the founding secret")
            channel = channel.with_epoch(number, epoch_secret)
        return channel

    @property
    def epoch(self) -> int:
        """The number of the current epoch, the one new bulletins use."""
        return self.current_key.number

    @property
    def current_key(self) -> EpochKey:
        return next(k for k in self.keys if k.id == self.current)

    @property
    def founding_secret(self) -> bytes | None:
        """The founding secret, if this member holds it (the id is derived from it)."""
        for k in self.keys:
            if k.number == 0 and crypto.derive(k.secret, ID_LABEL) == self.id:
                return k.secret
        return None

    @property
    def epochs(self) -> dict[int, bytes]:
        """One secret per epoch number held: the current epoch's for its number, the
        least id's for the others (a view for callers that know no siblings)."""
        view = {k.number: k.secret for k in reversed(self.keys)}
        view[self.epoch] = self.current_key.secret
        return view

    def epoch_keys(self, epoch: int) -> list[bytes]:
        """Every encryption key held for epoch number ``epoch`` (siblings share one)."""
        return [k.key for k in self.keys if k.number == epoch]

    def epoch_key(self, epoch: int | None = None) -> bytes:
        """The encryption key of ``epoch`` (default: the current one)."""
        if epoch is None or epoch == self.epoch:
            return self.current_key.key
        keys = self.epoch_keys(epoch)
        if not keys:
            raise WrongEpoch(f"this member does not hold the key of epoch {epoch} of {self.name!r}")
        return keys[0]

    def rendezvous_tag(self, day: int, epoch: int | None = None) -> bytes:
        """The DHT rendezvous tag for Unix day ``day`` in ``epoch`` (default current)."""
        secret = self.epochs.get(self.epoch if epoch is None else epoch)
        if secret is None:
            raise WrongEpoch(f"this member does not hold the key of epoch {epoch} of {self.name!r}")
        return crypto.derive(secret, RENDEZVOUS_LABEL + day.to_bytes(8, "big"))

    def with_key(self, key: EpochKey, *, current: bool | None = None) -> Self:
        """This channel also holding ``key``; it becomes the current epoch when
        ``current`` says so, or by default when its number is above the current one."""
        make_current = key.number > self.epoch if current is None else current
        return dataclasses.replace(
            self,
            keys=(*self.keys, key),
            current=key.id if make_current else self.current,
        )

    def with_epoch(self, epoch: int, secret: bytes) -> Self:
        """This channel, also holding ``epoch``'s secret (from a key update)."""
        return self.with_key(EpochKey(epoch, secret))

    def next_epoch(self, rng: crypto.Rng) -> Self:
        """This channel with a new current epoch whose secret is fresh randomness."""
        if self.epoch >= MAX_EPOCH:
            raise MeshError("this channel has used every epoch number")
        return self.with_key(EpochKey(self.epoch + 1, rng(crypto.KEY_SIZE)), current=True)

    def rekey(self) -> Self:
        """This channel with a fresh epoch drawn from the installed providers (send
        its key update to the remaining members)."""
        return self.next_epoch(providers.current().random)

    def invite(
        self, by: Identity, expires: int | None = None, bootstrap: Sequence[str] = ()
    ) -> str:
        """A self-contained signed invite code made now (by the installed clock);
        ``expires`` is a lifetime in seconds (None: no expiry).

        A node makes one-time codes instead (``Node.invite``) and refuses these, which
        carry the channel's secrets: they are for programs that share a channel by
        other means."""
        now = providers.current().now()
        expires_at = None if expires is None else now + expires
        return self.make_invite(by, now=now, expires_at=expires_at, bootstrap=bootstrap)

    @classmethod
    def from_invite(cls, code: str) -> Channel:
        """The channel a code of :meth:`invite` admits to, checked against the installed
        clock (raises InvalidInvite or InviteExpired)."""
        return cls.parse_invite(code, now=providers.current().now()).channel

    def make_invite(
        self,
        by: Identity,
        *,
        now: int,
        expires_at: int | None = None,
        bootstrap: Sequence[str] = (),
    ) -> str:
        """A signed invite code for this channel, safe in a terminal, URL or chat."""
        if not 0 <= now <= MAX_INVITE_TIME:
            raise ValueError("an invite's creation time is a Unix time in 64 bits")
        if expires_at is not None and not now < expires_at <= MAX_INVITE_TIME:
            raise ValueError("an invite's expiry must be after its creation, within 64 bits")
        addresses = [check_address(a, MAX_ADDRESS_SIZE) for a in bootstrap]
        if len(addresses) > MAX_BOOTSTRAP:
            raise ValueError(f"an invite carries at most {MAX_BOOTSTRAP} bootstrap addresses")
        founding = self.founding_secret
        if founding is None:
            raise MeshError("only a member holding the founding secret makes a code of this format")
        epoch = self.epoch
        body = [
            INVITE_VERSION,
            self.name,
            founding,
            epoch,
            self.current_key.secret,
            addresses,
            now,
            expires_at,
            by.public_key,
        ]
        signed = codec.pack(body)
        return textcode.encode(INVITE_PREFIX, signed + by.sign(INVITE_SIGN_LABEL + signed))

    @classmethod
    def parse_invite(cls, code: str, *, now: int) -> Invite:
        """Read and verify an invite code, raising InvalidInvite or InviteExpired.

        ``code`` may be the code alone or a message or link holding it: textcode
        finds it there (``docs/spec/identity.md``, "Reading a code")."""
        doc, signed, sig = read_code(code, max_body=MAX_INVITE_BODY, max_bin=64)
        fields = _invite_fields(doc)
        _v, name, secret, epoch, epoch_secret, addresses, created, expires, inviter = fields
        check_inviter(inviter, signed, sig)
        if expires is not None and now >= expires:
            raise InviteExpired("this invite has expired: ask the inviting group for a new one")
        try:
            channel = cls.from_epochs(name, secret, {0: secret, epoch: epoch_secret})
        except ValueError as exc:
            raise InvalidInvite(f"not a valid invite code: {exc}") from None
        return Invite(
            channel=channel,
            inviter=inviter,
            bootstrap=tuple(addresses),
            created_at=created,
            expires_at=expires,
        )


@dataclass(frozen=True)
class Invite:
    """A verified invite: the channel it admits to and what came with it."""

    channel: Channel
    inviter: bytes
    bootstrap: tuple[str, ...]
    created_at: int
    expires_at: int | None


def read_code(code: str, *, max_body: int, max_bin: int) -> tuple[object, bytes, bytes]:
    """The decoded body of an invite code of any version, with its bytes and signature
    (checked by :func:`check_inviter` once the body names the inviter).

    Raises:
        InvalidInvite: no code, a bad checksum, or a body that is not canonical msgpack.
    """
    try:
        data = textcode.decode(INVITE_PREFIX, code, max_size=max_body + crypto.SIGNATURE_SIZE)
    except textcode.TextCodeError as exc:
        raise InvalidInvite(f"not a valid invite code: {exc}") from None
    if len(data) <= crypto.SIGNATURE_SIZE:
        raise InvalidInvite("not a valid invite code: too short")
    body, sig = data[: -crypto.SIGNATURE_SIZE], data[-crypto.SIGNATURE_SIZE :]
    try:
        doc = codec.unpack_canonical(
            body, max_size=max_body, max_str=MAX_ADDRESS_SIZE, max_bin=max_bin, max_array=16
        )
    except codec.DecodeError:
        raise InvalidInvite("not a valid invite code: damaged contents") from None
    return doc, body, sig


def check_inviter(inviter: bytes, body: bytes, sig: bytes) -> None:
    """Raise InvalidInvite unless ``sig`` is the inviter's signature over the body."""
    try:
        crypto.verify(inviter, INVITE_SIGN_LABEL + body, sig)
    except AuthenticationError:
        raise InvalidInvite("invite signature does not verify: it was altered") from None


def _invite_fields(
    doc: object,
) -> tuple[int, str, bytes, int, bytes, list[str], int, int | None, bytes]:
    bad = InvalidInvite("not a valid invite code: unexpected contents")
    if not isinstance(doc, list) or len(doc) != 9:
        raise bad
    version, name, secret, epoch, epoch_secret, addresses, created, expires, inviter = doc
    if version != INVITE_VERSION or type(version) is not int:
        raise InvalidInvite(
            f"invite version {codec.describe(version)} is not supported by this meshnode"
        )
    if not (
        isinstance(name, str)
        and isinstance(secret, bytes)
        and len(secret) == crypto.KEY_SIZE
        and type(epoch) is int
        and 0 <= epoch <= MAX_EPOCH
        and isinstance(epoch_secret, bytes)
        and len(epoch_secret) == crypto.KEY_SIZE
        and isinstance(addresses, list)
        and len(addresses) <= MAX_BOOTSTRAP
        and type(created) is int
        and created >= 0
        and (expires is None or (type(expires) is int and expires > created))
        and isinstance(inviter, bytes)
        and len(inviter) == crypto.KEY_SIZE
    ):
        raise bad
    try:
        checked = [check_address(a, MAX_ADDRESS_SIZE) for a in addresses]
        # A name travels in its normal form, one spelling per name: refuse any other.
        name_ok = normalize_name(name) == name
    except ValueError:
        raise bad from None
    if not name_ok:
        raise bad
    if epoch == 0 and epoch_secret != secret:
        raise bad
    return version, name, secret, epoch, epoch_secret, checked, created, expires, inviter
