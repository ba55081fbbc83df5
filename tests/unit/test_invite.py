"""Invite codes of version 2: round trips at the limits, refusals, and the redemption proof."""

from __future__ import annotations

import pytest

from meshnode.core import codec, crypto, textcode
from meshnode.core.channel import INVITE_PREFIX, INVITE_SIGN_LABEL, MAX_ADDRESS_SIZE, Channel
from meshnode.core.identity import Identity
from meshnode.core.invite import (
    MAX_BODY,
    Grant,
    check_redeem_proof,
    make_code,
    parse_code,
    redeem_proof,
)
from meshnode.errors import InvalidInvite, InviteExpired

NOW = 1_800_000_000
INVITER = Identity.from_seed(bytes(range(32)), "Local 12")
CHANNEL = Channel.from_secret("strike-support", b"\x42" * 32)
SEED = b"\x07" * 32


def code(**change: object) -> str:
    args: dict[str, object] = {
        "channel": CHANNEL,
        "token_seed": SEED,
        "addresses": ["127.0.0.1:7447"],
        "now": NOW,
        "expires_at": NOW + 3600,
        **change,
    }
    return make_code(INVITER, **args)  # type: ignore[arg-type]


def test_round_trip_and_what_it_carries() -> None:
    got = parse_code(code(), now=NOW)
    assert (got.channel_id, got.channel_name, got.inviter) == (
        CHANNEL.id, CHANNEL.name, INVITER.public_key
    )
    assert got.addresses == ("127.0.0.1:7447",)
    assert got.token == crypto.signing_keypair(SEED)[0]
    # No channel secret travels: neither the founding secret nor an epoch key
    raw = textcode.decode(INVITE_PREFIX, code(), max_size=MAX_BODY + 64)
    assert CHANNEL.current_key.secret not in raw
    assert CHANNEL.current_key.key not in raw


def test_the_largest_code_reads_back_inside_a_sentence() -> None:
    name = "\U0001f4e3" * 64  # 64 code points, 256 bytes
    big = Channel.from_secret(name, b"\x01" * 32)
    address = "a" * (MAX_ADDRESS_SIZE - 5) + ":7447"
    text = code(channel=big, addresses=[address] * 8, now=2**64 - 2, expires_at=2**64 - 1)
    raw = textcode.decode(INVITE_PREFIX, text, max_size=MAX_BODY + 64)
    assert len(raw) - crypto.SIGNATURE_SIZE == MAX_BODY
    assert parse_code(f"Join us: {text}.", now=2**64 - 2).channel_name == name


def test_the_writer_refuses_what_readers_refuse() -> None:
    with pytest.raises(ValueError, match="address"):
        code(addresses=["0.0.0.0:7447"])
    with pytest.raises(ValueError, match="at most 8"):
        code(addresses=["127.0.0.1:1"] * 9)
    with pytest.raises(ValueError, match="expiry"):
        code(expires_at=NOW)


def test_refusals() -> None:
    with pytest.raises(InviteExpired):
        parse_code(code(), now=NOW + 3600)
    good = textcode.decode(INVITE_PREFIX, code(), max_size=MAX_BODY + 64)
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(InvalidInvite, match="altered"):
        parse_code(textcode.encode(INVITE_PREFIX, tampered), now=NOW)
    old = Channel.from_secret("old", b"\x05" * 32).make_invite(INVITER, now=NOW)
    with pytest.raises(InvalidInvite, match=r"0\.1\.0.*new code"):
        parse_code(old, now=NOW)
    body = codec.unpack(good[: -crypto.SIGNATURE_SIZE])
    assert isinstance(body, list)
    body[1] = 1  # offline, without a grant
    packed = codec.pack(body)
    forged = textcode.encode(INVITE_PREFIX, packed + INVITER.sign(INVITE_SIGN_LABEL + packed))
    with pytest.raises(InvalidInvite, match="unexpected"):
        parse_code(forged, now=NOW)


def test_the_proof_binds_the_session_and_the_invitee() -> None:
    token = crypto.signing_keypair(SEED)[0]
    me, other = b"\x01" * 32, b"\x02" * 32
    proof = redeem_proof(SEED, b"\xaa" * 32, me)
    assert check_redeem_proof(token, proof, b"\xaa" * 32, me)
    assert not check_redeem_proof(token, proof, b"\xbb" * 32, me)
    assert not check_redeem_proof(token, proof, b"\xaa" * 32, other)


def test_grants_round_trip_and_refuse_damage() -> None:
    grant = Grant(channel=CHANNEL, root=b"\x03" * 32, ops=(b"op",))
    again = Grant.decode(grant.encode())
    assert again.channel == CHANNEL
    assert (again.root, again.ops) == (grant.root, grant.ops)
    with pytest.raises(InvalidInvite):
        Grant.decode(grant.encode()[:-1])


def test_an_offline_code_carries_its_grant_and_nothing_too_large() -> None:
    grant = Grant(channel=CHANNEL, root=b"\x03" * 32, ops=(b"op",))
    got = parse_code(code(grant=grant), now=NOW)
    assert got.grant is not None
    assert got.grant.channel == CHANNEL
    assert parse_code(code(), now=NOW).grant is None
    huge = Grant(channel=CHANNEL, root=b"\x03" * 32, ops=(b"x" * 40_000,))
    with pytest.raises(ValueError, match="too large for an offline code"):
        code(grant=huge)
