"""The decoders under fuzz: valid seeds for each, and the only errors each may raise.

A target's ``check`` takes the input bytes and calls the decoder; it returns
normally (accepted) or raises one of ``expected`` (rejected). Anything else is
a crash. Seeds are built from real objects (signed bulletins, operations,
invites, handshake messages...), deterministically, so that a seed and a
count replay the same inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from kademlia.node import Node

from meshnode import config, control
from meshnode.core import codec, crypto, records, textcode, wire
from meshnode.core.bulletin import SIGN_LABEL, Bulletin, Kind
from meshnode.core.channel import INVITE_PREFIX as CHANNEL_INVITE_PREFIX
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity, parse_key
from meshnode.core.invite import INVITE_PREFIX as CODE_PREFIX
from meshnode.core.invite import INVITE_SIGN_LABEL, Grant, make_code, parse_code
from meshnode.core.membership import KeyUpdate
from meshnode.core.operation import OpType, decode_op, epoch_id, sign_op
from meshnode.core.session import MeshHandshake
from meshnode.errors import (
    ConfigError,
    HandshakeError,
    InvalidBulletin,
    InvalidInvite,
    InvalidKey,
    InvalidOperation,
    InvalidRecord,
    KeyfileError,
    MalformedMessage,
    MeshError,
    NotARecipient,
    WrongChannel,
)
from meshnode.net import dht
from meshnode.net.dht.config import _Counters
from meshnode.net.dht.protocol import _HardenedProtocol
from meshnode.net.dht.storage import _RecordStorage

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

NOW = 1_700_000_000
CHEAP_KDF = {"opslimit": 1, "memlimit": 8192}
"""The cheapest Argon2id parameters a keyfile may carry (tests/unit/test_identity.py)."""


def _identity(name: str) -> Identity:
    return Identity.from_seed(hashlib.blake2b(name.encode(), digest_size=32).digest(), name)


def _rng(seed: str) -> crypto.Rng:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            counter += 1
            out += hashlib.blake2b(counter.to_bytes(8, "big"), key=seed.encode()).digest()
        return out[:n]

    return rng


ALICE, BOB = _identity("alice"), _identity("bob")
CHANNEL = Channel.from_secret("strike", hashlib.blake2b(b"channel", digest_size=32).digest())


@dataclass
class Target:
    """One decoder: how to build valid inputs, how to call it, what it may raise."""

    name: str
    seeds: Callable[[], list[bytes]]
    check: Callable[[bytes], object]
    expected: tuple[type[BaseException], ...]
    tokens: Sequence[bytes] = field(default_factory=tuple)
    note: str = ""


# --- bulletins -----------------------------------------------------------------------


def _bulletins() -> list[Bulletin]:
    rng = _rng("bulletins")
    made = [
        Bulletin.seal(ALICE, None, b"hello", seq=1, prev=None, now=NOW, rng=rng),
        Bulletin.seal(ALICE, CHANNEL, b"to the channel", seq=2, prev=b"\x01" * 32, now=NOW,
                      rng=rng),
        Bulletin.seal(ALICE, [BOB.public_key, ALICE.public_key], b"direct", seq=3,
                      prev=b"\x02" * 32, now=NOW, rng=rng, expires_at=NOW + 3600),
        Bulletin.seal(ALICE, None, b"", seq=4, prev=b"\x01" * 32, now=NOW, rng=rng,
                      kind=Kind.ENDORSEMENT, endorses=BOB.public_key),
    ]  # fmt: skip
    made.append(
        Bulletin.seal(BOB, CHANNEL, b"re", seq=1, prev=None, now=NOW, rng=rng,
                      reply_to=made[1].id)
    )  # fmt: skip
    return made


def _check_bulletin(data: bytes) -> object:
    return Bulletin.from_bytes(data)


def _signed_bulletin_seeds() -> list[bytes]:
    return [b.raw[: -crypto.SIGNATURE_SIZE] for b in _bulletins()]


def _check_signed_bulletin(body: bytes) -> object:
    """The body signed again by ALICE, so mutations get past the signature and
    into the payload checks and ``open``."""
    bulletin = Bulletin.from_bytes(body + ALICE.sign(SIGN_LABEL + body))
    for key in (CHANNEL, ALICE, BOB, None):
        with contextlib.suppress(WrongChannel, NotARecipient):
            bulletin.open(key)
    return bulletin


# --- invites, grants, keys, keyfiles ----------------------------------------------------


def _grant() -> Grant:
    return Grant(channel=CHANNEL, root=b"\x03" * 32, ops=(b"op", b"\x07" * 100))


def _code_bodies() -> list[bytes]:
    codes = [
        make_code(ALICE, channel=CHANNEL, token_seed=b"\x05" * 32, addresses=["203.0.113.5:7000"],
                  now=NOW, expires_at=NOW + 86400),
        make_code(ALICE, channel=CHANNEL, token_seed=b"\x06" * 32, addresses=[], now=NOW,
                  expires_at=NOW + 60, grant=_grant()),
    ]  # fmt: skip
    return [textcode.decode(CODE_PREFIX, c, max_size=1 << 16) for c in codes]


def _code_text_seeds() -> list[bytes]:
    return [textcode.encode(CODE_PREFIX, body).encode() for body in _code_bodies()]


def _check_code_text(data: bytes) -> object:
    return parse_code(data.decode("utf-8", "replace"), now=NOW + 10)


def _code_body_seeds() -> list[bytes]:
    return [body[: -crypto.SIGNATURE_SIZE] for body in _code_bodies()]


def _check_code_body(body: bytes) -> object:
    signed = body + ALICE.sign(INVITE_SIGN_LABEL + body)
    return parse_code(textcode.encode(CODE_PREFIX, signed), now=NOW + 10)


def _channel_invite_seeds() -> list[bytes]:
    return [
        CHANNEL.make_invite(ALICE, now=NOW).encode(),
        CHANNEL.make_invite(ALICE, now=NOW, expires_at=NOW + 60,
                            bootstrap=["198.51.100.1:7000", "[2001:db8::1]:7000"]).encode(),
        b"join us: " + CHANNEL.make_invite(ALICE, now=NOW).encode() + b" (by Friday)",
    ]  # fmt: skip


def _check_channel_invite(data: bytes) -> object:
    return Channel.parse_invite(data.decode("utf-8", "replace"), now=NOW + 10)


def _check_grant(data: bytes) -> object:
    return Grant.decode(data)


def _key_seeds() -> list[bytes]:
    return [ALICE.key_text.encode(), BOB.key_text.encode(), b"  " + ALICE.key_text.encode()]


def _check_key(data: bytes) -> object:
    return parse_key(data.decode("utf-8", "replace"))


def _keyfile_seeds() -> list[bytes]:
    rng = _rng("keyfiles")
    return [ALICE.to_keyfile(None, rng=rng), ALICE.to_keyfile("pw", rng=rng, **CHEAP_KDF)]


def _check_keyfile(data: bytes) -> object:
    """Parse without a passphrase; with one only when the file asks for the cheapest
    key derivation (a mutated cost would make one input take seconds)."""
    identity = None
    try:
        identity = Identity.from_keyfile(data, None)
    except KeyfileError:
        if Identity.keyfile_is_sealed(data) and _cheap_kdf(data):
            identity = Identity.from_keyfile(data, "pw")
        else:
            raise
    return identity


def _cheap_kdf(data: bytes) -> bool:
    doc = codec.unpack(data, max_size=4096, max_str=256, max_bin=256, max_array=8)
    assert isinstance(doc, list)
    return list(doc[3][1:3]) == [CHEAP_KDF["opslimit"], CHEAP_KDF["memlimit"]]


# --- membership -------------------------------------------------------------------------


def _op_seeds() -> list[bytes]:
    channel_id = CHANNEL.id
    e0 = epoch_id(b"\x01" * 32)
    root = sign_op(ALICE, channel_id, OpType.CREATE, seq=1, created_at=NOW, parents=(),
                   name="strike", epoch_id=e0)  # fmt: skip
    invite = sign_op(ALICE, channel_id, OpType.INVITE, seq=2, created_at=NOW + 1,
                     parents=(root.id,), token=b"\x02" * 32, expires_at=NOW + 3600,
                     for_group=None, with_history=True)  # fmt: skip
    add = sign_op(ALICE, channel_id, OpType.ADD, seq=3, created_at=NOW + 2, parents=(invite.id,),
                  key=BOB.public_key, token=b"\x02" * 32)  # fmt: skip
    revoke = sign_op(ALICE, channel_id, OpType.REVOKE, seq=4, created_at=NOW + 3,
                     parents=(add.id,), token=b"\x02" * 32)  # fmt: skip
    leave = sign_op(BOB, channel_id, OpType.LEAVE, seq=1, created_at=NOW + 4, parents=(add.id,))
    return [op.raw for op in (root, invite, add, revoke, leave)]


def _check_op(data: bytes) -> object:
    return decode_op(data)


def _key_update_seeds() -> list[bytes]:
    ops = tuple(_op_seeds())
    return [
        KeyUpdate(channel_id=CHANNEL.id, ops=ops[:2], secret=b"\x09" * 32).encode(),
        KeyUpdate(channel_id=CHANNEL.id, ops=ops[4:], secret=None).encode(),
    ]


def _check_key_update(data: bytes) -> object:
    update = KeyUpdate.decode(data)
    for raw in update.ops:
        with contextlib.suppress(InvalidOperation):
            decode_op(raw)
    return update


# --- wire -------------------------------------------------------------------------------


def _wire_seeds() -> list[bytes]:
    topic, id1, id2 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    raw = _bulletins()[0].raw
    bound = wire.make_bound(NOW)
    messages: list[wire.Message] = [
        wire.Hello(public=True, proofs=(b"\x11" * 16,)),
        wire.Graft(topic=topic),
        wire.Prune(topic=topic, backoff=60),
        wire.Bulletins(raws=(raw,)),
        wire.Announce(topic=topic, ids=(id1, id2)),
        wire.Want(topic=topic, ids=(id1,)),
        wire.Sync(topic=topic, opened_by_sender=False, ranges=(
            wire.SyncRange(upper=bound, mode=wire.RangeMode.SKIP),
            wire.SyncRange(upper=wire.make_bound(NOW + 1, b"\x80"),
                           mode=wire.RangeMode.FINGERPRINT, fingerprint=b"\x04" * 16),
            wire.SyncRange(upper=wire.make_bound(NOW + 2), mode=wire.RangeMode.IDLIST,
                           ids=(id1,)),
        )),
        wire.Deposit(recipient=b"\x05" * 32, raws=(raw,)),
        wire.DepositAck(stored=(id1,), refused=(id2,)),
        wire.MailRequest(limit=1),
        wire.Mail(raws=(raw,), more=True),
        wire.MailAck(ids=(id1,)),
        wire.Ping(nonce=7),
        wire.Pong(nonce=7),
        wire.Redeem(token=id1, proof=b"\x05" * 64),
        wire.Redeemed(verdict=wire.Verdict.GRANTED, part=b"grant", more=False),
    ]  # fmt: skip
    return [wire.encode(m) for m in messages]


def _check_wire(data: bytes) -> object:
    return wire.decode(data)


# --- noise ------------------------------------------------------------------------------


def _handshake_messages() -> list[bytes]:
    initiator = MeshHandshake(ALICE, initiator=True, rng=_rng("initiator"))
    responder = MeshHandshake(BOB, initiator=False, rng=_rng("responder"))
    one = initiator.write_message()
    responder.read_message(one)
    two = responder.write_message()
    initiator.read_message(two)
    three = initiator.write_message()
    responder.read_message(three)
    return [one, two, three]


def _noise_seeds() -> list[bytes]:
    return [bytes([i]) + m for i, m in enumerate(_handshake_messages())]


def _check_noise(data: bytes) -> object:
    """The first byte picks the message (1, 2 or 3) that the rest replaces; the
    side reading it has read and written the genuine messages before it."""
    if not data:
        raise HandshakeError("empty fuzz input")
    index, message = data[0] % 3, data[1:]
    initiator = MeshHandshake(ALICE, initiator=True, rng=_rng("initiator"))
    responder = MeshHandshake(BOB, initiator=False, rng=_rng("responder"))
    if index == 0:
        responder.read_message(message)
        return responder.write_message()
    responder.read_message(initiator.write_message())
    if index == 1:
        responder.write_message()
        initiator.read_message(message)
        return initiator.write_message()
    initiator.read_message(responder.write_message())
    initiator.write_message()
    responder.read_message(message)
    return responder.result()


# --- DHT --------------------------------------------------------------------------------


def _record_seeds() -> list[bytes]:
    contact = records.make_contact(ALICE, ["203.0.113.5:7000", "[2001:db8::5]:7000"], seq=3,
                                   now=NOW)  # fmt: skip
    other = records.make_contact(BOB, ["198.51.100.7:7001"], seq=1, now=NOW)
    rendezvous = records.make_rendezvous(b"\x0a" * 32, [contact, other], now=NOW)
    return [contact.encode(), other.encode(), rendezvous.encode()]


def _check_record(data: bytes) -> object:
    record = records.decode(data, NOW + 10)
    return records.validate(record.key, data, NOW + 10)


class _Transport(asyncio.DatagramTransport):
    """Where the protocol's answers go: counted, then dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def sendto(self, data: bytes, addr: object = None) -> None:  # type: ignore[override]
        self.sent += 1

    def is_closing(self) -> bool:
        return False


class _DatagramHarness:
    """One ``_HardenedProtocol`` on an asyncio loop that never runs: its receive path
    parses, dispatches and answers synchronously; background work it schedules
    (pings to verify a source, stores to new neighbours) is counted and closed
    unstarted, so no coroutine is left pending or never awaited."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        counters = _Counters()
        cfg = dht.DHTConfig(rate_per_source=1e12, rate_burst=1e12)
        storage = _RecordStorage(cfg, None, counters)
        node = Node(records.node_id(ALICE.public_key), "127.0.0.1", 7000)
        self.protocol = _HardenedProtocol(
            node, storage, loop=self.loop, config=cfg, sealer=None, counters=counters
        )
        self.protocol.transport = _Transport()
        self.protocol.spawn = self._drop
        self.counters = counters
        self.spawned = 0

    def _drop(self, coro: Coroutine[object, object, object]) -> None:
        self.spawned += 1
        coro.close()


_HARNESS: list[_DatagramHarness] = []


def _datagram_seeds() -> list[bytes]:
    msg_id = b"\x42" * (dht.HEADER_SIZE - 1)
    node_id = records.node_id(BOB.public_key)
    contact = _record_seeds()[0]
    key = records.contact_key(ALICE.public_key)
    requests = [
        ["ping", [node_id]],
        ["find_node", [node_id, key]],
        ["find_value", [node_id, key]],
        ["store", [node_id, key, contact]],
    ]
    out = [bytes([dht.REQUEST]) + msg_id + codec.pack(r) for r in requests]
    out.append(bytes([dht.RESPONSE]) + msg_id + codec.pack([True, node_id]))
    return out


def _check_datagram(data: bytes) -> object:
    """The receive path below its catch-all guard: it must drop, never raise."""
    if not _HARNESS:
        _HARNESS.append(_DatagramHarness())
    harness = _HARNESS[0]
    harness.protocol._receive(data, ("192.0.2.1", 4000))
    return None


# --- control and config -----------------------------------------------------------------


def _control_seeds() -> list[bytes]:
    values = [
        {name: None for name in (f.name for f in fields(cls))} | {"$type": kind}
        for kind, cls in control.RECORD_TYPES.items()
    ]
    messages = [
        control.request("status"),
        control.request("post", channel="strike", text="hello", tags=["a", "b"]),
        {"v": control.VERSION, "op": "show", "args": {"records": values[:4]}},
        {"v": control.VERSION, "op": "show", "args": {"records": values[4:]}},
    ]
    return [control.frame(m)[4:] for m in messages]


def _check_control(data: bytes) -> object:
    with contextlib.suppress(control.ControlProtocolError):  # the first bytes as a header
        control.frame_length(data[:4].ljust(4, b"\x00"))
    return control.parse_request(control.parse_frame(data))


_CONFIG_DIR: list[Path] = []


def _config_seeds() -> list[bytes]:
    full = config.render(config.Config())
    return [
        full.encode(),
        b'listen = "0.0.0.0:7000"\nannounce = "203.0.113.5:7000"\n'
        b'bootstrap = ["198.51.100.1:7000", "[2001:db8::1]:7000"]\nlog_format = "json"\n'
        b'log_level = "debug"\nnetwork_key_file = "mesh.key"\n'
        b"[limits]\nmax_peers = 12\n[timing]\nhandshake_timeout = 2.5\n",
        b"",
    ]


def _check_config(data: bytes) -> object:
    """The real entry point: the bytes written to a meshnode.toml, then ``load``."""
    if not _CONFIG_DIR:
        _CONFIG_DIR.append(Path(tempfile.mkdtemp(prefix="meshnode-fuzz-")))
    path = _CONFIG_DIR[0] / "meshnode.toml"
    path.write_bytes(data)
    return config.load(path)


CONFIG_TOKENS = [
    b"=", b"[", b"]", b'"', b"'", b"\n", b",", b".", b":", b"0", b"65535", b"65536", b"-1",
    b"1e400", b"inf", b"nan", b"true", b"\xc2\xb2", b"\xd9\xa1", b"9" * 5000, b"[limits]",
    b"[timing]", b"[[bootstrap]]", b"listen", b"announce", b"bootstrap", b"{}", b"[]",
    b"1979-05-27T07:32:00Z", b"0x7f",
]  # fmt: skip


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            "bulletin", lambda: [b.raw for b in _bulletins()], _check_bulletin, (InvalidBulletin,)
        ),
        Target(
            "bulletin-signed",
            _signed_bulletin_seeds,
            _check_signed_bulletin,
            (InvalidBulletin,),
            note="mutated bodies signed again, then opened",
        ),
        Target(
            "invite-code",
            _code_text_seeds,
            _check_code_text,
            (InvalidInvite,),
            tokens=[CODE_PREFIX.encode(), b" ", b"\n", b"-", b"0", b"=", b"\xc3\xa9"],
        ),
        Target(
            "invite-body",
            _code_body_seeds,
            _check_code_body,
            (InvalidInvite,),
            note="mutated bodies signed and encoded again",
        ),
        Target(
            "channel-invite",
            _channel_invite_seeds,
            _check_channel_invite,
            (InvalidInvite,),
            tokens=[CHANNEL_INVITE_PREFIX.encode(), b" ", b"\n", b"https://x/#"],
        ),
        Target("grant", lambda: [_grant().encode()], _check_grant, (InvalidInvite,)),
        Target("key-text", _key_seeds, _check_key, (InvalidKey,), tokens=[b"mk1", b" ", b"\n"]),
        Target(
            "keyfile",
            _keyfile_seeds,
            _check_keyfile,
            (KeyfileError,),
            note="Argon2id at opslimit 1, memlimit 8 KiB",
        ),
        Target("membership-op", _op_seeds, _check_op, (InvalidOperation,)),
        Target("key-update", _key_update_seeds, _check_key_update, (InvalidOperation,)),
        Target("wire", _wire_seeds, _check_wire, (MalformedMessage,)),
        Target(
            "noise",
            _noise_seeds,
            _check_noise,
            (HandshakeError,),
            note="messages 1, 2 and 3 of the XXpsk0 handshake",
        ),
        Target("dht-record", _record_seeds, _check_record, (InvalidRecord,)),
        Target(
            "dht-datagram",
            _datagram_seeds,
            _check_datagram,
            (),
            note="_HardenedProtocol._receive, no socket: drops, never raises",
        ),
        Target(
            "control", _control_seeds, _check_control, (control.ControlProtocolError, MeshError)
        ),
        Target(
            "config",
            _config_seeds,
            _check_config,
            (ConfigError,),
            tokens=CONFIG_TOKENS,
            note="meshnode.toml bytes through config.load",
        ),
    ]
}
