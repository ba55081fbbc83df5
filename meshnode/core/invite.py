"""Invite codes of version 2 and what redeeming one hands over (normative text:
docs/spec/channel.md, "Invites" and "Redeeming an invite").

Theory of operation:
- An invite is a one-time *token*: an Ed25519 key pair drawn by the inviter.
  The invite-issued operation of the membership log holds the token's public
  key, the expiry and, optionally, the one group allowed to redeem it. The code
  carries the inviter's key, its node's addresses and the token's seed, and no
  channel secret, so a code that leaks after its use or its expiry gives
  nothing.
- An *offline* code also carries a grant (the current epoch and the log as
  issued), for groups that cannot be online together: the invitee reads at
  once, and any member it meets later redeems the token (writes the add); until
  then the others hold its posts. Whoever sees such a code can read the channel
  until the next rekey, whatever its expiry.
- The invitee's node dials the inviter, checks that the session's peer is the
  code's inviter, and proves the token by signing a label, the session's
  handshake hash and its own key with it (:func:`redeem_proof`). The inviter
  answers a valid proof of an unused, unexpired, unrevoked invite with a
  *grant*: the channel's name and id, the current epoch's secret (all of them
  with history), and the membership log, which now holds the add operation
  naming the invite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from meshnode.core import codec, crypto, textcode
from meshnode.core.address import check_address
from meshnode.core.channel import (
    INVITE_PREFIX,
    INVITE_SIGN_LABEL,
    MAX_ADDRESS_SIZE,
    MAX_BOOTSTRAP,
    MAX_INVITE_TIME,
    Channel,
    EpochKey,
    check_inviter,
    read_code,
)
from meshnode.core.identity import Identity, normalize_name
from meshnode.errors import AuthenticationError, InvalidInvite, InviteExpired

if TYPE_CHECKING:
    from collections.abc import Sequence

VERSION: Final = 2
REDEEM_LABEL: Final = b"meshnode/v1/invite-redeem"
MAX_NAME_BYTES: Final = 256
MAX_BODY: Final = 2 + 1 + 3 + MAX_NAME_BYTES + 3 * 34 + 1 + 8 * (3 + MAX_ADDRESS_SIZE) + 2 * 9 + 1
"""The largest body the field limits allow: the array header, version and mode, the
longest name, three 32-byte values, 8 longest addresses, two 64-bit times, nil."""
MAX_GRANT: Final = 8 * 1024 * 1024
MAX_GRANT_KEYS: Final = 4096
MAX_GRANT_OPS: Final = 4096
MAX_OFFLINE_BODY: Final = 32 * 1024
"""The largest body of an offline code (it carries a grant): its text stays within
what a reader searches (textcode.MAX_TEXT_CHARS)."""
GRANT_TYPE: Final = "application/vnd.meshnode.grant"
"""The content type of a grant sent as direct mail (an upgraded channel's log)."""
ONLINE: Final = 0
OFFLINE: Final = 1
DEFAULT_EXPIRY: Final = 7 * 86400


@dataclass(frozen=True, slots=True)
class Grant:
    """What an invitee receives: enough to hold the channel and its log."""

    channel: Channel
    root: bytes
    """The id of the log's create operation (the first of ``ops``)."""
    ops: tuple[bytes, ...]
    """The signed operations of the membership log, as the inviter held them."""

    def encode(self) -> bytes:
        keys = [[k.number, k.secret] for k in self.channel.keys]
        return codec.pack(
            [
                self.channel.id,
                self.channel.name,
                self.channel.current,
                keys,
                self.root,
                list(self.ops),
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Grant:
        """Read a grant; anything wrong raises InvalidInvite."""
        bad = InvalidInvite("the inviter's answer is damaged: ask for a new code")
        try:
            doc = codec.unpack_canonical(
                data,
                max_size=MAX_GRANT,
                max_str=MAX_NAME_BYTES,
                max_bin=64 * 1024,
                max_array=max(MAX_GRANT_KEYS, MAX_GRANT_OPS),
            )
        except codec.DecodeError:
            raise bad from None
        if not (isinstance(doc, list) and len(doc) == 6):
            raise bad
        channel_id, name, current, keys, root, ops = doc
        if not (
            isinstance(name, str)
            and isinstance(keys, list)
            and all(
                isinstance(k, list)
                and len(k) == 2
                and type(k[0]) is int
                and isinstance(k[1], bytes)
                for k in keys
            )
            and isinstance(root, bytes)
            and isinstance(ops, list)
            and all(isinstance(o, bytes) for o in ops)
            and isinstance(channel_id, bytes)
            and isinstance(current, bytes)
        ):
            raise bad
        try:
            channel = Channel(
                name=name,
                id=channel_id,
                keys=tuple(EpochKey(n, s) for n, s in keys),
                current=current,
            )
        except ValueError:
            raise bad from None
        return cls(channel=channel, root=root, ops=tuple(ops))


@dataclass(frozen=True, slots=True)
class InviteCode:
    """A verified code of version 2."""

    channel_name: str
    channel_id: bytes
    inviter: bytes
    addresses: tuple[str, ...]
    token_seed: bytes
    created_at: int
    expires_at: int
    grant: Grant | None = None
    """An offline code's grant: the channel's current epoch and log, as issued."""

    @property
    def token(self) -> bytes:
        """The token's public key, as the invite-issued operation names it."""
        return crypto.signing_keypair(self.token_seed)[0]


def make_code(
    inviter: Identity,
    *,
    channel: Channel,
    token_seed: bytes,
    addresses: Sequence[str],
    now: int,
    expires_at: int,
    grant: Grant | None = None,
) -> str:
    """A signed code of version 2: redeemed online at the inviter's node, or with
    ``grant`` an offline code that carries the current epoch and the log itself.

    Raises:
        ValueError: a value the reader would refuse (an offline code whose grant
            is too large, for one).
    """
    if not 0 <= now < expires_at <= MAX_INVITE_TIME:
        raise ValueError("an invite's expiry must be after its creation, within 64 bits")
    checked = [check_address(a, MAX_ADDRESS_SIZE) for a in addresses]
    if len(checked) > MAX_BOOTSTRAP:
        raise ValueError(f"an invite carries at most {MAX_BOOTSTRAP} addresses")
    body = codec.pack(
        [
            VERSION,
            ONLINE if grant is None else OFFLINE,
            channel.name,
            channel.id,
            inviter.public_key,
            checked,
            token_seed,
            now,
            expires_at,
            None if grant is None else grant.encode(),
        ]
    )
    if len(body) > MAX_OFFLINE_BODY:
        raise ValueError(
            f"the channel's log is too large for an offline code ({len(body)} bytes): "
            "use an online one"
        )
    return textcode.encode(INVITE_PREFIX, body + inviter.sign(INVITE_SIGN_LABEL + body))


def parse_code(code: str, *, now: int) -> InviteCode:
    """Read and verify a code, raising InvalidInvite (or InviteExpired)."""
    doc, body, sig = read_code(code, max_body=MAX_OFFLINE_BODY, max_bin=MAX_OFFLINE_BODY)
    if isinstance(doc, list) and doc and doc[0] == 1 and type(doc[0]) is int:
        raise InvalidInvite(
            "this code was made by meshnode 0.1.0 and carries the channel's secret: "
            "ask the inviting group for a new code"
        )
    bad = InvalidInvite("not a valid invite code: unexpected contents")
    if not (isinstance(doc, list) and len(doc) == 10):
        raise bad
    version, mode, name, channel_id, inviter, addresses, seed, created, expires, grant = doc
    if type(version) is not int or version != VERSION:
        raise InvalidInvite(
            f"invite version {codec.describe(version)} is not supported by this meshnode"
        )
    if not (
        mode in (ONLINE, OFFLINE)
        and type(mode) is int
        and isinstance(name, str)
        and _is_key(channel_id)
        and _is_key(inviter)
        and isinstance(addresses, list)
        and len(addresses) <= MAX_BOOTSTRAP
        and _is_key(seed)
        and type(created) is int
        and type(expires) is int
        and 0 <= created < expires <= MAX_INVITE_TIME
        and (grant is None if mode == ONLINE else isinstance(grant, bytes))
        and (mode == OFFLINE or len(body) <= MAX_BODY)
    ):
        raise bad
    try:
        checked = tuple(check_address(a, MAX_ADDRESS_SIZE) for a in addresses)
        # A name travels in its normal form, one spelling per name: refuse any other.
        name_ok = normalize_name(name) == name
    except ValueError:
        raise bad from None
    if not name_ok:
        raise bad
    check_inviter(inviter, body, sig)
    if now >= expires:
        raise InviteExpired("this invite has expired: ask the inviting group for a new one")
    carried = None if grant is None else Grant.decode(grant)
    if carried is not None and carried.channel.id != channel_id:
        raise bad
    return InviteCode(
        channel_name=name,
        channel_id=channel_id,
        inviter=inviter,
        addresses=checked,
        token_seed=seed,
        created_at=created,
        expires_at=expires,
        grant=carried,
    )


def _is_key(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == crypto.KEY_SIZE


def redeem_proof(token_seed: bytes, handshake_hash: bytes, invitee: bytes) -> bytes:
    """The token's signature that proves, in this session only, that ``invitee``
    holds the code."""
    _, secret = crypto.signing_keypair(token_seed)
    return crypto.sign(secret, REDEEM_LABEL + handshake_hash + invitee)


def check_redeem_proof(token: bytes, proof: bytes, handshake_hash: bytes, invitee: bytes) -> bool:
    """Whether ``proof`` is the token's signature for this session and invitee."""
    try:
        crypto.verify(token, REDEEM_LABEL + handshake_hash + invitee, proof)
    except AuthenticationError:
        return False
    return True

