"""Bulletins: the five kinds, who can open what, and every rule of the envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import meshnode
from meshnode.core import codec, crypto
from meshnode.core.bulletin import (
    DIRECT_STREAM,
    MAX_RECIPIENTS,
    MAX_SEQ,
    MAX_SIZE,
    MAX_TIME,
    PUBLIC_STREAM,
    SIGN_LABEL,
    Bulletin,
    Kind,
)
from meshnode.core.channel import KEY_UPDATE_TYPE, Channel
from meshnode.core.identity import Identity
from meshnode.core.providers import installed
from meshnode.errors import (
    InvalidBulletin,
    MeshError,
    NotARecipient,
    WrongChannel,
    WrongEpoch,
)
from tests.conftest import StoppedClock

if TYPE_CHECKING:
    from collections.abc import Callable

NOW = 1_760_000_000
Doc = list[object]


def _seal(
    author: Identity,
    audience: Channel | list[bytes] | None,
    text: str,
    rng: crypto.Rng,
    *,
    seq: int = 1,
    prev: bytes | None = None,
    **kw: object,
) -> Bulletin:
    return Bulletin.seal(
        author,
        audience,
        text.encode(),
        seq=seq,
        prev=prev,
        now=NOW,
        rng=rng,
        **kw,  # type: ignore[arg-type]
    )


def _doc(b: Bulletin) -> Doc:
    doc = codec.unpack(b.raw[:-64])
    assert isinstance(doc, list)
    return doc


def _resign(author: Identity, body: bytes) -> bytes:
    return body + author.sign(SIGN_LABEL + body)


def _altered(author: Identity, b: Bulletin, change: Callable[[Doc], None]) -> bytes:
    """``b`` with its decoded fields changed, re-encoded and correctly signed by ``author``."""
    doc = _doc(b)
    change(doc)
    return _resign(author, codec.pack(doc))


def _direct_parts(b: Bulletin) -> tuple[bytes, list[bytes], bytes]:
    """The ephemeral key, the key slots and the boxed content of a direct payload."""
    assert isinstance(b.payload, list)
    eph, slots, boxed = b.payload
    return eph, slots, boxed


def _set(index: int, value: object) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        doc[index] = value

    return change


# --- the five kinds ------------------------------------------------------------------------


def test_public(alice: Identity, rng: crypto.Rng) -> None:
    b = _seal(alice, None, "Solidarity", rng)
    got = Bulletin.from_bytes(b.to_bytes())
    assert got.kind is Kind.PUBLIC
    assert got.id == b.id == crypto.blake2b_256(b.raw)
    assert (got.author, got.seq, got.prev) == (alice.public_key, 1, None)
    assert (got.created_at, got.expires_at) == (NOW, None)
    assert (got.channel_id, got.epoch, got.reply_to, got.endorses) == (None, None, None, None)
    assert got.stream == PUBLIC_STREAM
    assert got.open().text == "Solidarity"
    assert got.open().content_type == "text/plain"
    assert b"Solidarity" in b.raw  # public payloads are signed plaintext


def test_channel(alice: Identity, channel: Channel, rng: crypto.Rng) -> None:
    b = _seal(alice, channel, "Strike vote Friday 6pm", rng)
    got = Bulletin.from_bytes(b.raw)
    assert got.kind is Kind.CHANNEL
    assert (got.channel_id, got.epoch) == (channel.id, 0)
    assert got.stream == channel.id
    assert got.open(channel).text == "Strike vote Friday 6pm"
    assert b"Strike" not in b.raw


def test_direct(alice: Identity, bob: Identity, carol: Identity, rng: crypto.Rng) -> None:
    b = _seal(alice, [bob.public_key], "Can you bring 10 people?", rng)
    got = Bulletin.from_bytes(b.raw)
    assert got.kind is Kind.DIRECT
    assert got.stream == DIRECT_STREAM
    assert got.channel_id is None
    assert got.open(bob).text == "Can you bring 10 people?"
    assert got.open(alice).text == "Can you bring 10 people?"  # the sender reads its own
    with pytest.raises(NotARecipient):
        got.open(carol)


def test_public_and_channel_endorsements(
    alice: Identity, bob: Identity, channel: Channel, rng: crypto.Rng
) -> None:
    endorsed = _seal(bob, None, "Rent strike starts Monday", rng)
    public = _seal(
        alice, None, "We stand behind this", rng, kind=Kind.ENDORSEMENT, endorses=endorsed.id
    )
    got = Bulletin.from_bytes(public.raw)
    assert got.kind is Kind.ENDORSEMENT
    assert got.endorses == endorsed.id
    assert got.stream == PUBLIC_STREAM
    assert got.open().text == "We stand behind this"

    inside = _seal(alice, channel, "+1", rng, kind=Kind.ENDORSEMENT, endorses=endorsed.id)
    got = Bulletin.from_bytes(inside.raw)
    assert got.kind is Kind.ENDORSEMENT
    assert got.channel_id == channel.id
    assert got.stream == channel.id
    assert got.open(channel).text == "+1"


def test_key_update(alice: Identity, bob: Identity, rng: crypto.Rng) -> None:
    b = Bulletin.seal(
        alice,
        [bob.public_key],
        b"a new epoch's secret",
        seq=1,
        prev=None,
        now=NOW,
        rng=rng,
        content_type=KEY_UPDATE_TYPE,
        kind=Kind.KEY_UPDATE,
    )
    got = Bulletin.from_bytes(b.raw)
    assert got.kind is Kind.KEY_UPDATE
    assert got.stream == DIRECT_STREAM
    content = got.open(bob)
    assert content.content_type == KEY_UPDATE_TYPE
    assert content.data == b"a new epoch's secret"


def test_kind_and_audience_must_agree(
    alice: Identity, bob: Identity, channel: Channel, rng: crypto.Rng
) -> None:
    other = b"\x09" * 32
    cases: list[tuple[object, Kind, bytes | None]] = [
        (channel, Kind.PUBLIC, None),
        ([bob.public_key], Kind.PUBLIC, None),
        (None, Kind.CHANNEL, None),
        ([bob.public_key], Kind.CHANNEL, None),
        (None, Kind.DIRECT, None),
        (channel, Kind.DIRECT, None),
        (channel, Kind.KEY_UPDATE, None),
        (None, Kind.ENDORSEMENT, None),  # an endorsement names what it endorses
        ([bob.public_key], Kind.ENDORSEMENT, other),
        (None, Kind.PUBLIC, other),  # only an endorsement does
        (channel, Kind.CHANNEL, other),
    ]
    for audience, kind, endorses in cases:
        with pytest.raises(ValueError, match=r"endors|recipients|audience|channel"):
            _seal(alice, audience, "x", rng, kind=kind, endorses=endorses)  # type: ignore[arg-type]


# --- who can open what ---------------------------------------------------------------------


def test_wrong_channel(alice: Identity, channel: Channel, rng: crypto.Rng) -> None:
    b = Bulletin.from_bytes(_seal(alice, channel, "x", rng).raw)
    other = Channel.from_secret(channel.name, b"\x05" * 32)  # same name, another channel
    for key in (other, None, alice):
        with pytest.raises(WrongChannel):
            b.open(key)


def test_missing_epoch(alice: Identity, channel: Channel, rng: crypto.Rng) -> None:
    rekeyed = channel.next_epoch(rng)
    b = Bulletin.from_bytes(_seal(alice, rekeyed, "after the rekey", rng).raw)
    assert b.epoch == 1
    with pytest.raises(WrongEpoch, match="epoch 1"):
        b.open(channel)
    assert issubclass(WrongEpoch, WrongChannel)


def test_non_recipients(
    alice: Identity, bob: Identity, carol: Identity, channel: Channel, rng: crypto.Rng
) -> None:
    b = Bulletin.from_bytes(_seal(alice, [bob.public_key], "x", rng).raw)
    for key in (carol, channel, None):
        with pytest.raises(NotARecipient):
            b.open(key)


def test_direct_does_not_name_its_recipients(
    alice: Identity, bob: Identity, carol: Identity, rng: crypto.Rng
) -> None:
    b = _seal(alice, [bob.public_key, carol.public_key], "secret plan", rng)
    for who in (bob, carol):
        assert who.public_key not in b.raw
        assert who.x25519_public not in b.raw
    assert alice.x25519_public not in b.raw
    assert b"secret plan" not in b.raw
    eph, slots, _boxed = _direct_parts(b)
    assert len(slots) == 3  # bob, carol and the author, in anonymous slots
    assert eph not in (alice.x25519_public, bob.x25519_public, carol.x25519_public)


def test_sixteen_recipients_at_most(alice: Identity, rng: crypto.Rng) -> None:
    readers = [Identity.from_seed(bytes([i]) * 32, f"group {i}") for i in range(MAX_RECIPIENTS + 1)]
    keys = [r.public_key for r in readers]
    b = Bulletin.from_bytes(_seal(alice, keys[:MAX_RECIPIENTS], "to sixteen", rng).raw)
    assert len(_direct_parts(b)[1]) == MAX_RECIPIENTS + 1  # and the author's own slot
    for reader in readers[:MAX_RECIPIENTS]:
        assert b.open(reader).text == "to sixteen"
    assert b.open(alice).text == "to sixteen"
    with pytest.raises(NotARecipient):
        b.open(readers[MAX_RECIPIENTS])
    with pytest.raises(ValueError, match="1 to 16"):
        _seal(alice, keys, "to seventeen", rng)


def test_recipient_list_is_deduplicated_and_checked(
    alice: Identity, bob: Identity, rng: crypto.Rng
) -> None:
    b = _seal(alice, [bob.public_key, bob.public_key, alice.public_key], "x", rng)
    assert len(_direct_parts(b)[1]) == 2
    for bad in ([], [bob.public_key[:31]], [b"\x00" * 32], bob.public_key):
        with pytest.raises(ValueError, match=r"recipient|group key"):
            _seal(alice, bad, "x", rng)  # type: ignore[arg-type]


def test_altered_encrypted_content_fails_to_open(
    alice: Identity, bob: Identity, channel: Channel, rng: crypto.Rng
) -> None:
    """Even an author who re-signs cannot make tampered ciphertext open."""

    def flip_last(doc: Doc) -> None:
        payload = doc[10]
        if isinstance(payload, bytes):
            doc[10] = payload[:-1] + bytes([payload[-1] ^ 1])
        else:
            assert isinstance(payload, list)
            payload[2] = payload[2][:-1] + bytes([payload[2][-1] ^ 1])

    for audience, key in ((channel, channel), ([bob.public_key], bob)):
        raw = _altered(alice, _seal(alice, audience, "x", rng), flip_last)
        with pytest.raises(InvalidBulletin, match="decrypt"):
            Bulletin.from_bytes(raw).open(key)


def test_encrypted_content_is_bound_to_its_header(
    alice: Identity, bob: Identity, channel: Channel, rng: crypto.Rng
) -> None:
    """Ciphertext moved under another header (a later seq, say) does not open."""
    for audience, key in ((channel, channel), ([bob.public_key], bob)):
        first = _seal(alice, audience, "original", rng)
        second = _seal(alice, audience, "other", rng, seq=2, prev=first.id)
        moved = _doc(second)
        moved[10] = _doc(first)[10]
        with pytest.raises(InvalidBulletin, match="decrypt"):
            Bulletin.from_bytes(_resign(alice, codec.pack(moved))).open(key)


def test_a_slot_for_someone_else_does_not_open(
    alice: Identity, bob: Identity, carol: Identity, rng: crypto.Rng
) -> None:
    """Carol cannot read by swapping in the ephemeral key: slots bind it."""
    to_bob = _seal(alice, [bob.public_key], "x", rng)
    to_carol = _seal(alice, [carol.public_key], "y", rng)

    def take_eph(doc: Doc) -> None:
        payload = doc[10]
        assert isinstance(payload, list)
        payload[0] = _direct_parts(to_carol)[0]

    raw = _altered(alice, to_bob, take_eph)
    with pytest.raises(NotARecipient):
        Bulletin.from_bytes(raw).open(carol)


# --- header rules --------------------------------------------------------------------------


def test_chain_fields_round_trip(alice: Identity, channel: Channel, rng: crypto.Rng) -> None:
    first = _seal(alice, channel, "one", rng)
    second = _seal(alice, channel, "two", rng, seq=2, prev=first.id)
    got = Bulletin.from_bytes(second.raw)
    assert (got.seq, got.prev) == (2, first.id)
    big = _seal(alice, channel, "late", rng, seq=MAX_SEQ, prev=first.id)
    assert Bulletin.from_bytes(big.raw).seq == MAX_SEQ


@pytest.mark.parametrize(
    ("seq", "prev"),
    [
        (0, None),
        (-1, None),
        (1, b"\x01" * 32),  # the first of a stream has no predecessor
        (2, None),  # every later one names it
        (2, b"\x01" * 31),
        (MAX_SEQ + 1, b"\x01" * 32),
    ],
)
def test_seq_and_prev_rules(
    alice: Identity, channel: Channel, rng: crypto.Rng, seq: int, prev: bytes | None
) -> None:
    with pytest.raises((InvalidBulletin, ValueError)):
        _seal(alice, channel, "x", rng, seq=seq, prev=prev)
    good = _seal(alice, channel, "x", rng, seq=2, prev=b"\x01" * 32)

    def change(doc: Doc) -> None:
        doc[3], doc[4] = seq, prev

    with pytest.raises(InvalidBulletin, match="header"):
        Bulletin.from_bytes(_altered(alice, good, change))


def test_expiry_must_follow_creation(alice: Identity, rng: crypto.Rng) -> None:
    ok = _seal(alice, None, "x", rng, expires_at=NOW + 1)
    assert Bulletin.from_bytes(ok.raw).expires_at == NOW + 1
    for bad in (NOW, NOW - 1, 0, MAX_TIME):
        with pytest.raises(InvalidBulletin, match="header"):
            _seal(alice, None, "x", rng, expires_at=bad)
        with pytest.raises(InvalidBulletin, match="header"):
            Bulletin.from_bytes(_altered(alice, ok, _set(6, bad)))
    assert [ok.expired(t) for t in (NOW, NOW + 1, MAX_TIME)] == [False, True, True]
    assert not _seal(alice, None, "x", rng).expired(MAX_TIME)  # no expiry, never expired


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (2, b"\x01" * 31),  # author
        (2, "a" * 32),
        (3, True),  # seq
        (3, 1.0),
        (5, -1),  # created_at
        (5, MAX_TIME),
        (5, "2025-01-01"),
        (6, 1.5),  # expires_at
        (8, b"\x01" * 33),  # reply_to
        (8, 5),
        (9, b"\x01" * 32),  # endorses, on a public bulletin
    ],
)
def test_header_fields_out_of_type_or_range(
    alice: Identity, rng: crypto.Rng, index: int, value: object
) -> None:
    raw = _altered(alice, _seal(alice, None, "x", rng), _set(index, value))
    with pytest.raises(InvalidBulletin):
        Bulletin.from_bytes(raw)


def test_endorsement_requires_endorses(alice: Identity, rng: crypto.Rng) -> None:
    e = _seal(alice, None, "x", rng, kind=Kind.ENDORSEMENT, endorses=b"\x02" * 32)
    for endorses in (None, b"\x02" * 31):
        with pytest.raises(InvalidBulletin, match="header"):
            Bulletin.from_bytes(_altered(alice, e, _set(9, endorses)))
    with pytest.raises(ValueError, match="endorse"):
        _seal(alice, None, "x", rng, kind=Kind.ENDORSEMENT)


def test_replies(alice: Identity, bob: Identity, channel: Channel, rng: crypto.Rng) -> None:
    question = _seal(alice, channel, "Who brings banners?", rng)
    answer = _seal(bob, channel, "We do", rng, reply_to=question.id)
    got = Bulletin.from_bytes(answer.raw)
    assert got.reply_to == question.id
    assert got.open(channel).text == "We do"
    public_reply = _seal(bob, None, "Count us in", rng, reply_to=question.id)
    assert Bulletin.from_bytes(public_reply.raw).reply_to == question.id
    with pytest.raises(InvalidBulletin):
        _seal(bob, None, "x", rng, reply_to=b"\x01" * 16)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 2),  # version
        (0, 0),
        (0, True),
        (1, 5),  # kind
        (1, -1),
        (1, True),
        (1, int(Kind.CHANNEL)),  # a channel kind with no audience
        (7, [b"\x01" * 32, 0]),  # a public kind with one
    ],
)
def test_version_kind_and_audience(
    alice: Identity, rng: crypto.Rng, index: int, value: object
) -> None:
    raw = _altered(alice, _seal(alice, None, "x", rng), _set(index, value))
    with pytest.raises(InvalidBulletin):
        Bulletin.from_bytes(raw)


@pytest.mark.parametrize(
    "audience",
    [
        [b"\x01" * 32],
        [b"\x01" * 32, 0, 0],
        [b"\x01" * 31, 0],
        [b"\x01" * 32, -1],
        [b"\x01" * 32, 2**32],
        [b"\x01" * 32, True],
        b"\x01" * 32,
    ],
)
def test_malformed_audience(
    alice: Identity, channel: Channel, rng: crypto.Rng, audience: object
) -> None:
    raw = _altered(alice, _seal(alice, channel, "x", rng), _set(7, audience))
    with pytest.raises(InvalidBulletin):
        Bulletin.from_bytes(raw)


@pytest.mark.parametrize(
    "payload",
    [
        ["text/plain"],
        ["text/plain", b"x", b"y"],
        ["text/plain", "x"],  # data as str, not bin
        [b"text/plain", b"x"],
        ["", b"x"],
        ["t" * 65, b"x"],
        ["text/pl\u00e4in", b"x"],
        ["text/plain\n", b"x"],
        ["text/plain", b"\xff\xfe"],  # text that is not UTF-8
        ["Text/Plain", b"\xff\xfe"],  # MIME types ignore case: still text
        ["TEXT/html", b"\xc3"],
        b"x" * 64,
        None,
    ],
)
def test_malformed_public_payload(alice: Identity, rng: crypto.Rng, payload: object) -> None:
    raw = _altered(alice, _seal(alice, None, "x", rng), _set(10, payload))
    with pytest.raises(InvalidBulletin):
        Bulletin.from_bytes(raw)


def test_malformed_channel_and_direct_payloads(
    alice: Identity, bob: Identity, channel: Channel, rng: crypto.Rng
) -> None:
    in_channel = _seal(alice, channel, "x", rng)
    for payload in (b"\x00" * 39, ["text/plain", b"x"], None):
        with pytest.raises(InvalidBulletin, match="channel payload"):
            Bulletin.from_bytes(_altered(alice, in_channel, _set(10, payload)))
    direct = _seal(alice, [bob.public_key], "x", rng)
    eph, slots, boxed = _direct_parts(direct)
    payloads: list[object] = [
        [eph, slots],
        [eph[:31], slots, boxed],
        [eph, [], boxed],
        [eph, [slots[0][:47]], boxed],
        [eph, [slots[0]] * 18, boxed],
        [eph, slots, boxed[:39]],
        [eph, slots, "text"],
        b"\x00" * 100,
    ]
    for bad in payloads:
        with pytest.raises(InvalidBulletin):
            Bulletin.from_bytes(_altered(alice, direct, _set(10, bad)))


def test_binary_content(alice: Identity, channel: Channel, rng: crypto.Rng) -> None:
    data = bytes(range(256))
    b = Bulletin.seal(
        alice, channel, data, seq=1, prev=None, now=NOW, rng=rng, content_type="image/png"
    )
    content = Bulletin.from_bytes(b.raw).open(channel)
    assert (content.content_type, content.data) == ("image/png", data)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("", b"x"),
        ("t" * 65, b"x"),
        ("text/\u00e9", b"x"),
        ("text/plain", b"\xff"),
        ("TEXT/PLAIN", b"\xff"),
        ("tExt/markdown", b"\xc3"),
        ("a", "x"),
    ],
)
def test_bad_content_is_refused_when_sealing(
    alice: Identity, rng: crypto.Rng, content_type: str, data: bytes
) -> None:
    with pytest.raises(ValueError, match=r"content|text"):
        Bulletin.seal(
            alice, None, data, seq=1, prev=None, now=NOW, rng=rng, content_type=content_type
        )


@pytest.mark.parametrize("content_type", ["texts/plain", "textual/x", "application/text", "text"])
def test_only_the_text_type_must_be_utf8(
    alice: Identity, rng: crypto.Rng, content_type: str
) -> None:
    """The UTF-8 rule follows the MIME type ``text``, not a string that starts like it."""
    b = Bulletin.seal(
        alice, None, b"\xff", seq=1, prev=None, now=NOW, rng=rng, content_type=content_type
    )
    assert Bulletin.from_bytes(b.raw).open().data == b"\xff"


# --- size and encoding ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["public", "channel", "direct"])
def test_size_limit(
    alice: Identity, bob: Identity, channel: Channel, rng: crypto.Rng, kind: str
) -> None:
    audience = {"public": None, "channel": channel, "direct": [bob.public_key]}[kind]
    overhead = len(_seal(alice, audience, "x" * 1000, rng).raw) - 1000
    fits = "x" * (MAX_SIZE - overhead)
    b = _seal(alice, audience, fits, rng)
    assert len(b.raw) == MAX_SIZE
    got = Bulletin.from_bytes(b.raw)
    assert got.open(channel if kind == "channel" else bob).text == fits
    with pytest.raises(ValueError, match="limit"):
        _seal(alice, audience, fits + "x", rng)


def test_oversized_and_undersized_input(alice: Identity, rng: crypto.Rng) -> None:
    b = _seal(alice, None, "x", rng)
    for data in (b"", b.raw[-64:], b"\x00" * (MAX_SIZE + 1), b.raw + b"\x00" * MAX_SIZE):
        with pytest.raises(InvalidBulletin):
            Bulletin.from_bytes(data)


def test_trailing_and_missing_bytes(alice: Identity, rng: crypto.Rng) -> None:
    b = _seal(alice, None, "x", rng)
    body = b.raw[:-64]
    for raw in (b.raw + b"\x00", _resign(alice, body + b"\xc0"), b.raw[:-1], body):
        with pytest.raises(InvalidBulletin):
            Bulletin.from_bytes(raw)


def test_non_canonical_header_is_refused(alice: Identity, rng: crypto.Rng) -> None:
    b = _seal(alice, None, "x", rng)
    body = b.raw[:-64]
    assert body[0] == 0x9B  # fixarray of 11
    with pytest.raises(InvalidBulletin, match="canonical"):
        Bulletin.from_bytes(_resign(alice, b"\xdc\x00\x0b" + body[1:]))


@pytest.mark.parametrize("doc", [[], [1] * 10, [1] * 12, {"a": 1}, "text", 7])
def test_wrong_structure(alice: Identity, doc: object) -> None:
    with pytest.raises(InvalidBulletin):
        Bulletin.from_bytes(_resign(alice, codec.pack(doc)))


def test_non_bytes_are_refused() -> None:
    for data in (None, "text", 12, [b"x"]):
        with pytest.raises(InvalidBulletin):
            Bulletin.from_bytes(data)  # type: ignore[arg-type]


def test_bytes_like_input(alice: Identity, rng: crypto.Rng) -> None:
    b = _seal(alice, None, "x", rng)
    assert Bulletin.from_bytes(bytearray(b.raw)).id == b.id  # type: ignore[arg-type]
    assert Bulletin.from_bytes(memoryview(b.raw)).id == b.id  # type: ignore[arg-type]


def test_signature_by_someone_else(alice: Identity, bob: Identity, rng: crypto.Rng) -> None:
    b = _seal(alice, None, "x", rng)
    body = b.raw[:-64]
    for raw in (body + bob.sign(SIGN_LABEL + body), body + alice.sign(body), body + bytes(64)):
        with pytest.raises(InvalidBulletin, match="signature"):
            Bulletin.from_bytes(raw)
    claimed = _altered(bob, b, _set(2, bob.public_key))  # bob can only speak as bob
    assert Bulletin.from_bytes(claimed).author == bob.public_key


def test_identity_and_equality(alice: Identity, channel: Channel, rng: crypto.Rng) -> None:
    one = _seal(alice, channel, "same", rng)
    two = _seal(alice, channel, "same", rng)  # another nonce: another bulletin
    assert one != two
    assert one.id != two.id
    again = Bulletin.from_bytes(one.raw)
    assert again == one
    assert hash(again) == hash(one)
    assert len({one, two, again}) == 2
    assert one != one.raw


def test_mesh_errors(alice: Identity, rng: crypto.Rng) -> None:
    for error in (InvalidBulletin, NotARecipient, WrongChannel, WrongEpoch):
        assert issubclass(error, MeshError)


# --- the convenience, on the installed clock and random source ----------------------------


def test_create_seals_on_the_installed_clock(
    alice: Identity, bob: Identity, channel: Channel, make_rng: Callable[[str], crypto.Rng]
) -> None:
    with installed(StoppedClock(NOW, make_rng("create"))):
        first = Bulletin.create(alice, channel, "Strike vote Friday 6pm", seq=1)
        reply = Bulletin.create(
            bob, channel, "We'll be there", seq=1, reply_to=first.id, expires=3600
        )
        md = Bulletin.create(alice, None, "# Hi", seq=1, content_type="text/markdown")
    sealed = Bulletin.seal(
        alice, channel, b"Strike vote Friday 6pm", seq=1, prev=None, now=NOW, rng=make_rng("create")
    )
    assert first.raw == sealed.raw
    got = Bulletin.from_bytes(reply.to_bytes())
    assert type(got) is meshnode.Bulletin
    assert (got.created_at, got.expires_at, got.reply_to) == (NOW, NOW + 3600, first.id)
    assert got.open(channel).text == "We'll be there"
    assert Bulletin.from_bytes(md.raw).open().content_type == "text/markdown"
