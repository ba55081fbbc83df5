"""meshnode's session: the XXpsk0 handshake with identity payloads, and the record machine.

Core only (no trio): a pair helper wires two machines back to back, and
hypothesis flips and truncates the three XXpsk0 messages. The Noise engine
beneath is checked against the published vectors in ``test_noise.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import codec
from meshnode.core.noise import MAX_NONCE, HandshakePhase, HandshakeState, KeyPair
from meshnode.core.session import (
    IDENTITY_LABEL,
    MAX_FRAGMENT,
    MAX_HANDSHAKE_RECORD,
    NEED_DATA,
    OPEN_MESH_KEY,
    PROLOGUE,
    PROTOCOL_NAME,
    HandshakeComplete,
    KeepaliveReceived,
    MeshHandshake,
    MessageReceived,
    RecordType,
    SessionMachine,
    SessionState,
    identity_payload,
    verify_identity_payload,
)
from meshnode.errors import (
    HandshakeError,
    LocalProtocolError,
    NonceExhausted,
    RemoteProtocolError,
)
from tests.conftest import make_identity, seeded_rng

if TYPE_CHECKING:
    from meshnode.core.identity import Identity

OTHER_KEY = hashlib.blake2b(b"a private mesh", digest_size=32).digest()


ALICE, BOB, CAROL = make_identity("alice"), make_identity("bob"), make_identity("carol")


# ---------------------------------------------------------------------------
# The meshnode handshake
# ---------------------------------------------------------------------------


def _mesh_pair(
    initiator_key: bytes = OPEN_MESH_KEY, responder_key: bytes = OPEN_MESH_KEY
) -> tuple[MeshHandshake, MeshHandshake]:
    return (
        MeshHandshake(ALICE, initiator=True, rng=seeded_rng("alice"), network_key=initiator_key),
        MeshHandshake(BOB, initiator=False, rng=seeded_rng("bob"), network_key=responder_key),
    )


def _messages() -> list[bytes]:
    """The three messages of a handshake between ALICE and BOB (deterministic rngs)."""
    initiator, responder = _mesh_pair()
    m1 = initiator.write_message()
    responder.read_message(m1)
    m2 = responder.write_message()
    initiator.read_message(m2)
    m3 = initiator.write_message()
    responder.read_message(m3)
    return [m1, m2, m3]


MESSAGES = _messages()


def _replay_until(index: int) -> tuple[MeshHandshake, MeshHandshake]:
    """A fresh pair that has exchanged the messages before ``index``; the reader is next."""
    initiator, responder = _mesh_pair()
    sides = [(initiator, responder), (responder, initiator), (initiator, responder)]
    for writer, reader in sides[:index]:
        reader.read_message(writer.write_message())
    writer, reader = sides[index]
    assert writer.write_message() == MESSAGES[index]  # the rngs replay the same run
    return writer, reader


def test_the_handshake_proves_both_identities() -> None:
    initiator, responder = _mesh_pair()
    m1 = initiator.write_message()
    assert len(m1) == 48  # e, and the tag of an empty payload: psk0 authenticates message 1
    responder.read_message(m1)
    initiator.read_message(responder.write_message())
    responder.read_message(initiator.write_message())
    mine, theirs = initiator.result(), responder.result()
    assert mine.peer_key == BOB.public_key
    assert theirs.peer_key == ALICE.public_key
    assert mine.handshake_hash == theirs.handshake_hash
    assert theirs.receive.decrypt_with_ad(b"", mine.send.encrypt_with_ad(b"", b"hi")) == b"hi"
    assert mine.receive.decrypt_with_ad(b"", theirs.send.encrypt_with_ad(b"", b"yo")) == b"yo"


def test_the_open_mesh_key_is_the_published_value() -> None:
    assert hashlib.blake2b(b"meshnode/v1/open-mesh", digest_size=32).digest() == OPEN_MESH_KEY
    assert OPEN_MESH_KEY.hex() == (
        "374ad0905e24ac3c1ebe24109bd5c517b0989c50ac0fec9796e8f42bcd121bf7"
    )
    spec = (Path(__file__).resolve().parents[2] / "docs" / "spec" / "session.md").read_text()
    assert OPEN_MESH_KEY.hex() in spec
    assert PROTOCOL_NAME in spec
    assert PROLOGUE.decode() in spec
    assert IDENTITY_LABEL.decode() in spec


def test_a_wrong_network_key_fails_at_message_1_on_the_responder() -> None:
    initiator, responder = _mesh_pair(initiator_key=OTHER_KEY)
    with pytest.raises(HandshakeError, match="network key"):
        responder.read_message(initiator.write_message())
    assert responder.phase is HandshakePhase.ERROR
    with pytest.raises(HandshakeError, match="already failed"):
        responder.write_message()


def test_a_network_key_is_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MeshHandshake(ALICE, initiator=True, rng=seeded_rng("a"), network_key=b"short")


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 2), data=st.data())
def test_any_bit_flip_aborts_the_handshake(index: int, data: st.DataObject) -> None:
    bit = data.draw(st.integers(0, len(MESSAGES[index]) * 8 - 1), label="bit")
    _writer, reader = _replay_until(index)
    tampered = bytearray(MESSAGES[index])
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(HandshakeError):
        reader.read_message(bytes(tampered))
    assert reader.phase is HandshakePhase.ERROR
    with pytest.raises(HandshakeError):  # nothing further is produced
        reader.write_message()


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 2), data=st.data())
def test_any_truncation_aborts_the_handshake(index: int, data: st.DataObject) -> None:
    length = data.draw(st.integers(0, len(MESSAGES[index]) - 1), label="length")
    _writer, reader = _replay_until(index)
    with pytest.raises(HandshakeError):
        reader.read_message(MESSAGES[index][:length])
    assert reader.phase is HandshakePhase.ERROR
    with pytest.raises(HandshakeError):
        reader.write_message()


def _responder_presenting(payload_for: Identity, static: Identity) -> HandshakeState:
    """A hand-driven responder whose Noise static key is ``static``'s."""
    return HandshakeState(
        PROTOCOL_NAME,
        initiator=False,
        prologue=PROLOGUE,
        static=KeyPair(static.x25519_secret, static.x25519_public),
        psks=[OPEN_MESH_KEY],
        rng=seeded_rng(payload_for.name),
    )


def test_someone_elses_ed25519_key_in_the_payload_fails() -> None:
    """Mallory (BOB's static key) claims CAROL's Ed25519 key with CAROL's own signature."""
    initiator = MeshHandshake(ALICE, initiator=True, rng=seeded_rng("alice"))
    mallory = _responder_presenting(CAROL, static=BOB)
    mallory.read_message(initiator.write_message())
    claimed = identity_payload(CAROL, mallory.handshake_hash)
    with pytest.raises(HandshakeError, match="does not match"):
        initiator.read_message(mallory.write_message(claimed))
    with pytest.raises(HandshakeError):
        initiator.write_message()


def test_a_signature_over_another_transcript_fails() -> None:
    initiator = MeshHandshake(ALICE, initiator=True, rng=seeded_rng("alice"))
    responder = _responder_presenting(BOB, static=BOB)
    responder.read_message(initiator.write_message())
    replayed = identity_payload(BOB, bytes(64))  # signed for some other session
    with pytest.raises(HandshakeError, match="signature"):
        initiator.read_message(responder.write_message(replayed))


def test_the_initiators_identity_is_checked_too() -> None:
    initiator = HandshakeState(
        PROTOCOL_NAME,
        initiator=True,
        prologue=PROLOGUE,
        static=KeyPair(ALICE.x25519_secret, ALICE.x25519_public),
        psks=[OPEN_MESH_KEY],
        rng=seeded_rng("alice"),
    )
    responder = MeshHandshake(BOB, initiator=False, rng=seeded_rng("bob"))
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    claimed = identity_payload(CAROL, initiator.handshake_hash)
    with pytest.raises(HandshakeError, match="does not match"):
        responder.read_message(initiator.write_message(claimed))
    with pytest.raises(LocalProtocolError, match="not finished"):
        responder.result()


def test_message_1_must_be_empty() -> None:
    initiator = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=PROLOGUE,
        static=KeyPair(ALICE.x25519_secret, ALICE.x25519_public),
        psks=[OPEN_MESH_KEY], rng=seeded_rng("alice"),
    )  # fmt: skip
    responder = MeshHandshake(BOB, initiator=False, rng=seeded_rng("bob"))
    with pytest.raises(HandshakeError, match="payload"):
        responder.read_message(initiator.write_message(b"hello"))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xc1", "malformed"),
        (codec.pack([1, b"k"]), "malformed"),
        (codec.pack(["1", b"k", b"s"]), "malformed"),
        (codec.pack([1, "k", b"s"]), "malformed"),
        (codec.pack([1, 5, b"s"]), "malformed"),
        (codec.pack([2, bytes(32), bytes(64)]), "version 2"),
        (codec.pack([1, bytes(31), bytes(64)]), "signature"),
        (codec.pack([1, BOB.public_key, bytes(64)]), "signature"),
        (bytes(200), "malformed"),
    ],
)
def test_malformed_identity_payloads_fail(payload: bytes, match: str) -> None:
    with pytest.raises(HandshakeError, match=match):
        verify_identity_payload(payload, BOB.x25519_public, bytes(64))


def test_a_good_identity_payload_verifies() -> None:
    h = bytes(range(64))
    assert verify_identity_payload(identity_payload(BOB, h), BOB.x25519_public, h) == (
        BOB.public_key
    )


# ---------------------------------------------------------------------------
# The session machine
# ---------------------------------------------------------------------------


@dataclass
class Pair:
    """Two SessionMachines back to back; ``pump`` moves bytes until both are idle."""

    a: SessionMachine
    b: SessionMachine

    def pump(self) -> tuple[list[object], list[object]]:
        events: tuple[list[object], list[object]] = ([], [])
        moving = True
        while moving:
            moving = False
            for me, other, log in ((self.a, self.b, events[1]), (self.b, self.a, events[0])):
                data = me.data_to_send()
                if data:
                    moving = True
                    other.receive_data(data)
                while (event := other.next_event()) is not NEED_DATA:
                    log.append(event)
        return events


def _session_pair(
    *, max_message: int = 70_000, rekey_after: int = 1000, b_max: int | None = None
) -> Pair:
    a = SessionMachine(ALICE, initiator=True, rng=seeded_rng("a"), max_message=max_message,
                       rekey_after=rekey_after)  # fmt: skip
    b = SessionMachine(BOB, initiator=False, rng=seeded_rng("b"), max_message=b_max or max_message,
                       rekey_after=rekey_after)  # fmt: skip
    return Pair(a, b)


def _open_pair(**kwargs: int) -> Pair:
    pair = _session_pair(**kwargs)
    at_a, at_b = pair.pump()
    assert [type(e) for e in at_a] == [HandshakeComplete]
    assert [type(e) for e in at_b] == [HandshakeComplete]
    return pair


def test_sessions_open_and_carry_messages_both_ways() -> None:
    pair = _session_pair()
    assert pair.a.state is SessionState.HANDSHAKE
    at_a, at_b = pair.pump()
    assert pair.a.keys is not None
    session_id = pair.a.keys.handshake_hash
    assert at_a == [HandshakeComplete(BOB.public_key, session_id)]
    assert at_b == [HandshakeComplete(ALICE.public_key, session_id)]
    assert pair.a.state is pair.b.state is SessionState.OPEN
    pair.a.send(b"hello")
    pair.b.send(b"")
    pair.b.send(b"world")
    at_a, at_b = pair.pump()
    assert at_b == [MessageReceived(b"hello")]
    assert at_a == [MessageReceived(b""), MessageReceived(b"world")]
    assert pair.a.keys is not None
    assert pair.a.keys.peer_key == BOB.public_key


def test_a_large_message_is_fragmented_and_reassembled() -> None:
    pair = _open_pair(max_message=3 * MAX_FRAGMENT + 5)
    big = (bytes(range(256)) * 800)[: 3 * MAX_FRAGMENT + 5]
    pair.a.send(big)
    wire = pair.a.data_to_send()
    assert len(wire) == len(big) + 4 * (2 + 16 + 1)  # four records: 3 fragments, 1 message
    pair.b.receive_data(wire)
    assert pair.b.next_event() == MessageReceived(big)
    assert pair.b.next_event() is NEED_DATA


def test_an_exact_multiple_of_the_fragment_size_ends_with_an_empty_message_record() -> None:
    pair = _open_pair(max_message=2 * MAX_FRAGMENT)
    pair.a.send(bytes(2 * MAX_FRAGMENT))
    assert pair.pump()[1] == [MessageReceived(bytes(2 * MAX_FRAGMENT))]


def test_oversize_messages_are_refused_on_both_ends() -> None:
    pair = _open_pair(max_message=100, b_max=50)
    with pytest.raises(LocalProtocolError, match="at most 100"):
        pair.a.send(bytes(101))
    pair.a.send(bytes(51))
    pair.b.receive_data(pair.a.data_to_send())
    with pytest.raises(RemoteProtocolError, match="50-byte limit"):
        pair.b.next_event()
    assert pair.b.state is SessionState.ERROR
    with pytest.raises(LocalProtocolError, match="failed"):
        pair.b.next_event()
    with pytest.raises(LocalProtocolError, match="failed"):
        pair.b.receive_data(b"more")
    with pytest.raises(LocalProtocolError, match="cannot send"):
        pair.b.send(b"x")
    assert pair.b.data_to_send() == b""


def test_keepalives_are_events() -> None:
    pair = _open_pair()
    pair.a.send_keepalive()
    assert pair.pump()[1] == [KeepaliveReceived()]
    stats = pair.b.statistics()
    assert stats.keepalives_received == 1
    assert pair.a.statistics().keepalives_sent == 1


def test_rekeying_after_n_records_keeps_the_session_working() -> None:
    pair = _open_pair(rekey_after=2)
    for n in range(7):
        pair.a.send(b"ping %d" % n)
        pair.b.send(b"pong %d" % n)
    at_a, at_b = pair.pump()
    assert at_b == [MessageReceived(b"ping %d" % n) for n in range(7)]
    assert at_a == [MessageReceived(b"pong %d" % n) for n in range(7)]
    assert pair.a.statistics().rekeys_sent == 3
    assert pair.b.statistics().rekeys_received == 3
    assert pair.b.statistics().messages_received == 7


def test_a_tampered_record_fails_the_session() -> None:
    pair = _open_pair()
    pair.a.send(b"secret")
    wire = bytearray(pair.a.data_to_send())
    wire[5] ^= 0x01
    pair.b.receive_data(bytes(wire))
    with pytest.raises(RemoteProtocolError, match="did not decrypt"):
        pair.b.next_event()
    assert pair.b.state is SessionState.ERROR


def _inject(pair: Pair, plaintext: bytes) -> None:
    """Make A seal an arbitrary record plaintext, as a buggy or hostile peer would."""
    keys = pair.a.keys
    assert keys is not None
    record = keys.send.encrypt_with_ad(b"", plaintext)
    pair.b.receive_data(len(record).to_bytes(2, "big") + record)


@pytest.mark.parametrize(
    ("plaintext", "match"),
    [
        (b"", "type byte"),
        (bytes([9]), "unknown type"),
        (bytes([RecordType.KEEPALIVE]) + b"x", "with a body"),
        (bytes([RecordType.REKEY]) + b"x", "with a body"),
        (bytes([RecordType.FRAGMENT]) + b"short", "shorter"),
    ],
)
def test_malformed_records_fail_the_session(plaintext: bytes, match: str) -> None:
    pair = _open_pair()
    _inject(pair, plaintext)
    with pytest.raises(RemoteProtocolError, match=match):
        pair.b.next_event()
    assert pair.b.state is SessionState.ERROR


def test_a_wrong_network_key_leaves_the_responder_silent() -> None:
    a = SessionMachine(ALICE, initiator=True, rng=seeded_rng("a"), max_message=100, rekey_after=10,
                       network_key=OTHER_KEY)  # fmt: skip
    b = SessionMachine(BOB, initiator=False, rng=seeded_rng("b"), max_message=100, rekey_after=10)
    assert b.data_to_send() == b""
    b.receive_data(a.data_to_send())
    with pytest.raises(HandshakeError, match="network key"):
        b.next_event()
    assert b.data_to_send() == b""
    assert b.state is SessionState.ERROR


def test_a_long_handshake_record_is_refused_from_its_length_alone() -> None:
    b = SessionMachine(BOB, initiator=False, rng=seeded_rng("b"), max_message=100, rekey_after=10)
    b.receive_data((MAX_HANDSHAKE_RECORD + 1).to_bytes(2, "big"))
    with pytest.raises(HandshakeError, match="longer than"):
        b.next_event()


def test_partial_records_wait_for_more_data() -> None:
    a = SessionMachine(ALICE, initiator=True, rng=seeded_rng("a"), max_message=100, rekey_after=10)
    b = SessionMachine(BOB, initiator=False, rng=seeded_rng("b"), max_message=100, rekey_after=10)
    message_1 = a.data_to_send()
    for byte in message_1[:-1]:
        b.receive_data(bytes([byte]))
        assert b.next_event() is NEED_DATA
    assert b.data_to_send() == b""
    b.receive_data(message_1[-1:])
    assert b.next_event() is NEED_DATA
    assert len(b.data_to_send()) == 2 + 198  # message 2 went out


def test_sending_before_the_handshake_is_local_misuse() -> None:
    a = SessionMachine(ALICE, initiator=True, rng=seeded_rng("a"), max_message=100, rekey_after=10)
    with pytest.raises(LocalProtocolError, match="handshaking"):
        a.send(b"too soon")
    with pytest.raises(LocalProtocolError, match="handshaking"):
        a.send_keepalive()
    with pytest.raises(ValueError, match="rekey_after"):
        SessionMachine(ALICE, initiator=True, rng=seeded_rng("a"), max_message=100, rekey_after=0)


def test_nonce_exhaustion_fails_the_session() -> None:
    pair = _open_pair()
    keys = pair.a.keys
    assert keys is not None
    keys.send.set_nonce(MAX_NONCE)
    with pytest.raises(NonceExhausted):
        pair.a.send(b"x")
    assert pair.a.state is SessionState.ERROR
    pair = _open_pair()
    keys = pair.a.keys
    assert keys is not None
    keys.send.set_nonce(MAX_NONCE)
    with pytest.raises(NonceExhausted):
        pair.a.send_keepalive()
