"""Properties of the wire codec: decoding is total, typed and canonical."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import wire
from meshnode.core.wire import INFINITY, BulletinId, RangeMode, SyncRange, Topic
from meshnode.errors import MalformedMessage

ids = st.binary(min_size=32, max_size=32).map(BulletinId)
topics = st.binary(min_size=32, max_size=32).map(Topic)
raws = st.binary(min_size=wire.MIN_BULLETIN, max_size=600)
nonces = st.integers(min_value=0, max_value=wire.MAX_NONCE)


@st.composite
def sync_ranges(draw: st.DrawFn) -> tuple[SyncRange, ...]:
    count = draw(st.integers(min_value=0, max_value=12))
    bounds = sorted(
        draw(
            st.sets(
                st.tuples(
                    st.integers(min_value=0, max_value=wire.MAX_TIMESTAMP),
                    st.binary(max_size=wire.MAX_PREFIX),
                ).map(lambda t: wire.make_bound(*t)),
                min_size=count,
                max_size=count,
            )
        )
    )
    if bounds and draw(st.booleans()):
        bounds[-1] = INFINITY
    out: list[SyncRange] = []
    for i, upper in enumerate(bounds):
        last = i == len(bounds) - 1
        allowed = [RangeMode.FINGERPRINT, RangeMode.IDLIST, RangeMode.DIFF]
        if not last and (not out or out[-1].mode != RangeMode.SKIP):
            allowed.append(RangeMode.SKIP)
        mode = draw(st.sampled_from(allowed))
        if mode == RangeMode.FINGERPRINT:
            fingerprint = draw(st.binary(min_size=16, max_size=16))
            out.append(SyncRange(upper=upper, mode=mode, fingerprint=fingerprint))
        elif mode == RangeMode.SKIP:
            out.append(SyncRange(upper=upper, mode=mode))
        else:
            low = 1 if mode == RangeMode.DIFF else 0
            listed = tuple(draw(st.lists(ids, min_size=low, max_size=5)))
            out.append(SyncRange(upper=upper, mode=mode, ids=listed))
    return tuple(out)


messages = st.one_of(
    st.builds(
        wire.Hello,
        public=st.booleans(),
        proofs=st.lists(st.binary(min_size=16, max_size=16), max_size=20).map(tuple),
    ),
    st.builds(wire.Graft, topic=topics),
    st.builds(wire.Prune, topic=topics, backoff=st.integers(0, wire.MAX_BACKOFF)),
    st.builds(wire.Bulletins, raws=st.lists(raws, min_size=1, max_size=5).map(tuple)),
    st.builds(wire.Announce, topic=topics, ids=st.lists(ids, min_size=1, max_size=20).map(tuple)),
    st.builds(wire.Want, topic=topics, ids=st.lists(ids, min_size=1, max_size=20).map(tuple)),
    st.builds(wire.Sync, topic=topics, opened_by_sender=st.booleans(), ranges=sync_ranges()),
    st.builds(
        wire.Deposit,
        recipient=st.binary(min_size=32, max_size=32),
        raws=st.lists(raws, min_size=1, max_size=3).map(tuple),
    ),
    st.builds(
        wire.DepositAck,
        stored=st.lists(ids, max_size=4).map(tuple),
        refused=st.lists(ids, max_size=4).map(tuple),
    ),
    st.builds(wire.MailRequest, limit=st.integers(1, wire.MAX_MAIL)),
    st.builds(wire.Mail, raws=st.lists(raws, max_size=3).map(tuple), more=st.booleans()),
    st.builds(wire.MailAck, ids=st.lists(ids, min_size=1, max_size=10).map(tuple)),
    st.builds(wire.Ping, nonce=nonces),
    st.builds(wire.Pong, nonce=nonces),
)


def decode_or_malformed(data: bytes) -> wire.Message | None:
    try:
        return wire.decode(data)
    except MalformedMessage:
        return None


@given(st.binary(max_size=2048))
@settings(max_examples=1000)
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    message = decode_or_malformed(data)
    if message is not None:
        assert wire.encode(message) == data


@given(st.sampled_from(list(wire.MessageType)), st.binary(max_size=512))
@settings(max_examples=1000)
def test_arbitrary_bodies_raise_only_malformed(kind: wire.MessageType, body: bytes) -> None:
    data = bytes((wire.WIRE_VERSION, kind)) + body
    message = decode_or_malformed(data)
    if message is not None:
        assert wire.encode(message) == data


@given(messages)
@settings(max_examples=500)
def test_round_trip(message: wire.Message) -> None:
    data = wire.encode(message)
    assert wire.decode(data) == message
    assert wire.encode(wire.decode(data)) == data


@given(messages, st.data())
@settings(max_examples=500)
def test_mutations_decode_canonically_or_not_at_all(
    message: wire.Message, data: st.DataObject
) -> None:
    encoded = bytearray(wire.encode(message))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded), bytes(encoded[:cut])):
        decoded = decode_or_malformed(candidate)
        if decoded is not None:
            assert wire.encode(decoded) == candidate
