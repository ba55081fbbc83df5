"""Signed DHT records: derivations, encodings, validation, merging (and their properties)."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import codec, crypto, records
from meshnode.core.identity import Identity
from meshnode.core.records import (
    MAX_LIFETIME,
    MAX_RECORD_SIZE,
    MAX_RENDEZVOUS_ENTRIES,
    ContactRecord,
    RendezvousRecord,
    combine,
    make_contact,
    make_rendezvous,
    merge,
    validate,
)
from meshnode.errors import InvalidRecord, MeshError, StaleRecord

NOW = 1_760_000_000
TAG = hashlib.blake2b(b"tag", digest_size=32).digest()
OTHER_TAG = hashlib.blake2b(b"other tag", digest_size=32).digest()
SETTINGS = settings(max_examples=150, deadline=None)


def _identity(n: int) -> Identity:
    return Identity.from_seed(hashlib.blake2b(b"group %d" % n, digest_size=32).digest(), f"g{n}")


POOL = [_identity(n) for n in range(40)]


def _contact(n: int = 0, *, seq: int = 1, now: int = NOW, lifetime: int = 3600) -> ContactRecord:
    return make_contact(POOL[n], [f"127.0.0.{n + 1}:7447"], seq=seq, now=now, lifetime=lifetime)


# --- derivations -----------------------------------------------------------------------------


def test_derivations_are_labelled_blake2b() -> None:
    pk = POOL[0].public_key
    assert records.node_id(pk) == crypto.derive(pk, b"meshnode/v1/node-id", 20)
    assert records.contact_key(pk) == crypto.derive(pk, b"meshnode/v1/dht/contact", 20)
    rpk, _ = crypto.signing_keypair(crypto.derive(TAG, b"meshnode/v1/record/rendezvous-seed"))
    assert records.rendezvous_keypair(TAG)[0] == rpk
    assert records.rendezvous_key_for_tag(TAG) == crypto.derive(
        rpk, b"meshnode/v1/dht/rendezvous", 20
    )
    assert len({records.node_id(pk), records.contact_key(pk)}) == 2


def test_a_tag_is_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        records.rendezvous_keypair(b"short")


# --- contact records -------------------------------------------------------------------------


def test_contact_round_trip_and_layout() -> None:
    c = _contact(3, seq=7)
    value = c.encode()
    assert validate(c.key, value, NOW) == c
    assert c.node_id == records.node_id(POOL[3].public_key)
    doc = codec.unpack(value)
    assert doc == [1, POOL[3].public_key, 7, NOW, NOW + 3600, ["127.0.0.4:7447"], c.signature]
    body = codec.pack([1, POOL[3].public_key, 7, NOW, NOW + 3600, ["127.0.0.4:7447"]])
    crypto.verify(POOL[3].public_key, b"meshnode/v1/record/contact" + body, c.signature)


def test_contact_under_another_key_is_refused() -> None:
    c = _contact(0)
    with pytest.raises(InvalidRecord, match="not its own"):
        validate(records.contact_key(POOL[1].public_key), c.encode(), NOW)


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (NOW + 3600, "expired"),
        (NOW + 10_000, "expired"),
        (NOW - records.MAX_CLOCK_SKEW - 1, "future"),
    ],
)
def test_contact_time_rules(now: int, reason: str) -> None:
    c = _contact(0)
    with pytest.raises(InvalidRecord, match=reason):
        validate(c.key, c.encode(), now)


def test_expiry_at_most_seven_days_ahead() -> None:
    c = _contact(0, lifetime=MAX_LIFETIME)
    assert validate(c.key, c.encode(), NOW) == c
    with pytest.raises(InvalidRecord, match="7 days"):
        validate(c.key, c.encode(), NOW - 1)
    with pytest.raises(InvalidRecord, match="7 days"):
        make_contact(POOL[0], ["127.0.0.1:1"], seq=1, now=NOW, lifetime=MAX_LIFETIME + 1)


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0:7447",
        "[::]:7447",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1",
        ":7447",
        "224.0.0.1:7447",
        "[::1:7447",
        "[zz::1]:7447",
        "bad host:7447",
        "exa_mple.org:7447",
        "a..b:7447",
        "h\u00e9llo:7447",
        "x" * 130 + ":1",
    ],
)
def test_unusable_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidRecord, match="address"):
        make_contact(POOL[0], [address], seq=1, now=NOW)


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1:1", "[2001:db8::1]:65535", "node-1.example.org:7447", "10.0.0.1:7447"]],
)
def test_usable_addresses(addresses: list[str]) -> None:
    c = make_contact(POOL[0], addresses, seq=1, now=NOW)
    assert validate(c.key, c.encode(), NOW) == c
    assert c.addresses == tuple(addresses)


@pytest.mark.parametrize(
    "addresses", [[], ["127.0.0.1:1"] * 2, [f"127.0.0.{i}:1" for i in range(1, 6)]]
)
def test_address_count_and_uniqueness(addresses: list[str]) -> None:
    with pytest.raises(InvalidRecord, match="contact record"):
        make_contact(POOL[0], addresses, seq=1, now=NOW)


def test_forged_contact_is_refused() -> None:
    c = _contact(0)
    forged = ContactRecord(
        group_key=c.group_key,
        seq=c.seq + 1,
        created=c.created,
        expires=c.expires,
        addresses=("10.6.6.6:1",),
        signature=c.signature,
    )
    with pytest.raises(InvalidRecord, match="signature"):
        validate(c.key, forged.encode(), NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: [9, *d[1:]],
        lambda d: [True, *d[1:]],
        lambda d: d[:-1],
        lambda d: [*d, b""],
        lambda d: [d[0], d[1][:31], *d[2:]],
        lambda d: [*d[:2], -1, *d[3:]],
        lambda d: [*d[:2], True, *d[3:]],
        lambda d: [*d[:5], "127.0.0.1:1", d[6]],
        lambda d: [*d[:5], [1], d[6]],
        lambda d: [*d[:6], d[6][:63]],
        lambda d: [*d[:3], d[4], d[3], *d[5:]],
        lambda d: {"a": 1},
        lambda d: [],
        lambda d: "text",
        lambda d: [2, d[1], "x"],
        lambda d: [2, d[1], [[1, 2]]],
        lambda d: [2, d[1], [[b"x", 2]]],
        lambda d: [2, d[1], [[codec.pack(d), 2]]],
    ],
)
def test_malformed_records_are_refused(mutate: object) -> None:
    c = _contact(0)
    doc = codec.unpack(c.encode())
    with pytest.raises(InvalidRecord):
        validate(c.key, codec.pack(mutate(doc)), NOW)  # type: ignore[operator]


def test_non_canonical_trailing_and_oversized_bytes_are_refused() -> None:
    c = _contact(0)
    value = c.encode()
    longer_seq = value.replace(b"\x01", b"\xcc\x01", 1)  # the type as uint8, not fixint
    with pytest.raises(InvalidRecord, match="canonical"):
        validate(c.key, longer_seq, NOW)
    with pytest.raises(InvalidRecord, match="canonical"):
        validate(c.key, value + b"\x00", NOW)
    with pytest.raises(InvalidRecord, match="larger"):
        validate(c.key, bytes(MAX_RECORD_SIZE + 1), NOW)
    with pytest.raises(InvalidRecord, match="bytes"):
        validate(c.key, "text", NOW)  # type: ignore[arg-type]


# --- rendezvous records ----------------------------------------------------------------------


def test_rendezvous_round_trip_and_layout() -> None:
    contacts = [_contact(n) for n in (5, 1, 3)]
    r = make_rendezvous(TAG, contacts, now=NOW)
    key = records.rendezvous_key_for_tag(TAG)
    assert r.key == key
    assert validate(key, r.encode(), NOW) == r
    assert list(r.contacts) == sorted(contacts, key=lambda c: c.group_key)
    doc = codec.unpack(r.encode())
    assert isinstance(doc, list)
    rpk, _ = records.rendezvous_keypair(TAG)
    assert doc[:2] == [2, rpk]
    for raw, entry in zip(doc[2], r.entries, strict=True):
        assert raw == [entry.contact.encode(), entry.signature]
        crypto.verify(rpk, b"meshnode/v1/record/rendezvous" + raw[0], raw[1])


def test_a_non_member_cannot_add_an_entry() -> None:
    """Entries signed with another tag's key fail, though the contact itself is valid."""
    good = make_rendezvous(TAG, [_contact(0)], now=NOW)
    outsider = make_rendezvous(OTHER_TAG, [_contact(1)], now=NOW)
    entries = tuple(sorted((*good.entries, *outsider.entries), key=lambda e: e.contact.group_key))
    forged = RendezvousRecord(rendezvous_key=good.rendezvous_key, entries=entries)
    with pytest.raises(InvalidRecord, match="tag key"):
        validate(good.key, forged.encode(), NOW)
    with pytest.raises(InvalidRecord, match="not its own"):
        validate(good.key, outsider.encode(), NOW)


def test_rendezvous_entries_sorted_and_unique() -> None:
    r = make_rendezvous(TAG, [_contact(0), _contact(1)], now=NOW)
    with pytest.raises(InvalidRecord, match="sorted"):
        RendezvousRecord(rendezvous_key=r.rendezvous_key, entries=r.entries[::-1])
    with pytest.raises(InvalidRecord, match="sorted"):
        RendezvousRecord(rendezvous_key=r.rendezvous_key, entries=(r.entries[0],) * 2)
    with pytest.raises(InvalidRecord, match="well-formed"):
        RendezvousRecord(rendezvous_key=r.rendezvous_key, entries=())


def test_expired_entries_are_dropped_and_all_expired_refused() -> None:
    short, long = _contact(0, lifetime=60), _contact(1, lifetime=3600)
    r = make_rendezvous(TAG, [short, long], now=NOW)
    pruned = validate(r.key, r.encode(), NOW + 61)
    assert isinstance(pruned, RendezvousRecord)
    assert pruned.contacts == (long,)
    with pytest.raises(InvalidRecord, match="expired"):
        validate(r.key, r.encode(), NOW + 3601)
    with pytest.raises(InvalidRecord, match="unexpired"):
        make_rendezvous(TAG, [short], now=NOW + 61)


def test_rendezvous_caps_keep_the_newest() -> None:
    contacts = [_contact(n, now=NOW + n) for n in range(40)]
    r = make_rendezvous(TAG, contacts, now=NOW + 40)
    assert len(r.entries) == MAX_RENDEZVOUS_ENTRIES
    assert {c.group_key for c in r.contacts} == {c.group_key for c in contacts[8:]}
    assert len(r.encode()) <= MAX_RECORD_SIZE
    big = [
        make_contact(
            POOL[n],
            [f"host-{n}-{'x' * 100}.org:{p}" for p in range(1, 5)],
            seq=1,
            now=NOW + n,
        )
        for n in range(40)
    ]
    r = make_rendezvous(TAG, big, now=NOW + 40)
    assert len(r.encode()) <= MAX_RECORD_SIZE < len(r.encode()) + 800
    assert validate(r.key, r.encode(), NOW + 40) == r


# --- merging ---------------------------------------------------------------------------------


def test_contact_merge_by_sequence_number() -> None:
    old, new = _contact(0, seq=1), _contact(0, seq=2)
    assert merge(old, new, NOW) == new
    with pytest.raises(StaleRecord):
        merge(new, old, NOW)
    with pytest.raises(StaleRecord):
        merge(new, new, NOW)
    with pytest.raises(InvalidRecord, match="different keys"):
        merge(old, _contact(1), NOW)


def test_rendezvous_merge_is_a_union_newest_per_signer() -> None:
    a1, a2, b1 = _contact(0, seq=1), _contact(0, seq=2), _contact(1, seq=1)
    one = make_rendezvous(TAG, [a2], now=NOW)
    two = make_rendezvous(TAG, [a1, b1], now=NOW)
    merged = merge(one, two, NOW)
    assert isinstance(merged, RendezvousRecord)
    assert set(merged.contacts) == {a2, b1}
    with pytest.raises(StaleRecord):
        merge(merged, two, NOW)
    with pytest.raises(StaleRecord):
        merge(merged, one, NOW)


def test_merge_drops_expired_and_refuses_mixed_types() -> None:
    short, long = _contact(0, lifetime=60), _contact(1, lifetime=3600)
    old = make_rendezvous(TAG, [short], now=NOW)
    new = make_rendezvous(TAG, [long], now=NOW)
    merged = merge(old, new, NOW + 61)
    assert isinstance(merged, RendezvousRecord)
    assert merged.contacts == (long,)
    with pytest.raises(StaleRecord, match="expired"):
        merge(old, old, NOW + 61)
    odd = ContactRecord(
        group_key=POOL[0].public_key,
        seq=1,
        created=NOW,
        expires=NOW + 1,
        addresses=("127.0.0.1:1",),
        signature=bytes(64),
    )
    with pytest.raises(InvalidRecord, match="different"):
        merge(old, odd, NOW)


def test_combine_takes_highest_seq_and_union() -> None:
    assert combine([], NOW) is None
    assert combine([_contact(0, seq=3), _contact(0, seq=5), _contact(0, seq=4)], NOW) == _contact(
        0, seq=5
    )
    parts = [make_rendezvous(TAG, [_contact(n)], now=NOW) for n in range(4)]
    union = combine(parts, NOW)
    assert isinstance(union, RendezvousRecord)
    assert {c.group_key for c in union.contacts} == {POOL[n].public_key for n in range(4)}
    assert combine([_contact(0), parts[0]], NOW) == _contact(0)


# --- properties ------------------------------------------------------------------------------

addresses = st.lists(
    st.builds(
        "{}.{}.{}.{}:{}".format,
        st.integers(1, 223),
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(1, 254),
        st.integers(1, 65535),
    ),
    min_size=1,
    max_size=4,
    unique=True,
)


@SETTINGS
@given(
    n=st.integers(0, len(POOL) - 1),
    addrs=addresses,
    seq=st.integers(0, records.MAX_SEQ),
    lifetime=st.integers(1, MAX_LIFETIME),
)
def test_contact_round_trips(n: int, addrs: list[str], seq: int, lifetime: int) -> None:
    c = make_contact(POOL[n], addrs, seq=seq, now=NOW, lifetime=lifetime)
    assert validate(c.key, c.encode(), NOW) == c


def _any_record(draw_n: int, kind: int) -> tuple[bytes, bytes]:
    if kind == 0:
        c = _contact(draw_n % len(POOL))
        return c.key, c.encode()
    r = make_rendezvous(TAG, [_contact(i) for i in range(draw_n % 5 + 1)], now=NOW)
    return r.key, r.encode()


@SETTINGS
@given(n=st.integers(0, 200), kind=st.integers(0, 1), data=st.data())
def test_any_byte_change_is_rejected(n: int, kind: int, data: st.DataObject) -> None:
    key, value = _any_record(n, kind)
    i = data.draw(st.integers(0, len(value) - 1))
    delta = data.draw(st.integers(1, 255))
    changed = value[:i] + bytes([value[i] ^ delta]) + value[i + 1 :]
    with pytest.raises(InvalidRecord):
        validate(key, changed, NOW)


@SETTINGS
@given(n=st.integers(0, 200), kind=st.integers(0, 1), data=st.data())
def test_any_truncation_is_rejected(n: int, kind: int, data: st.DataObject) -> None:
    key, value = _any_record(n, kind)
    cut = data.draw(st.integers(0, len(value) - 1))
    with pytest.raises(InvalidRecord):
        validate(key, value[:cut], NOW)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=70)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=8),
    max_leaves=30,
)


@SETTINGS
@given(
    blob=st.binary(max_size=300)
    | st.builds(lambda t, rest: codec.pack([t, *rest]), st.integers(0, 3), st.lists(msgpack_values))
)
def test_arbitrary_bytes_raise_only_invalid_record(blob: bytes) -> None:
    for key in (bytes(20), records.contact_key(POOL[0].public_key)):
        with contextlib.suppress(InvalidRecord):
            validate(key, blob, NOW)


@SETTINGS
@given(
    picks=st.lists(
        st.tuples(st.integers(0, len(POOL) - 1), st.integers(1, 4), st.booleans()),
        min_size=2,
        max_size=60,
    )
)
def test_merge_keeps_newest_per_signer_within_caps(picks: list[tuple[int, int, bool]]) -> None:
    contacts = [_contact(n, seq=seq) for n, seq, _ in picks]
    left = [c for c, (_, _, side) in zip(contacts, picks, strict=True) if side] or contacts[:1]
    right = [c for c, (_, _, side) in zip(contacts, picks, strict=True) if not side] or contacts
    old = make_rendezvous(TAG, left, now=NOW)
    new = make_rendezvous(TAG, right, now=NOW)
    try:
        merged = merge(old, new, NOW)
    except StaleRecord:
        merged = old
    assert isinstance(merged, RendezvousRecord)
    assert len(merged.entries) <= MAX_RENDEZVOUS_ENTRIES
    assert len(merged.encode()) <= MAX_RECORD_SIZE
    newest: dict[bytes, int] = {}
    for c in contacts:
        newest[c.group_key] = max(newest.get(c.group_key, 0), c.seq)
    for c in merged.contacts:
        assert c.seq == newest[c.group_key]
    assert validate(merged.key, merged.encode(), NOW) == merged


def test_errors_are_mesh_errors() -> None:
    assert issubclass(StaleRecord, InvalidRecord)
    assert issubclass(InvalidRecord, MeshError)


# --- one encoding: msgpack true and false are never integers ---------------------------------

CONTACT_INTEGER_FIELDS = (0, 2, 3, 4)
"""Positions of the type tag, seq, created and expires in a contact record's array."""


def _with(doc: list[object], index: int, value: object) -> list[object]:
    return [*doc[:index], value, *doc[index + 1 :]]


def _rendezvous_around(contact_bytes: bytes) -> tuple[bytes, list[bytes]]:
    """A rendezvous record holding ``contact_bytes``, countersigned by the tag key over
    both those bytes and the contact's canonical form (so only the type check can refuse)."""
    rpk, rsk = records.rendezvous_keypair(TAG)
    contact = codec.unpack(contact_bytes)
    assert isinstance(contact, list)
    canonical = codec.pack(
        [int(v) if i in CONTACT_INTEGER_FIELDS else v for i, v in enumerate(contact)]
    )
    values = []
    for signed in (contact_bytes, canonical):
        sig = crypto.sign(rsk, records.RENDEZVOUS_SIGN_LABEL + signed)
        values.append(codec.pack([2, rpk, [[contact_bytes, sig]]]))
    return records.rendezvous_dht_key(rpk), values


def _refused_everywhere(index: int, flag: bool) -> None:
    c = _contact(0)
    doc = codec.unpack(c.encode())
    assert isinstance(doc, list)
    bad = codec.pack(_with(doc, index, flag))
    with pytest.raises(InvalidRecord):
        validate(c.key, bad, NOW)
    key, values = _rendezvous_around(bad)
    for value in values:
        with pytest.raises(InvalidRecord):
            validate(key, value, NOW)


@pytest.mark.parametrize("flag", [True, False])
@pytest.mark.parametrize("index", CONTACT_INTEGER_FIELDS)
def test_booleans_in_integer_fields_are_refused(index: int, flag: bool) -> None:
    """``true == 1`` in Python: a contact tagged ``true`` was accepted inside a rendezvous
    entry, a second encoding of the same record."""
    _refused_everywhere(index, flag)


@pytest.mark.parametrize("flag", [True, False])
def test_a_rendezvous_record_tagged_with_a_boolean_is_refused(flag: bool) -> None:
    r = make_rendezvous(TAG, [_contact(0)], now=NOW)
    doc = codec.unpack(r.encode())
    assert isinstance(doc, list)
    with pytest.raises(InvalidRecord):
        validate(r.key, codec.pack(_with(doc, 0, flag)), NOW)


@pytest.mark.parametrize("name", ["seq", "created", "expires"])
def test_a_contact_record_with_a_boolean_field_is_not_built(name: str) -> None:
    c = _contact(0)
    fields = {
        "group_key": c.group_key,
        "seq": c.seq,
        "created": c.created,
        "expires": c.expires,
        "addresses": c.addresses,
        "signature": c.signature,
        name: True,
    }
    with pytest.raises(InvalidRecord):
        ContactRecord(**fields)  # type: ignore[arg-type]


@SETTINGS
@given(
    kind=st.integers(0, 1),
    index=st.sampled_from(CONTACT_INTEGER_FIELDS),
    flag=st.booleans(),
    n=st.integers(0, len(POOL) - 1),
)
def test_no_record_type_takes_a_boolean_for_an_integer(
    kind: int, index: int, flag: bool, n: int
) -> None:
    """Across record types: a boolean anywhere an integer belongs is refused, and every
    accepted record is exactly its own encoding."""
    key, value = _any_record(n, kind)
    doc = codec.unpack(value)
    assert isinstance(doc, list)
    if kind == 0:
        changed = codec.pack(_with(doc, index, flag))
    else:
        # The first entry's contact changes; its countersignature stays the one over the
        # canonical contact, so only the type rule can refuse it.
        raw, sig = doc[2][0]
        contact = codec.unpack(raw)
        assert isinstance(contact, list)
        entry = [codec.pack(_with(contact, index, flag)), sig]
        changed = codec.pack([doc[0], doc[1], [entry, *doc[2][1:]]])
    with pytest.raises(InvalidRecord):
        validate(key, changed, NOW)
    assert validate(key, value, NOW).encode() == value
