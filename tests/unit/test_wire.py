"""The peer message codec: every message round-trips, every malformed variant is refused."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest

from meshnode.core import codec, wire
from meshnode.core.wire import (
    INFINITY,
    Announce,
    BulletinId,
    Bulletins,
    Deposit,
    DepositAck,
    DontWant,
    Graft,
    Hello,
    Mail,
    MailAck,
    MailRequest,
    MessageType,
    Ping,
    Pong,
    Prune,
    RangeMode,
    Redeem,
    Redeemed,
    Sync,
    SyncRange,
    Topic,
    Verdict,
    Want,
)
from meshnode.errors import LocalProtocolError, MalformedMessage

TOPIC = Topic(bytes(range(32)))
ID1 = BulletinId(b"\x01" * 32)
ID2 = BulletinId(b"\x02" * 32)
RAW = b"\xaa" * 100
FP = b"\x0f" * 16
SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "gossip.md"


def frame(kind: int, body: object, version: int = wire.WIRE_VERSION) -> bytes:
    return bytes((version, kind)) + codec.pack(body)


def bound(ts: int, prefix: bytes = b"") -> bytes:
    return wire.make_bound(ts, prefix)


EXAMPLES: list[wire.Message] = [
    Hello(public=True, proofs=(b"\x11" * 16, b"\x22" * 16)),
    Hello(public=False, proofs=()),
    Graft(topic=TOPIC),
    Prune(topic=TOPIC, backoff=60),
    Prune(topic=TOPIC, backoff=0),
    Bulletins(raws=(RAW, b"\xbb" * 65536)),
    Announce(topic=TOPIC, ids=(ID1, ID2)),
    Want(topic=TOPIC, ids=(ID1,)),
    DontWant(ids=(ID1, ID2)),
    Sync(topic=TOPIC, opened_by_sender=True, ranges=()),
    Sync(
        topic=TOPIC,
        opened_by_sender=False,
        ranges=(
            SyncRange(upper=bound(1_700_000_000), mode=RangeMode.SKIP),
            SyncRange(
                upper=bound(1_700_000_000, b"\x80"), mode=RangeMode.FINGERPRINT, fingerprint=FP
            ),
            SyncRange(upper=bound(1_700_000_100, b"\x01\x02"), mode=RangeMode.IDLIST, ids=()),
            SyncRange(upper=bound(1_700_000_200), mode=RangeMode.IDLIST, ids=(ID1, ID2)),
            SyncRange(upper=INFINITY, mode=RangeMode.DIFF, ids=(ID2,)),
        ),
    ),
    Sync(
        topic=TOPIC,
        opened_by_sender=True,
        ranges=(SyncRange(upper=bound(0), mode=RangeMode.FINGERPRINT, fingerprint=FP),),
    ),
    Deposit(recipient=b"\x05" * 32, raws=(RAW,)),
    DepositAck(stored=(ID1,), refused=(ID2,)),
    DepositAck(stored=(), refused=()),
    MailRequest(limit=1),
    MailRequest(limit=wire.MAX_MAIL),
    Mail(raws=(RAW, RAW), more=True),
    Mail(raws=(), more=False),
    MailAck(ids=(ID1, ID2)),
    Ping(nonce=0),
    Ping(nonce=wire.MAX_NONCE),
    Pong(nonce=12345),
    Redeem(token=ID1, proof=b"\x05" * 64),
    Redeemed(verdict=Verdict.GRANTED, part=b"grant bytes", more=True),
    Redeemed(verdict=Verdict.USED, part=b"", more=False),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: wire.Message) -> None:
    data = wire.encode(message)
    assert data[0] == wire.WIRE_VERSION
    assert data[1] == message.TYPE
    decoded = wire.decode(data)
    assert decoded == message
    assert wire.encode(decoded) == data
    assert wire.decode(bytearray(data)) == message
    assert wire.decode(memoryview(data)) == message


def test_every_message_type_has_an_example() -> None:
    assert {m.TYPE for m in EXAMPLES} == set(MessageType)


def test_encode_bulletins_matches_the_message_encoding() -> None:
    raws = [RAW, b"\xcc" * 300]
    assert wire.encode_bulletins(raws) == wire.encode(Bulletins(raws=tuple(raws)))


def test_batch_raws_respects_count_and_size() -> None:
    big = b"\xdd" * 65536
    raws = [big, RAW, RAW, big, *([RAW] * 600)]
    batches = wire.batch_raws(raws)
    assert [r for b in batches for r in b] == raws
    for batch in batches:
        assert len(batch) <= wire.MAX_BATCH
        assert len(wire.encode(Bulletins(raws=tuple(batch)))) <= wire.MAX_MESSAGE
    assert wire.batch_raws([]) == []
    assert [len(b) for b in wire.batch_raws([RAW] * 5, limit=2)] == [2, 2, 1]


def test_encode_refuses_oversized_messages() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds"):
        wire.encode(Bulletins(raws=(b"\x01" * 65536, b"\x02" * 65536)))


# -- malformed input -------------------------------------------------------------

H = int(MessageType.HELLO)
G = int(MessageType.GRAFT)
P = int(MessageType.PRUNE)
B = int(MessageType.BULLETINS)
A = int(MessageType.ANNOUNCE)
W = int(MessageType.WANT)
S = int(MessageType.SYNC)
D = int(MessageType.DEPOSIT)
DA = int(MessageType.DEPOSIT_ACK)
MR = int(MessageType.MAIL_REQUEST)
M = int(MessageType.MAIL)
MA = int(MessageType.MAIL_ACK)
PI = int(MessageType.PING)
PO = int(MessageType.PONG)
T = bytes(TOPIC)


def sync_frame(ranges: list[object], topic: bytes = T, opened: object = True) -> bytes:
    return frame(S, [topic, opened, ranges])


MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "one byte": b"\x01",
    "header only": b"\x01\x02",
    "version 0": frame(G, [T], version=0),
    "version 2": frame(G, [T], version=2),
    "type 0": frame(0, [T]),
    "type 15": frame(15, [T]),
    "type 255": frame(255, [T]),
    "too long": b"\x01\x04" + b"\x00" * wire.MAX_MESSAGE,
    "trailing byte": frame(G, [T]) + b"\x00",
    "truncated": frame(G, [T])[:-1],
    "body not an array": frame(G, T),
    "body is nil": frame(G, None),
    "map body": b"\x01\x02" + msgpack.packb({"t": T}),
    "string field": frame(G, ["x" * 32]),
    "float field": frame(P, [T, 1.5]),
    "extension type": b"\x01\x02\x91" + msgpack.packb(msgpack.ExtType(1, b"x" * 32)),
    "non-canonical int": b"\x01\x0d\x91\xcd\x00\x01",
    "non-canonical array header": b"\x01\x02\xdc\x00\x01" + codec.pack(T),
    "non-canonical bin header": b"\x01\x02\x91\xc5\x00\x20" + T,
    "hello wrong arity": frame(H, [1]),
    "hello flags bool": frame(H, [True, []]),
    "hello flags 2": frame(H, [2, []]),
    "hello proof short": frame(H, [1, [b"\x00" * 15]]),
    "hello proof not bytes": frame(H, [1, [7]]),
    "hello too many proofs": frame(H, [0, [b"\x00" * 16] * (wire.MAX_PROOFS + 1)]),
    "hello proofs not array": frame(H, [0, b"\x00" * 16]),
    "graft short topic": frame(G, [T[:31]]),
    "graft long topic": frame(G, [T + b"\x00"]),
    "graft no topic": frame(G, []),
    "prune negative backoff": frame(P, [T, -1]),
    "prune huge backoff": frame(P, [T, wire.MAX_BACKOFF + 1]),
    "prune missing backoff": frame(P, [T]),
    "bulletins empty": frame(B, [[]]),
    "bulletins too small": frame(B, [[b"\x00" * 64]]),
    "bulletins not bytes": frame(B, [[1]]),
    "bulletins too many": frame(B, [[RAW] * (wire.MAX_BATCH + 1)]),
    "bulletin over 64 KiB": frame(B, [[b"\x00" * 65537]]),
    "bulletins not a list": frame(B, [RAW]),
    "announce no ids": frame(A, [T, []]),
    "announce short id": frame(A, [T, [b"\x00" * 31]]),
    "announce too many": frame(A, [T, [bytes(ID1)] * (wire.MAX_ANNOUNCE + 1)]),
    "want no ids": frame(W, [T, []]),
    "want too many": frame(W, [T, [bytes(ID1)] * (wire.MAX_WANT + 1)]),
    "want bad topic": frame(W, [b"", [bytes(ID1)]]),
    "sync wrong arity": frame(S, [T, True]),
    "sync opened not bool": sync_frame([], opened=1),
    "sync ranges not array": frame(S, [T, True, b""]),
    "sync range wrong arity": sync_frame([[0, b"", 1]]),
    "sync range not array": sync_frame([b"range"]),
    "sync bad mode": sync_frame([[0, b"", 4, None]]),
    "sync mode bool": sync_frame([[0, b"", True, FP]]),
    "sync negative delta": sync_frame([[-1, b"", 1, FP]]),
    "sync delta not int": sync_frame([[b"\x01", b"", 1, FP]]),
    "sync prefix too long": sync_frame([[5, b"\x00" * 33, 1, FP]]),
    "sync prefix not bytes": sync_frame([[5, 7, 1, FP]]),
    "sync infinity with prefix": sync_frame([[0, b"\x01", 1, FP]]),
    "sync timestamp overflow": sync_frame([[2**40 + 1, b"", 1, FP]]),
    "sync timestamp overflow by sum": sync_frame([[2**39, b"", 1, FP], [2**39 + 2, b"", 1, FP]]),
    "sync fingerprint short": sync_frame([[0, b"", 1, FP[:15]]]),
    "sync fingerprint missing": sync_frame([[0, b"", 1, None]]),
    "sync skip with payload": sync_frame([[5, b"", 0, FP], [0, b"", 1, FP]]),
    "sync idlist not array": sync_frame([[0, b"", 2, bytes(ID1)]]),
    "sync idlist short id": sync_frame([[0, b"", 2, [b"\x01" * 31]]]),
    "sync diff empty": sync_frame([[0, b"", 3, []]]),
    "sync bounds equal": sync_frame([[5, b"", 1, FP], [1, b"", 1, FP]]),
    "sync bounds decrease": sync_frame([[5, b"\x02", 1, FP], [1, b"\x01", 1, FP]]),
    "sync range after infinity": sync_frame([[0, b"", 1, FP], [0, b"", 1, FP]]),
    "sync trailing skip": sync_frame([[5, b"", 1, FP], [0, b"", 0, None]]),
    "sync consecutive skips": sync_frame(
        [[5, b"", 0, None], [1, b"\x01", 0, None], [0, b"", 1, FP]]
    ),
    "sync too many ranges": sync_frame(
        [[1, b"", 1, FP]] + [[2, b"", 1, FP]] * wire.MAX_SYNC_RANGES
    ),
    "sync too many ids": sync_frame(
        [[5, b"", 2, [bytes(ID1)] * 1000], [0, b"", 2, [bytes(ID2)] * 25]]
    ),
    "deposit short recipient": frame(D, [b"\x00" * 31, [RAW]]),
    "deposit nothing": frame(D, [b"\x00" * 32, []]),
    "deposit too many": frame(D, [b"\x00" * 32, [RAW] * (wire.MAX_DEPOSIT + 1)]),
    "deposit ack too many": frame(DA, [[bytes(ID1)] * (wire.MAX_DEPOSIT + 1), []]),
    "deposit ack not lists": frame(DA, [bytes(ID1), []]),
    "mail request zero": frame(MR, [0]),
    "mail request too many": frame(MR, [wire.MAX_MAIL + 1]),
    "mail request not int": frame(MR, [None]),
    "mail more not bool": frame(M, [[RAW], 1]),
    "mail too many": frame(M, [[RAW] * (wire.MAX_MAIL + 1), False]),
    "mail ack empty": frame(MA, [[]]),
    "ping negative": frame(PI, [-1]),
    "ping not int": frame(PI, [b"\x00"]),
    "ping bool": frame(PI, [False]),
    "pong missing nonce": frame(PO, []),
    "nested too deep": frame(PI, [[[[[[[[1]]]]]]]]),
    "array over the decoder bound": frame(PI, [list(range(wire.MAX_SYNC_IDS + 1))]),
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        wire.decode(data)


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(MalformedMessage):
        wire.decode("text")  # type: ignore[arg-type]  # deliberately ill-typed


def test_malformed_is_a_remote_protocol_error() -> None:
    from meshnode.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):
        wire.decode(b"\x01\x02\xc1")


# -- local construction is checked too --------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hello(public=1, proofs=()),  # type: ignore[arg-type]  # deliberately ill-typed
        lambda: Hello(public=True, proofs=[b"\x00" * 16]),  # type: ignore[arg-type]  # deliberately ill-typed
        lambda: Graft(topic=Topic(b"short")),
        lambda: Prune(topic=TOPIC, backoff=wire.MAX_BACKOFF + 1),
        lambda: Bulletins(raws=()),
        lambda: Announce(topic=TOPIC, ids=()),
        lambda: Want(topic=TOPIC, ids=(BulletinId(b"x"),)),
        lambda: SyncRange(upper=b"\x00" * 7, mode=RangeMode.SKIP),
        lambda: SyncRange(upper=None, mode=RangeMode.SKIP),  # type: ignore[arg-type]  # deliberately ill-typed
        lambda: SyncRange(upper=INFINITY, mode=RangeMode.SKIP, fingerprint=FP),
        lambda: SyncRange(upper=INFINITY, mode=RangeMode.SKIP, ids=(ID1,)),
        lambda: SyncRange(upper=INFINITY, mode=RangeMode.FINGERPRINT),
        lambda: SyncRange(upper=INFINITY, mode=RangeMode.FINGERPRINT, fingerprint=FP, ids=(ID1,)),
        lambda: SyncRange(upper=INFINITY, mode=RangeMode.DIFF, ids=()),
        lambda: SyncRange(upper=INFINITY, mode=3, ids=(ID1,)),  # type: ignore[arg-type]  # deliberately ill-typed
        lambda: SyncRange(upper=(2**40).to_bytes(8, "big"), mode=RangeMode.IDLIST),
        lambda: Sync(topic=TOPIC, opened_by_sender=True, ranges=[]),  # type: ignore[arg-type]  # deliberately ill-typed
        lambda: Sync(
            topic=TOPIC,
            opened_by_sender=True,
            ranges=(SyncRange(upper=INFINITY, mode=RangeMode.SKIP),),
        ),
        lambda: Deposit(recipient=b"x", raws=(RAW,)),
        lambda: MailRequest(limit=0),
        lambda: Mail(raws=(), more=None),  # type: ignore[arg-type]  # deliberately ill-typed
        lambda: MailAck(ids=()),
        lambda: Ping(nonce=2**64),
        lambda: Pong(nonce=-1),
        lambda: Redeem(token=ID1, proof=b"short"),
        lambda: Redeemed(verdict=Verdict.REVOKED, part=b"secret", more=False),
        lambda: wire.make_bound(-1),
        lambda: wire.make_bound(2**40),
        lambda: wire.make_bound(5, b"\x00" * 33),
    ],
)
def test_invalid_construction_is_refused(build: object) -> None:
    assert callable(build)
    with pytest.raises(LocalProtocolError):
        build()


def test_bounds_order_like_items() -> None:
    item = (5).to_bytes(8, "big") + b"\x10" * 32
    assert wire.make_bound(5) < item < wire.make_bound(6) < INFINITY
    assert wire.make_bound(5, b"\x10") <= item < wire.make_bound(5, b"\x11")
    assert wire.bound_timestamp(wire.make_bound(1234, b"\x01")) == 1234
    assert wire.bound_timestamp(INFINITY) is None


# -- membership proofs ------------------------------------------------------------


def test_membership_proofs_are_bound_to_session_and_sender() -> None:
    key = wire.member_key(b"\x42" * 32)
    a, b = b"\x0a" * 32, b"\x0b" * 32
    proof = wire.membership_proof(key, b"session-1", a)
    assert len(proof) == wire.PROOF_SIZE
    assert proof == wire.membership_proof(key, b"session-1", a)
    assert proof != wire.membership_proof(key, b"session-2", a)
    assert proof != wire.membership_proof(key, b"session-1", b)
    assert proof != wire.membership_proof(wire.member_key(b"\x43" * 32), b"session-1", a)
    assert key != b"\x42" * 32


def _spec_values() -> dict[str, str]:
    text = SPEC.read_text(encoding="utf-8")
    return dict(re.findall(r"^- ([a-z0-9-]+): `([0-9a-f]*)`$", text, flags=re.MULTILINE))


def test_spec_worked_example() -> None:
    v = _spec_values()
    key = wire.member_key(bytes.fromhex(v["epoch-secret"]))
    assert key.hex() == v["member-key"]
    proof = wire.membership_proof(key, bytes.fromhex(v["session-id"]), bytes.fromhex(v["sender"]))
    assert proof.hex() == v["member-proof"]
    graft = wire.encode(Graft(topic=Topic(bytes.fromhex(v["topic"]))))
    assert graft.hex() == v["graft-message"]
    sync = wire.decode(bytes.fromhex(v["sync-message"]))
    assert isinstance(sync, Sync)
    assert wire.encode(sync).hex() == v["sync-message"]
