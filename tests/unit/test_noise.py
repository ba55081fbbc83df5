"""The Noise engine against every published vector, and its rules.

Vectors: every ``*.json`` in ``../shared/vectors/noise/`` is loaded, in both
field layouts of ``SOURCES.md`` (``protocol_name`` + ``init_psks``/``resp_psks``
lists, or the older ``name`` + ``init_psk``/``resp_psk``). Each vector whose
protocol the engine supports becomes one case, checked byte for byte:
handshake messages, the transport messages after them, and the handshake
hash. A folder that yields no supported vector fails the count test.

The rest checks the engine's rules (pattern table, modifiers, failures,
nonces, rekeying); meshnode's session on top of it is ``test_session.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshnode.core import crypto, noise
from meshnode.core.noise import (
    MAX_NONCE,
    PATTERNS,
    CipherState,
    HandshakePhase,
    HandshakeState,
    KeyPair,
    NoiseProtocol,
)
from meshnode.core.session import PROTOCOL_NAME
from meshnode.errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    NonceExhausted,
)
from tests.conftest import seeded_rng

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "noise"


# ---------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    """One vector in the newer layout, whichever layout its file used."""

    source: str
    protocol: str
    fields: dict[str, Any]

    def key(self, name: str) -> KeyPair | None:
        value = self.fields.get(name)
        return KeyPair.from_secret(bytes.fromhex(value)) if value else None

    def raw(self, name: str) -> bytes | None:
        value = self.fields.get(name)
        return bytes.fromhex(value) if value is not None else None

    def psks(self, side: str) -> list[bytes]:
        if f"{side}_psks" in self.fields:
            return [bytes.fromhex(p) for p in self.fields[f"{side}_psks"]]
        if self.fields.get(f"{side}_psk"):
            return [bytes.fromhex(self.fields[f"{side}_psk"])]
        return []


def _load() -> list[Vector]:
    out = []
    for path in sorted(VECTORS.glob("*.json")):
        for fields in json.loads(path.read_text())["vectors"]:
            protocol = fields.get("protocol_name") or fields["name"]
            out.append(Vector(path.name, protocol, fields))
    return out


def _supported(protocol: str) -> bool:
    try:
        NoiseProtocol.parse(protocol)
    except ValueError:
        return False
    return True


ALL_VECTORS = _load()
SUPPORTED = [v for v in ALL_VECTORS if _supported(v.protocol)]


def _side(vector: Vector, initiator: bool) -> HandshakeState:
    side = "init" if initiator else "resp"
    return HandshakeState(
        vector.protocol,
        initiator=initiator,
        prologue=vector.raw(f"{side}_prologue") or b"",
        static=vector.key(f"{side}_static"),
        remote_static=vector.raw(f"{side}_remote_static"),
        psks=vector.psks(side),
        ephemeral=vector.key(f"{side}_ephemeral"),
    )


def test_the_vector_folder_yields_supported_vectors() -> None:
    """Zero supported vectors is a failure (a moved folder must not pass quietly)."""
    names = {v.protocol for v in SUPPORTED}
    assert len(SUPPORTED) >= 1, f"no supported Noise vector in {VECTORS}"
    # XX and the psk0 vectors of other patterns together cover XXpsk0.
    assert "Noise_XX_25519_ChaChaPoly_BLAKE2b" in names
    assert any("psk0" in name for name in names)
    print(f"{len(SUPPORTED)} of {len(ALL_VECTORS)} Noise vectors supported and run")


@pytest.mark.parametrize("vector", SUPPORTED, ids=[f"{v.source}:{v.protocol}" for v in SUPPORTED])
def test_vector(vector: Vector) -> None:
    initiator, responder = _side(vector, True), _side(vector, False)
    handshake_length = len(initiator.protocol.pattern.messages)
    one_way = handshake_length == 1
    messages = vector.fields["messages"]
    assert len(messages) > handshake_length
    for index, message in enumerate(messages[:handshake_length]):
        payload, expected = bytes.fromhex(message["payload"]), bytes.fromhex(message["ciphertext"])
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        assert writer.write_message(payload) == expected
        assert reader.read_message(expected) == payload
    assert initiator.phase is responder.phase is HandshakePhase.DONE
    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in vector.fields:
        assert initiator.handshake_hash.hex() == vector.fields["handshake_hash"]
    i_send, i_receive = initiator.cipher_states()
    r_send, r_receive = responder.cipher_states()
    for index, message in enumerate(messages[handshake_length:], start=handshake_length):
        payload, expected = bytes.fromhex(message["payload"]), bytes.fromhex(message["ciphertext"])
        # Transport messages keep alternating; a one-way pattern only sends forward.
        forward = one_way or index % 2 == 0
        send, receive = (i_send, r_receive) if forward else (r_send, i_receive)
        assert send.encrypt_with_ad(b"", payload) == expected
        assert receive.decrypt_with_ad(b"", expected) == payload


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------


def test_the_pattern_table_has_the_fundamental_patterns() -> None:
    fundamental = {"N", "K", "X", "NN", "NK", "NX", "KN", "KK", "KX", "XN", "XK", "XX"}
    assert fundamental | {"IN", "IK", "IX"} <= set(PATTERNS)
    assert PATTERNS["XX"].messages == (("e",), ("e", "ee", "s", "es"), ("s", "se"))
    assert PATTERNS["IK"].responder_pre == ("s",)


@pytest.mark.parametrize(
    ("notation", "match"),
    [("-> e, zz", "unknown Noise tokens"), ("<- e ... -> e", "pre-messages"),
     ("-> e -> e", "alternate")],
)  # fmt: skip
def test_the_pattern_table_parser_refuses_mistakes(notation: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        noise._parse_pattern("Z", notation)


def test_psk_modifiers_place_the_psk_token() -> None:
    xx = NoiseProtocol.parse(PROTOCOL_NAME).pattern
    assert xx.messages == (("psk", "e"), ("e", "ee", "s", "es"), ("s", "se"))
    both = NoiseProtocol.parse("Noise_NNpsk0+psk2_25519_ChaChaPoly_BLAKE2b")
    assert both.pattern.messages == (("psk", "e"), ("e", "ee", "psk"))
    assert both.psk_count == 2


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XX_448_ChaChaPoly_BLAKE2b",
        "Noise_XX_25519_AESGCM_SHA256",
        "Noise_ZZ_25519_ChaChaPoly_BLAKE2b",
        "Noise_XXfallback_25519_ChaChaPoly_BLAKE2b",
        "Noise_NNpsk3_25519_ChaChaPoly_BLAKE2b",
        "NoisePSK_XX_25519_ChaChaPoly_BLAKE2b",
        "",
    ],
)
def test_unsupported_protocols_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)unsupported|not a noise|past the last"):
        NoiseProtocol.parse(name)


def test_a_long_protocol_name_is_hashed() -> None:
    """Names over HASHLEN bytes start h as HASH(name); the vectors' names all fit in 64."""
    longer = "Noise_NNpsk0+psk0+psk0+psk0+psk0+psk2+psk2+psk2_25519_ChaChaPoly_BLAKE2b"
    assert len(longer) > 64
    psks = [bytes(32)] * NoiseProtocol.parse(longer).psk_count
    i = HandshakeState(longer, initiator=True, psks=psks, rng=seeded_rng("i"))
    r = HandshakeState(longer, initiator=False, psks=psks, rng=seeded_rng("r"))
    r.read_message(i.write_message(b"hi"))
    assert i.read_message(r.write_message(b"there")) == b"there"
    assert i.handshake_hash == r.handshake_hash


def test_handshake_state_checks_its_keys_up_front() -> None:
    static = KeyPair.generate(seeded_rng("s"))
    with pytest.raises(ValueError, match="PSKs"):
        HandshakeState(PROTOCOL_NAME, initiator=True, static=static, rng=seeded_rng("x"))
    with pytest.raises(ValueError, match="PSKs"):
        HandshakeState(
            PROTOCOL_NAME, initiator=True, static=static, psks=[b"x"], rng=seeded_rng("x")
        )
    with pytest.raises(ValueError, match="static key"):
        HandshakeState("Noise_XX_25519_ChaChaPoly_BLAKE2b", initiator=True, rng=seeded_rng("x"))
    with pytest.raises(ValueError, match="peer's static key"):
        HandshakeState("Noise_NK_25519_ChaChaPoly_BLAKE2b", initiator=True, rng=seeded_rng("x"))
    with pytest.raises(ValueError, match="32 bytes"):
        HandshakeState("Noise_NK_25519_ChaChaPoly_BLAKE2b", initiator=True, remote_static=b"",
                       rng=seeded_rng("x"))  # fmt: skip
    with pytest.raises(ValueError, match="rng"):
        HandshakeState("Noise_NN_25519_ChaChaPoly_BLAKE2b", initiator=True)
    with pytest.raises(ValueError, match="32 bytes"):
        KeyPair.from_secret(b"short")


def test_out_of_turn_is_local_and_fatal() -> None:
    responder = HandshakeState(
        "Noise_NN_25519_ChaChaPoly_BLAKE2b", initiator=False, rng=seeded_rng("r")
    )
    with pytest.raises(LocalProtocolError, match="cannot write"):
        responder.write_message()
    assert responder.phase is HandshakePhase.ERROR
    with pytest.raises(HandshakeError, match="already failed"):
        responder.read_message(bytes(48))
    with pytest.raises(LocalProtocolError, match="not finished"):
        responder.cipher_states()


def test_a_message_over_65535_bytes_is_refused() -> None:
    nn = "Noise_NN_25519_ChaChaPoly_BLAKE2b"
    initiator = HandshakeState(nn, initiator=True, rng=seeded_rng("i"))
    with pytest.raises(LocalProtocolError, match="65535"):
        initiator.write_message(bytes(65535))
    assert initiator.phase is HandshakePhase.ERROR
    responder = HandshakeState(nn, initiator=False, rng=seeded_rng("r"))
    with pytest.raises(HandshakeError, match="65535"):
        responder.read_message(bytes(65536))
    assert responder.phase is HandshakePhase.ERROR


def test_an_all_zero_dh_result_aborts_the_handshake() -> None:
    """A low-order point as the responder's pre-known key: libsodium refuses; so do we."""
    nk = "Noise_NK_25519_ChaChaPoly_BLAKE2b"
    initiator = HandshakeState(nk, initiator=True, remote_static=bytes(32), rng=seeded_rng("i"))
    with pytest.raises(HandshakeError, match="low-order"):
        initiator.write_message()
    assert initiator.phase is HandshakePhase.ERROR


def test_a_low_order_ephemeral_from_the_peer_aborts() -> None:
    nn = "Noise_NN_25519_ChaChaPoly_BLAKE2b"
    responder = HandshakeState(nn, initiator=False, rng=seeded_rng("r"))
    responder.read_message(bytes(32))  # NN message 1 is a bare ephemeral key
    with pytest.raises(HandshakeError, match="low-order"):
        responder.write_message()


def test_cipher_state_without_a_key_passes_data_through() -> None:
    empty = CipherState()
    assert not empty.has_key()
    assert empty.encrypt_with_ad(b"ad", b"clear") == b"clear"
    assert empty.decrypt_with_ad(b"ad", b"clear") == b"clear"
    assert empty.nonce == 0
    with pytest.raises(LocalProtocolError, match="key"):
        empty.rekey()
    with pytest.raises(ValueError, match="32 bytes"):
        CipherState(b"short")


def test_nonce_exhaustion_raises() -> None:
    key = bytes(range(32))
    sender, receiver = CipherState(key), CipherState(key)
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"last")) == b"last"
    assert sender.nonce == MAX_NONCE
    with pytest.raises(NonceExhausted):
        sender.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NonceExhausted):
        receiver.decrypt_with_ad(b"", bytes(16))
    with pytest.raises(ValueError, match="64 bits"):
        sender.set_nonce(2**64)


def test_rekey_is_the_spec_rekey() -> None:
    key = bytes(range(32))
    sender = CipherState(key)
    sender.encrypt_with_ad(b"", b"advance the nonce")
    sender.rekey()
    assert sender.nonce == 1  # REKEY changes the key, never the nonce
    new_key = crypto.chacha_encrypt(key, bytes(4) + b"\xff" * 8, bytes(32), b"")[:32]
    expected = CipherState(new_key)
    expected.set_nonce(1)
    assert sender.encrypt_with_ad(b"", b"x") == expected.encrypt_with_ad(b"", b"x")


def test_only_a_receiver_that_rekeys_can_read_on() -> None:
    key = bytes(range(32))
    sender, receiver, stale = CipherState(key), CipherState(key), CipherState(key)
    sender.rekey()
    receiver.rekey()
    ciphertext = sender.encrypt_with_ad(b"", b"after rekey")
    assert receiver.decrypt_with_ad(b"", ciphertext) == b"after rekey"
    with pytest.raises(AuthenticationError):
        stale.decrypt_with_ad(b"", ciphertext)


def test_a_failed_decrypt_keeps_the_nonce() -> None:
    receiver = CipherState(bytes(32))
    with pytest.raises(AuthenticationError):
        receiver.decrypt_with_ad(b"", bytes(20))
    with pytest.raises(AuthenticationError):
        receiver.decrypt_with_ad(b"", bytes(3))
    assert receiver.nonce == 0
