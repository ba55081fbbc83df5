"""Invite codes of version 2 and what redeeming one hands over (normative text:
docs/spec/channel.md, "Invites" and "Redeeming an invite").

Theory of operation:
- An invite is a one-time *token*: an Ed25519 key pair drawn by the inviter.
  The invite-issued operation of the membership log holds the token's public
  key, the expiry and, optionally, the one group allowed to redeem it. The code
  carries the inviter's key, its node's addresses and the token's seed, and no
  channel secret, so a code that leaks after its use or its expiry gives
  nothing.
- The invitee's node dials the inviter, checks that the session's peer is the
  code's inviter, and proves the token by signing a label, the session's
  handshake hash and its own key with it (:func:`redeem_proof`). The inviter
  answers a valid proof of an unused, unexpired, unrevoked invite with a
  *grant*: the channel's name and id, the current epoch's secret (all of them
  with history), and the membership log, which now holds the add operation
  naming the invite.
- An *offline* code carries a grant in itself (the current epoch only), for
  groups that cannot be online together: whoever sees it can read the channel
  until the next rekey, whatever its expiry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from meshnode.core import codec, crypto, textcode
from meshnode.core.channel import (
    _CODE_RUN,
    INVITE_PREFIX,
    INVITE_SIGN_LABEL,
    MAX_ADDRESS_CHARS,
    MAX_BOOTSTRAP,
    Channel,
    EpochKey,
    _check_address,
)
from meshnode.core.identity import Identity
from meshnode.errors import AuthenticationError, InvalidInvite, InviteExpired

VERSION: Final = 2
REDEEM_LABEL: Final = b"meshnode/v1/invite-redeem"
MAX_CODE_CHARS: Final = 16384
MAX_BODY: Final = 8192
MAX_NAME_BYTES: Final = 256
MAX_GRANT: Final = 8 * 1024 * 1024
MAX_GRANT_KEYS: Final = 4096
MAX_GRANT_OPS: Final = 4096
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
    grant: Grant | None
    """Offline codes only: the grant they carry."""

    @property
    def token(self) -> bytes:
        """The token's public key, as the invite-issued operation names it."""
        return crypto.signing_keypair(self.token_seed)[0]

    @property
    def offline(self) -> bool:
        return self.grant is not None


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
    """A signed code of version 2 (``grant`` makes it an offline code).

    Raises:
        ValueError: a value the reader would refuse.
    """
    if expires_at <= now:
        raise ValueError("an invite's expiry must be after its creation")
    checked = [_check_address(a) for a in addresses]
    if len(checked) > MAX_BOOTSTRAP:
        raise ValueError(f"an invite carries at most {MAX_BOOTSTRAP} addresses")
    body = codec.pack(
        [
            VERSION,
            OFFLINE if grant is not None else ONLINE,
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
    if len(body) > (MAX_GRANT if grant is not None else MAX_BODY):
        raise ValueError("the invite is too large")
    return textcode.encode(INVITE_PREFIX, body + inviter.sign(INVITE_SIGN_LABEL + body))


def parse_code(code: str, *, now: int) -> InviteCode:
    """Read and verify a code, raising InvalidInvite (or InviteExpired)."""
    data = _code_bytes(code)
    if len(data) <= crypto.SIGNATURE_SIZE:
        raise InvalidInvite("not a valid invite code: too short")
    body, sig = data[: -crypto.SIGNATURE_SIZE], data[-crypto.SIGNATURE_SIZE :]
    try:
        doc = codec.unpack_canonical(
            body, max_size=MAX_GRANT, max_str=MAX_ADDRESS_CHARS, max_bin=MAX_GRANT, max_array=16
        )
    except codec.DecodeError:
        raise InvalidInvite("not a valid invite code: damaged contents") from None
    if isinstance(doc, list) and doc and doc[0] == 1 and type(doc[0]) is int:
        raise InvalidInvite(
            "this code was made by meshnode 0.1.0 and carries the channel's secret: "
            "ask the inviting group for a new code"
        )
    if not (isinstance(doc, list) and len(doc) == 10):
        raise InvalidInvite("not a valid invite code: unexpected contents")
    version, mode, name, channel_id, inviter, addresses, seed, created, expires, grant = doc
    if type(version) is not int or version != VERSION:
        raise InvalidInvite(f"invite version {version!r} is not supported by this meshnode")
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
        and created >= 0
        and type(expires) is int
        and expires > created
        and (grant is None) == (mode == ONLINE)
        and (grant is None or isinstance(grant, bytes))
    ):
        raise InvalidInvite("not a valid invite code: unexpected contents")
    try:
        checked = tuple(_check_address(a) for a in addresses)
    except ValueError:
        raise InvalidInvite("not a valid invite code: unexpected contents") from None
    try:
        crypto.verify(inviter, INVITE_SIGN_LABEL + body, sig)
    except AuthenticationError:
        raise InvalidInvite("invite signature does not verify: it was altered") from None
    if now >= expires:
        raise InviteExpired("this invite has expired: ask the inviting group for a new one")
    decoded = None if grant is None else Grant.decode(grant)
    if decoded is not None and decoded.channel.id != channel_id:
        raise InvalidInvite("not a valid invite code: unexpected contents")
    return InviteCode(
        channel_name=name,
        channel_id=channel_id,
        inviter=inviter,
        addresses=checked,
        token_seed=seed,
        created_at=created,
        expires_at=expires,
        grant=decoded,
    )


def _code_bytes(code: str) -> bytes:
    # Shared with the first format (``Channel.parse_invite``): where a code starts and
    # ends inside a link or a sentence, and its checksum.
    text = code.strip().lower() if isinstance(code, str) else ""
    start = text.find(INVITE_PREFIX)
    run = _CODE_RUN.match(text, start) if start >= 0 else None
    text = run.group() if run else text
    try:
        return textcode.decode(INVITE_PREFIX, text, max_chars=MAX_CODE_CHARS)
    except textcode.TextCodeError as exc:
        raise InvalidInvite(f"not a valid invite code: {exc}") from None


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

