"""Properties of signed bulletins: exact round trips, and nothing else gets through.

The samples cover every kind (public, channel in two epochs, direct to 1 to 16
groups, public and channel endorsements, key updates), the full ranges of the
header fields, and text or binary content. "Re-signed" below means the bytes
were changed and then correctly signed again by the author, so the signature
check cannot be what refuses them.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_codec_properties import Value, count_nodes, noncanonical, values

from meshnode.core import codec, crypto
from meshnode.core.bulletin import MAX_RECIPIENTS, MAX_SEQ, MAX_TIME, SIGN_LABEL, Bulletin, Kind
from meshnode.core.channel import KEY_UPDATE_TYPE, Channel
from meshnode.core.identity import Identity
from meshnode.errors import InvalidBulletin, MeshError

SIG = crypto.SIGNATURE_SIZE
AUTHORS = [Identity.from_seed(bytes([i]) * 32, f"author {i}") for i in range(1, 4)]
READERS = [Identity.from_seed(bytes([0x40 + i]) * 32, f"reader {i}") for i in range(MAX_RECIPIENTS)]
STRANGER = Identity.from_seed(b"\x7f" * 32, "stranger")
CHANNEL_0 = Channel.from_secret("strike-support", b"\x21" * 32)
CHANNEL_1 = CHANNEL_0.with_epoch(1, b"\x22" * 32)
KINDS = ["public", "channel", "direct", "public-endorsement", "channel-endorsement", "key-update"]

ids = st.binary(min_size=32, max_size=32)
texts = st.text(max_size=300).map(lambda t: ("text/plain", t.encode()))
blobs = st.binary(max_size=300).map(lambda b: ("application/octet-stream", b))


@dataclass(frozen=True)
class Sample:
    bulletin: Bulletin
    author: Identity
    key: Channel | Identity | None
    content_type: str
    data: bytes
    seed: int


@st.composite
def samples(draw: st.DrawFn, kinds: list[str] = KINDS) -> Sample:
    author = draw(st.sampled_from(AUTHORS))
    kind = draw(st.sampled_from(kinds))
    content_type, data = draw(texts | blobs)
    seq = draw(st.integers(1, 3) | st.integers(1, MAX_SEQ))
    prev = None if seq == 1 else draw(ids)
    created = draw(st.integers(0, MAX_TIME - 2))
    expires = draw(st.none() | st.integers(created + 1, MAX_TIME - 1))
    reply_to = draw(st.none() | ids)
    seed = draw(st.integers(0, 2**32))
    channel = draw(st.sampled_from([CHANNEL_0, CHANNEL_1]))
    key: Channel | Identity | None = None
    audience: Channel | list[bytes] | None = None
    bulletin_kind, endorses = None, None
    if kind in ("channel", "channel-endorsement"):
        audience = key = channel
    elif kind in ("direct", "key-update"):
        readers = draw(st.lists(st.sampled_from(READERS), min_size=1, max_size=4, unique=True))
        if draw(st.integers(0, 9)) == 0:
            readers = READERS  # the most a direct bulletin may address
        audience = [r.public_key for r in readers]
        key = draw(st.sampled_from([author, *readers]))
    if kind.endswith("endorsement"):
        bulletin_kind, endorses = Kind.ENDORSEMENT, draw(ids)
    if kind == "key-update":
        bulletin_kind = Kind.KEY_UPDATE
        content_type, data = KEY_UPDATE_TYPE, CHANNEL_1.id + bytes(32)
    bulletin = _seal(
        author, audience, data, seq, prev, created, seed, content_type, expires, reply_to,
        endorses, bulletin_kind,
    )  # fmt: skip
    return Sample(bulletin, author, key, content_type, data, seed)


def _seal(
    author: Identity,
    audience: Channel | list[bytes] | None,
    data: bytes,
    seq: int,
    prev: bytes | None,
    created: int,
    seed: int,
    content_type: str,
    expires: int | None,
    reply_to: bytes | None,
    endorses: bytes | None,
    kind: Kind | None,
) -> Bulletin:
    return Bulletin.seal(
        author,
        audience,
        data,
        seq=seq,
        prev=prev,
        now=created,
        rng=random.Random(seed).randbytes,
        content_type=content_type,
        expires_at=expires,
        reply_to=reply_to,
        endorses=endorses,
        kind=kind,
    )


def _doc(b: Bulletin) -> list[Value]:
    doc = codec.unpack(b.raw[:-SIG])
    assert isinstance(doc, list)
    return doc


def _resign(author: Identity, body: bytes) -> bytes:
    return body + author.sign(SIGN_LABEL + body)


def _open_is_total(b: Bulletin) -> None:
    """Opening a verified bulletin with any key returns content or raises a MeshError."""
    for key in (None, CHANNEL_0, CHANNEL_1, STRANGER, READERS[0], *AUTHORS):
        with contextlib.suppress(MeshError):
            b.open(key)


@settings(max_examples=60, deadline=None)
@given(samples())
def test_round_trip(s: Sample) -> None:
    b = s.bulletin
    raw = b.to_bytes()
    got = Bulletin.from_bytes(raw)
    assert got.raw == raw
    assert got.id == b.id == crypto.blake2b_256(raw)
    fields = [
        "kind",
        "author",
        "seq",
        "prev",
        "created_at",
        "expires_at",
        "channel_id",
        "epoch",
        "reply_to",
        "endorses",
        "payload",
        "ad_size",
        "stream",
    ]
    for name in fields:
        assert getattr(got, name) == getattr(b, name), name
    body = raw[:-SIG]
    assert codec.pack(codec.unpack(body)) == body  # re-encoding is byte-identical
    content = got.open(s.key)
    assert (content.content_type, content.data) == (s.content_type, s.data)
    again = _seal(
        s.author, _audience(b), s.data, b.seq, b.prev, b.created_at, s.seed, s.content_type,
        b.expires_at, b.reply_to, b.endorses, b.kind,
    )  # fmt: skip
    assert again.raw == raw  # sealing is a function of its inputs


def _audience(b: Bulletin) -> Channel | list[bytes] | None:
    """The audience to re-seal ``b``: its channel, its readers (found by opening), or None."""
    if b.channel_id is not None:
        return CHANNEL_1 if b.epoch == 1 else CHANNEL_0
    if b.kind in (Kind.DIRECT, Kind.KEY_UPDATE):
        readers = []
        for r in READERS:
            try:
                b.open(r)
            except MeshError:
                continue
            readers.append(r.public_key)
        return readers
    return None


@settings(max_examples=8, deadline=None)
@given(samples(), st.randoms(use_true_random=False))
def test_every_single_byte_change_is_rejected(s: Sample, rnd: random.Random) -> None:
    raw = s.bulletin.raw
    for pos in range(len(raw)):
        damaged = bytearray(raw)
        damaged[pos] ^= rnd.randrange(1, 256)
        with pytest.raises(InvalidBulletin):
            Bulletin.from_bytes(bytes(damaged))


@settings(max_examples=8, deadline=None)
@given(samples(), st.binary(min_size=1, max_size=70))
def test_every_truncation_and_extension_is_rejected(s: Sample, tail: bytes) -> None:
    raw = s.bulletin.raw
    for end in range(len(raw)):
        with pytest.raises(InvalidBulletin):
            Bulletin.from_bytes(raw[:end])
    with pytest.raises(InvalidBulletin):
        Bulletin.from_bytes(raw + tail)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_arbitrary_bytes_raise_only_invalid_bulletin(data: bytes) -> None:
    try:
        Bulletin.from_bytes(data)
    except InvalidBulletin:
        return
    raise AssertionError("random bytes made a valid bulletin")


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=11, max_size=11) | values, st.sampled_from(AUTHORS))
def test_arbitrary_signed_documents_raise_only_invalid_bulletin(
    doc: Value, author: Identity
) -> None:
    try:
        b = Bulletin.from_bytes(_resign(author, codec.pack(doc)))
    except InvalidBulletin:
        return
    _open_is_total(b)


# Field values that are right, or wrong in the ways a careless or hostile author might try.
plausible = (
    values
    | ids
    | st.binary(min_size=31, max_size=33)
    | st.integers(-2, 6)
    | st.just([CHANNEL_0.id, 0])
    | st.just([CHANNEL_1.id, 1])
    | st.tuples(ids, st.lists(st.binary(min_size=48, max_size=48), max_size=3), st.binary()).map(
        list
    )
)


@settings(max_examples=300, deadline=None)
@given(samples(), st.data())
def test_re_signed_field_changes_raise_only_mesh_errors(s: Sample, data: st.DataObject) -> None:
    """Any mix of fields, signed by the author: refused as InvalidBulletin, or opens totally."""
    doc = _doc(s.bulletin)
    for _ in range(data.draw(st.integers(1, 3))):
        doc[data.draw(st.integers(0, len(doc) - 1))] = data.draw(plausible)
    try:
        b = Bulletin.from_bytes(_resign(s.author, codec.pack(doc)))
    except InvalidBulletin:
        return
    _open_is_total(b)


@settings(max_examples=150, deadline=None)
@given(samples(), st.data())
def test_non_canonical_encodings_are_rejected_even_if_re_signed(
    s: Sample, data: st.DataObject
) -> None:
    doc: Value = _doc(s.bulletin)
    target = data.draw(st.integers(0, count_nodes(doc) - 1))
    body = noncanonical(doc, target, data.draw(st.integers(0, 7)))
    assume(body is not None)
    assert body is not None
    assert codec.unpack(body) == doc  # the same bulletin, only encoded differently
    with pytest.raises(InvalidBulletin, match="canonical"):
        Bulletin.from_bytes(_resign(s.author, body))


def _retypable(value: Value) -> list[int]:
    """The pre-order numbers of the nodes :func:`_retyped` can change: every str, and
    every bin that is valid UTF-8 (drawing among these alone keeps hypothesis from
    discarding most examples, since random bin is rarely UTF-8)."""
    found: list[int] = []
    counter = iter(range(count_nodes(value)))

    def walk(v: Value) -> None:
        here = next(counter)
        if isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            found.append(here)
        elif isinstance(v, bytes):
            try:
                v.decode()
            except UnicodeDecodeError:
                return
            found.append(here)

    walk(value)
    return found


def _retyped(value: Value, target: int) -> tuple[Value, bool]:
    """``value`` with its ``target``-th str or bin node (pre-order) given the other type."""
    counter = iter(range(count_nodes(value)))

    def walk(v: Value) -> tuple[Value, bool]:
        here = next(counter)
        if isinstance(v, list):
            parts = [walk(x) for x in v]
            return [p for p, _ in parts], any(c for _, c in parts)
        if here != target:
            return v, False
        if isinstance(v, str):
            return v.encode(), True
        if isinstance(v, bytes):
            try:
                return v.decode(), True
            except UnicodeDecodeError:
                return v, False
        return v, False

    return walk(value)


@settings(max_examples=150, deadline=None)
@given(samples(), st.data())
def test_bin_given_as_str_and_str_as_bin_are_rejected(s: Sample, data: st.DataObject) -> None:
    doc: Value = _doc(s.bulletin)
    candidates = _retypable(doc)
    assume(candidates)  # encrypted kinds may hold no str and no UTF-8 bin at all
    changed, done = _retyped(doc, data.draw(st.sampled_from(candidates)))
    assert done
    with pytest.raises(InvalidBulletin):
        Bulletin.from_bytes(_resign(s.author, codec.pack(changed)))


@settings(max_examples=100, deadline=None)
@given(samples(kinds=["channel", "channel-endorsement"]), st.data())
def test_non_canonical_encrypted_content_is_rejected(s: Sample, data: st.DataObject) -> None:
    """The author encrypts a longer encoding of the content: the envelope verifies, the
    content does not open."""
    content: Value = [s.content_type, s.data]
    plain = noncanonical(content, data.draw(st.integers(0, 2)), data.draw(st.integers(0, 7)))
    assume(plain is not None)
    assert plain is not None
    b = s.bulletin
    assert isinstance(s.key, Channel)
    ad = b.raw[: b.ad_size]
    nonce = bytes(crypto.XNONCE_SIZE)
    payload = nonce + crypto.xchacha_encrypt(s.key.epoch_key(b.epoch), nonce, plain, ad)
    forged = Bulletin.from_bytes(_resign(s.author, ad + codec.pack(payload)))
    with pytest.raises(InvalidBulletin, match="content"):
        forged.open(s.key)
