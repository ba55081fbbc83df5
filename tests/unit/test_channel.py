"""Channels: derived keys and tags, invites, epochs, rekeying and key updates."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import meshnode
from meshnode.core import codec, crypto, textcode
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import (
    DAY,
    EPOCH_KEY_LABEL,
    ID_LABEL,
    INVITE_PREFIX,
    INVITE_SIGN_LABEL,
    MAX_ADDRESS_SIZE,
    MAX_BOOTSTRAP,
    MAX_EPOCH,
    MAX_INVITE_BODY,
    MAX_INVITE_TIME,
    RENDEZVOUS_LABEL,
    Channel,
    EpochKey,
    day_of,
)
from meshnode.core.identity import MAX_NAME_CHARS, Identity
from meshnode.core.providers import installed
from meshnode.errors import InvalidInvite, InviteExpired, MeshError, WrongEpoch
from tests.conftest import StoppedClock

MakeRng = Callable[[str], crypto.Rng]
NOW = 1_760_000_000
SECRET = bytes(range(32))


def _channel(name: str = "strike-support", secret: bytes = SECRET) -> Channel:
    return Channel.from_secret(name, secret)


# --- derivations ---------------------------------------------------------------------------


def test_derivations_follow_the_spec() -> None:
    ch = _channel()
    day = day_of(NOW)
    assert ch.id == crypto.derive(SECRET, ID_LABEL)
    assert ch.epoch_key() == crypto.derive(SECRET, EPOCH_KEY_LABEL)
    day_label = RENDEZVOUS_LABEL + day.to_bytes(8, "big")
    assert ch.rendezvous_tag(day) == crypto.derive(SECRET, day_label)


def test_derivations_are_deterministic_and_distinct_per_purpose() -> None:
    one, two = _channel(), _channel("another name", SECRET)
    day = day_of(NOW)
    assert one.id == two.id  # the name is a label, the secret is the channel
    assert one.epoch_key() == two.epoch_key()
    assert one.rendezvous_tag(day) == two.rendezvous_tag(day)
    values = {SECRET, one.id, one.epoch_key(), one.rendezvous_tag(day)}
    assert len(values) == 4
    assert all(len(v) == 32 for v in values)
    other = _channel(secret=b"\x01" * 32)
    assert other.id != one.id
    assert other.epoch_key() != one.epoch_key()


def test_rendezvous_tag_changes_every_day_and_every_epoch(make_rng: MakeRng) -> None:
    ch = _channel()
    day = day_of(NOW)
    assert day_of(day * DAY) == day_of(day * DAY + DAY - 1) == day
    tags = {ch.rendezvous_tag(d) for d in range(day - 30, day + 30)}
    assert len(tags) == 60
    rekeyed = ch.next_epoch(make_rng("rekey"))
    assert rekeyed.rendezvous_tag(day) != ch.rendezvous_tag(day)
    assert rekeyed.rendezvous_tag(day, epoch=0) == ch.rendezvous_tag(day)
    assert rekeyed.rendezvous_tag(day) == rekeyed.rendezvous_tag(day, epoch=1)


def test_unknown_epochs_raise_wrong_epoch() -> None:
    ch = _channel()
    with pytest.raises(WrongEpoch):
        ch.epoch_key(1)
    with pytest.raises(WrongEpoch):
        ch.rendezvous_tag(1, epoch=3)


@pytest.mark.parametrize(
    ("secret", "epochs"),
    [
        (b"\x00" * 31, {}),
        (SECRET, {0: b"\x01" * 32}),
        (SECRET, {1: b"\x01" * 31}),
        (SECRET, {-1: b"\x01" * 32}),
        (SECRET, {MAX_EPOCH + 1: b"\x01" * 32}),
    ],
)
def test_channel_construction_is_checked(secret: bytes, epochs: dict[int, bytes]) -> None:
    with pytest.raises(ValueError, match=r"secret|epoch"):
        Channel.from_epochs("x", secret, epochs)


def test_channel_names_are_normalized_and_refused() -> None:
    assert _channel("  Cafe\u0301 ").name == "Café"
    for bad in ("", "x" * 65, "a\nb"):
        with pytest.raises(ValueError, match="name"):
            _channel(bad)


def test_secrets_stay_out_of_repr() -> None:
    assert SECRET.hex() not in repr(_channel())
    assert repr(SECRET) not in repr(_channel())


# --- invites -------------------------------------------------------------------------------


def test_invite_round_trip(alice: Identity) -> None:
    ch = _channel()
    code = ch.make_invite(
        alice, now=NOW, expires_at=NOW + 3600, bootstrap=["127.0.0.1:4000", "[::1]:4001"]
    )
    assert code.startswith(INVITE_PREFIX)
    assert set(code[len(INVITE_PREFIX) :]) <= set(textcode.ALPHABET)
    invite = Channel.parse_invite(code, now=NOW + 10)
    assert invite.channel == ch
    assert invite.channel.id == ch.id
    assert invite.channel.name == "strike-support"
    assert invite.inviter == alice.public_key
    assert invite.bootstrap == ("127.0.0.1:4000", "[::1]:4001")
    assert invite.created_at == NOW
    assert invite.expires_at == NOW + 3600


def test_invite_without_expiry_or_bootstrap(alice: Identity) -> None:
    invite = Channel.parse_invite(_channel().make_invite(alice, now=NOW), now=NOW + 10**8)
    assert invite.expires_at is None
    assert invite.bootstrap == ()


def test_expired_invite(alice: Identity) -> None:
    code = _channel().make_invite(alice, now=NOW, expires_at=NOW + 60)
    Channel.parse_invite(code, now=NOW + 59)
    for later in (NOW + 60, NOW + 10**6):
        with pytest.raises(InviteExpired, match="expired"):
            Channel.parse_invite(code, now=later)
    assert issubclass(InviteExpired, InvalidInvite)


def test_invite_arguments_are_checked(alice: Identity) -> None:
    ch = _channel()
    with pytest.raises(ValueError, match="expiry"):
        ch.make_invite(alice, now=NOW, expires_at=NOW)
    too_many = [f"10.0.0.{i}:1" for i in range(MAX_BOOTSTRAP + 1)]
    with pytest.raises(ValueError, match="bootstrap"):
        ch.make_invite(alice, now=NOW, bootstrap=too_many)
    for bad in ("", "host", "host:", ":80", "host:0", "host:65536", "host:http", "h:" + "1" * 300):
        with pytest.raises(ValueError, match="address"):
            ch.make_invite(alice, now=NOW, bootstrap=[bad])


def _longest_address(i: int) -> str:
    """A distinct DNS name of 63-byte labels and a 5-digit port: MAX_ADDRESS_SIZE bytes."""
    host = f"{i}." + ".".join(["a" * 63] * 3) + "." + "a" * 62
    return f"{host}:65535"


def test_the_largest_invite_round_trips(alice: Identity) -> None:
    """Every field at its limit: the body is exactly the reader's cap (channel.md limits)."""
    name = "\U0001f4e3" * MAX_NAME_CHARS  # 4 bytes each in UTF-8
    ch = Channel.from_epochs(name, SECRET, {MAX_EPOCH: b"\x01" * 32})
    bootstrap = [_longest_address(i) for i in range(MAX_BOOTSTRAP)]
    assert {len(a.encode()) for a in bootstrap} == {MAX_ADDRESS_SIZE}
    now = MAX_INVITE_TIME - 1
    code = ch.make_invite(alice, now=now, expires_at=MAX_INVITE_TIME, bootstrap=bootstrap)
    doc, _sig = _invite_parts(code)
    assert len(codec.pack(doc)) == MAX_INVITE_BODY
    assert len(code) == 4124  # the longest text code, as channel.md says
    invite = Channel.parse_invite(code, now=now)
    assert invite.channel.name == name
    assert invite.channel.epoch == MAX_EPOCH
    assert invite.bootstrap == tuple(bootstrap)
    assert invite.expires_at == MAX_INVITE_TIME
    grouped = INVITE_PREFIX + "\n".join(textcode.grouped(code[4:], 76).split("-"))
    assert Channel.parse_invite(f"Join us:\n{grouped}\n\nSee you.", now=now).channel == ch


def test_one_byte_over_any_invite_limit_is_refused_by_the_writer(alice: Identity) -> None:
    ch = _channel()
    too_long = "a" + _longest_address(0)
    assert len(too_long.encode()) == MAX_ADDRESS_SIZE + 1
    with pytest.raises(ValueError, match=f"an address is 3 to {MAX_ADDRESS_SIZE} bytes, not 263"):
        ch.make_invite(alice, now=NOW, bootstrap=[too_long])
    with pytest.raises(ValueError, match=f"at most {MAX_BOOTSTRAP} bootstrap addresses"):
        ch.make_invite(alice, now=NOW, bootstrap=["a:1"] * (MAX_BOOTSTRAP + 1))
    with pytest.raises(ValueError, match=f"1 to {MAX_NAME_CHARS} characters"):
        _channel("\U0001f4e3" * (MAX_NAME_CHARS + 1))
    with pytest.raises(ValueError, match="64 bits"):
        ch.make_invite(alice, now=MAX_INVITE_TIME - 1, expires_at=MAX_INVITE_TIME + 1)
    for now in (-1, MAX_INVITE_TIME + 1):
        with pytest.raises(ValueError, match="64 bits"):
            ch.make_invite(alice, now=now)


def test_one_byte_over_is_refused_by_the_reader(alice: Identity) -> None:
    doc, _sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    doc[5] = ["a" + _longest_address(0)]
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(_signed_invite(codec.pack(doc), alice), now=NOW)


@pytest.mark.parametrize("name", [" strike", "strike\n", "Cafe\u0301", "a\u200bb", "x" * 65])
def test_a_name_not_in_normal_form_is_refused_even_if_signed(alice: Identity, name: str) -> None:
    """The writer always signs the normal form, so any other spelling was not ours."""
    doc, _sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    doc[1] = name
    with pytest.raises(InvalidInvite, match="unexpected contents"):
        Channel.parse_invite(_signed_invite(codec.pack(doc), alice), now=NOW)


def test_invite_after_a_rekey_carries_epoch_zero_and_the_current_one(
    alice: Identity, make_rng: MakeRng
) -> None:
    rng = make_rng("rekey")
    ch = _channel().next_epoch(rng).next_epoch(rng)
    invite = Channel.parse_invite(ch.make_invite(alice, now=NOW), now=NOW)
    assert invite.channel.epoch == 2
    assert set(invite.channel.epochs) == {0, 2}
    assert invite.channel.epoch_key() == ch.epoch_key()
    assert invite.channel.epoch_key(0) == ch.epoch_key(0)
    with pytest.raises(WrongEpoch):
        invite.channel.epoch_key(1)


@pytest.mark.parametrize(
    "template",
    [
        "{code}",
        "{upper}",
        "  {code}\n",
        "https://meshnode.example/join#{code}",
        "https://meshnode.example/join?invite={code}&via=chat",
        "Join us on meshnode: {code}",
        "Join us on meshnode: {code}. See you Friday!",
        "(invite: {code})",
        "<{code}>",
        "'{code}'",
        "«{code}»",
        "{grouped}",
        "{spaced}",
        "{wrapped}",
        "Join: {wrapped}\n\nSee you Friday.",
        "Join: {spaced} see you friday",
        '"{code}",',
        "({grouped}).",
        "[{code}](https://meshnode.example/join#{code})",
    ],
)
def test_invite_pasted_in_a_link_or_a_sentence(alice: Identity, template: str) -> None:
    code = _channel().make_invite(alice, now=NOW)
    body = code[len(INVITE_PREFIX) :]
    text = template.format(
        code=code,
        upper=code.upper(),
        grouped=INVITE_PREFIX + textcode.grouped(body),
        spaced=INVITE_PREFIX + " " + textcode.grouped(body, 5, " "),
        wrapped=INVITE_PREFIX + textcode.grouped(body, 72, "\r\n"),  # a mail client's lines
    )
    assert Channel.parse_invite(text, now=NOW).channel.id == _channel().id


def test_every_single_character_change_is_refused(alice: Identity) -> None:
    code = _channel().make_invite(alice, now=NOW, bootstrap=["127.0.0.1:4000"])
    for pos in range(len(code)):
        for ch in ("0", "z", "m", "7"):
            changed = code[:pos] + ch + code[pos + 1 :]
            if changed == code:
                continue
            with pytest.raises(InvalidInvite):
                Channel.parse_invite(changed, now=NOW)


def test_truncated_invites_are_refused(alice: Identity) -> None:
    code = _channel().make_invite(alice, now=NOW)
    for end in range(0, len(code), 7):
        with pytest.raises(InvalidInvite):
            Channel.parse_invite(code[:end], now=NOW)


@pytest.mark.parametrize("text", ["", "hello", "mni1", "mni1 0000", "mk1abc", 42, None, b"mni1"])
def test_garbage_is_not_an_invite(text: object) -> None:
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(text, now=NOW)  # type: ignore[arg-type]


def test_a_key_text_is_not_an_invite(alice: Identity) -> None:
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(alice.key_text, now=NOW)


def _invite_parts(code: str) -> tuple[list[object], bytes]:
    data = textcode.decode(INVITE_PREFIX, code)
    body, sig = data[:-64], data[-64:]
    doc = codec.unpack(body)
    assert isinstance(doc, list)
    return doc, sig


def _signed_invite(body: bytes, signer: Identity) -> str:
    return textcode.encode(INVITE_PREFIX, body + signer.sign(INVITE_SIGN_LABEL + body))


def test_altered_invite_with_a_fixed_checksum_is_refused(alice: Identity) -> None:
    """The checksum catches typos; the signature catches deliberate changes."""
    doc, sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    doc[5] = ["203.0.113.66:4000"]  # an attacker's bootstrap node
    code = textcode.encode(INVITE_PREFIX, codec.pack(doc) + sig)
    with pytest.raises(InvalidInvite, match="signature"):
        Channel.parse_invite(code, now=NOW)


def test_invite_re_signed_by_another_group_is_refused(alice: Identity, carol: Identity) -> None:
    doc, _sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    doc[5] = ["203.0.113.66:4000"]
    code = _signed_invite(codec.pack(doc), carol)  # still names alice as the inviter
    with pytest.raises(InvalidInvite, match="signature"):
        Channel.parse_invite(code, now=NOW)


def test_signature_is_domain_separated(alice: Identity) -> None:
    doc, _sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    body = codec.pack(doc)
    code = textcode.encode(INVITE_PREFIX, body + alice.sign(body))  # no label
    with pytest.raises(InvalidInvite, match="signature"):
        Channel.parse_invite(code, now=NOW)


def test_non_canonical_invite_is_refused_even_if_signed(alice: Identity) -> None:
    doc, _sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    canonical = codec.pack(doc)
    assert canonical[0] == 0x99  # fixarray of 9
    longer = b"\xdc\x00\x09" + canonical[1:]  # the same array with an array16 header
    assert codec.unpack(longer) == doc
    with pytest.raises(InvalidInvite, match="damaged"):
        Channel.parse_invite(_signed_invite(longer, alice), now=NOW)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 2),  # version
        (0, True),
        (1, b"name"),
        (1, ""),
        (2, b"\x01" * 31),
        (3, -1),
        (3, MAX_EPOCH + 1),
        (4, b"\x07" * 32),  # epoch 0 whose secret is not the founding secret
        (5, ["not an address"]),
        (5, [f"10.0.0.{i}:1" for i in range(MAX_BOOTSTRAP + 1)]),
        (5, "127.0.0.1:4000"),
        (6, -5),
        (7, NOW),  # expiry not after creation
        (7, "never"),
        (8, b"\x01" * 31),
    ],
)
def test_out_of_range_fields_are_refused_even_if_signed(
    alice: Identity, index: int, value: object
) -> None:
    doc, _sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    doc[index] = value
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(_signed_invite(codec.pack(doc), alice), now=NOW)


def test_wrong_field_count_is_refused(alice: Identity) -> None:
    doc, _sig = _invite_parts(_channel().make_invite(alice, now=NOW))
    for fields in (doc[:-1], [*doc, None], {"a": 1}):
        with pytest.raises(InvalidInvite):
            Channel.parse_invite(_signed_invite(codec.pack(fields), alice), now=NOW)


# --- rekeying and key updates --------------------------------------------------------------


def test_next_epoch_takes_its_secret_from_randomness_only(make_rng: MakeRng) -> None:
    ch = _channel()
    drawn: list[bytes] = []
    rng = make_rng("rekey")

    def recording_rng(n: int) -> bytes:
        drawn.append(rng(n))
        return drawn[-1]

    one = ch.next_epoch(recording_rng)
    assert one.epoch == 1
    assert one.epochs[1] == drawn[0]
    assert one.epochs[0] == SECRET
    assert one.id == ch.id
    assert ch.epoch == 0  # values are immutable: the old channel is unchanged


def test_rekeyed_secret_is_not_derivable_from_old_ones() -> None:
    ch = meshnode.Channel.create("strike-support")
    rekeyed = ch.rekey().rekey()
    assert type(rekeyed) is meshnode.Channel
    assert rekeyed.epoch == 2
    old = list(ch.epochs.values())
    labels = [ID_LABEL, EPOCH_KEY_LABEL, RENDEZVOUS_LABEL, INVITE_SIGN_LABEL, b""]
    derivable = {crypto.derive(s, label) for s in old for label in labels} | set(old)
    derivable |= {crypto.blake2b_256(s) for s in old}
    for epoch in (1, 2):
        assert rekeyed.epochs[epoch] not in derivable
        assert rekeyed.epoch_key(epoch) not in {crypto.derive(s, EPOCH_KEY_LABEL) for s in old}
    assert rekeyed.epochs[1] != rekeyed.epochs[2]


def test_old_epochs_stay_readable_and_removed_members_cannot_read_new_ones(
    alice: Identity, rng: crypto.Rng
) -> None:
    ch = _channel()
    before = Bulletin.seal(alice, ch, b"before", seq=1, prev=None, now=NOW, rng=rng)
    rekeyed = ch.next_epoch(rng)
    after = Bulletin.seal(alice, rekeyed, b"after", seq=2, prev=before.id, now=NOW, rng=rng)
    assert after.epoch == 1
    assert rekeyed.epoch_key() != ch.epoch_key()
    assert Bulletin.from_bytes(before.raw).open(rekeyed).text == "before"
    assert Bulletin.from_bytes(after.raw).open(rekeyed).text == "after"
    with pytest.raises(WrongEpoch):
        Bulletin.from_bytes(after.raw).open(ch)  # what a removed member holds


def test_every_epoch_number_used() -> None:
    ch = Channel.from_epochs("x", SECRET, {MAX_EPOCH: b"\x01" * 32})
    with pytest.raises(MeshError, match="epoch"):
        ch.next_epoch(lambda n: b"\x02" * n)


# --- the conveniences, on the installed clock and random source ---------------------------


def test_invite_round_trip_and_expiry_on_the_installed_clock(
    alice: Identity, make_rng: MakeRng
) -> None:
    clock = StoppedClock(NOW, make_rng("convenience"))
    with installed(clock):
        ch = Channel.create("strike-support")
        assert ch == Channel.from_secret("strike-support", make_rng("convenience")(32))
        code = ch.invite(by=alice, expires=3600, bootstrap=["127.0.0.1:4000"])
        assert code == ch.make_invite(
            alice, now=NOW, expires_at=NOW + 3600, bootstrap=["127.0.0.1:4000"]
        )
        joined = Channel.from_invite(code)
        assert type(joined) is meshnode.Channel
        assert joined.id == ch.id
        assert joined.epoch_key() == ch.epoch_key()
        clock.at = NOW + 3600
        with pytest.raises(InviteExpired):
            Channel.from_invite(code)
        assert Channel.from_invite(ch.invite(by=alice)).id == ch.id


def test_siblings_share_a_number_and_readers_try_each() -> None:
    base = _channel()
    one = base.with_key(EpochKey(1, b"\x01" * 32), current=True)
    two = base.with_key(EpochKey(1, b"\x02" * 32), current=True)
    both = one.with_key(two.current_key)
    assert both.current == one.current
    assert len(both.epoch_keys(1)) == 2
    author = Identity.from_seed(bytes(32), "Local 12")
    for sealer in (one, two):
        b = Bulletin.seal(author, sealer, b"hi", seq=1, prev=None, now=NOW,
                          rng=lambda n: b"\x05" * n)
        assert b.epoch == 1
        assert b.open(both).data == b"hi"
    with pytest.raises(WrongEpoch):
        Bulletin.seal(author, one.next_epoch(lambda n: b"\x07" * n), b"x", seq=1, prev=None,
                      now=NOW, rng=lambda n: b"\x05" * n).open(both)


def test_epoch_ids_name_secrets_without_revealing_them() -> None:
    key = EpochKey(3, SECRET)
    assert key.id == crypto.derive(SECRET, b"meshnode/v1/channel/epoch-id")
    assert key.id not in {SECRET, key.key}
    assert Channel.from_secret("x", SECRET).founding_secret == SECRET
    joined = Channel(name="x", id=_channel().id, keys=(key,), current=key.id)
    assert joined.founding_secret is None
    assert joined.epoch == 3
