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
  (see :func:`encode_key_update`). Old epoch secrets are kept: history stays
  readable for those who had it.
- An invite is a signed, checksummed text code (``mni1...``) carrying the name,
  the founding secret, the current epoch and its secret, bootstrap addresses,
  creation time, an optional expiry and the inviter's key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from meshnode.core import codec, crypto, textcode
from meshnode.core.address import check_address
from meshnode.core.identity import Identity, normalize_name
from meshnode.errors import (
    AuthenticationError,
    InvalidInvite,
    InviteExpired,
    MeshError,
    WrongEpoch,
)

ID_LABEL: Final = b"meshnode/v1/channel/id"
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


@dataclass(frozen=True)
class Channel:
    """A channel as one member holds it: name, founding secret, epoch secrets."""

    name: str
    secret: bytes = field(repr=False)
    epochs: Mapping[int, bytes] = field(default_factory=dict, repr=False)
    id: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != crypto.KEY_SIZE:
            raise ValueError("a channel secret is 32 bytes")
        object.__setattr__(self, "name", normalize_name(self.name))
        epochs = dict(self.epochs)
        epochs.setdefault(0, self.secret)
        if epochs[0] != self.secret:
            raise ValueError("epoch 0's secret is the founding secret")
        if any(not 0 <= e <= MAX_EPOCH or len(s) != crypto.KEY_SIZE for e, s in epochs.items()):
            raise ValueError("an epoch is a number with a 32-byte secret")
        object.__setattr__(self, "epochs", epochs)
        object.__setattr__(self, "id", crypto.derive(self.secret, ID_LABEL))

    @classmethod
    def from_secret(cls, name: str, secret: bytes) -> Channel:
        """The channel of a founding secret (``Channel.create`` draws one at random)."""
        return cls(name=name, secret=secret)

    @property
    def epoch(self) -> int:
        """The current (highest known) epoch, the one new bulletins use."""
        return max(self.epochs)

    def epoch_key(self, epoch: int | None = None) -> bytes:
        """The encryption key of ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else epoch
        secret = self.epochs.get(e)
        if secret is None:
            raise WrongEpoch(f"this member does not hold the key of epoch {e} of {self.name!r}")
        return crypto.derive(secret, EPOCH_KEY_LABEL)

    def rendezvous_tag(self, day: int, epoch: int | None = None) -> bytes:
        """The DHT rendezvous tag for Unix day ``day`` in ``epoch`` (default current)."""
        e = self.epoch if epoch is None else epoch
        secret = self.epochs.get(e)
        if secret is None:
            raise WrongEpoch(f"this member does not hold the key of epoch {e} of {self.name!r}")
        return crypto.derive(secret, RENDEZVOUS_LABEL + day.to_bytes(8, "big"))

    def with_epoch(self, epoch: int, secret: bytes) -> Channel:
        """This channel, also holding ``epoch``'s secret (from a key update)."""
        return dataclasses.replace(self, epochs={**self.epochs, epoch: secret})

    def next_epoch(self, rng: crypto.Rng) -> Channel:
        """This channel with a new epoch whose secret is fresh randomness (a rekey)."""
        if self.epoch >= MAX_EPOCH:
            raise MeshError("this channel has used every epoch number")
        return self.with_epoch(self.epoch + 1, rng(crypto.KEY_SIZE))

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
        epoch = self.epoch
        body = [
            INVITE_VERSION,
            self.name,
            self.secret,
            epoch,
            self.epochs[epoch],
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
        try:
            data = textcode.decode(
                INVITE_PREFIX, code, max_size=MAX_INVITE_BODY + crypto.SIGNATURE_SIZE
            )
        except textcode.TextCodeError as exc:
            raise InvalidInvite(f"not a valid invite code: {exc}") from None
        if len(data) <= crypto.SIGNATURE_SIZE:
            raise InvalidInvite("not a valid invite code: too short")
        signed, sig = data[: -crypto.SIGNATURE_SIZE], data[-crypto.SIGNATURE_SIZE :]
        try:
            doc = codec.unpack_canonical(
                signed, max_size=MAX_INVITE_BODY, max_str=MAX_ADDRESS_SIZE, max_bin=64, max_array=16
            )
        except codec.DecodeError:
            raise InvalidInvite("not a valid invite code: damaged contents") from None
        fields = _invite_fields(doc)
        _v, name, secret, epoch, epoch_secret, addresses, created, expires, inviter = fields
        try:
            crypto.verify(inviter, INVITE_SIGN_LABEL + signed, sig)
        except AuthenticationError:
            raise InvalidInvite("invite signature does not verify: it was altered") from None
        if expires is not None and now >= expires:
            raise InviteExpired("this invite has expired: ask the inviting group for a new one")
        try:
            channel = cls(name=name, secret=secret, epochs={0: secret, epoch: epoch_secret})
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


def _invite_fields(
    doc: object,
) -> tuple[int, str, bytes, int, bytes, list[str], int, int | None, bytes]:
    bad = InvalidInvite("not a valid invite code: unexpected contents")
    if not isinstance(doc, list) or len(doc) != 9:
        raise bad
    version, name, secret, epoch, epoch_secret, addresses, created, expires, inviter = doc
    if version != INVITE_VERSION or type(version) is not int:
        raise InvalidInvite(f"invite version {version!r} is not supported by this meshnode")
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


def encode_key_update(channel: Channel, epoch: int | None = None) -> bytes:
    """The content of a key-update bulletin handing ``epoch``'s secret to members."""
    e = channel.epoch if epoch is None else epoch
    return codec.pack([channel.id, e, channel.epochs[e]])


def decode_key_update(data: bytes) -> tuple[bytes, int, bytes]:
    """(channel id, epoch, epoch secret) from a key update's content."""
    try:
        doc = codec.unpack_canonical(data, max_size=256, max_bin=32, max_array=3, max_str=0)
    except codec.DecodeError:
        raise MeshError("a key update with damaged contents") from None
    if not (
        isinstance(doc, list)
        and len(doc) == 3
        and isinstance(doc[0], bytes)
        and len(doc[0]) == crypto.KEY_SIZE
        and type(doc[1]) is int
        and 0 < doc[1] <= MAX_EPOCH
        and isinstance(doc[2], bytes)
        and len(doc[2]) == crypto.KEY_SIZE
    ):
        raise MeshError("a key update with damaged contents")
    return doc[0], doc[1], doc[2]
