"""The Noise Protocol Framework (revision 34) and meshnode's session protocol on top of it.

Theory of operation (normative text: docs/spec/session.md):

Part 1, the Noise engine, is the framework as its specification writes it:
:class:`CipherState`, :class:`SymmetricState` and :class:`HandshakeState`,
driven by the tokens of a handshake pattern (``e s ee es se ss psk``). The
pattern table holds the one-way patterns (N, K, X), the twelve interactive
fundamental patterns and the deferred ones (NK1, X1X1, ...); a protocol
name such as ``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b`` is parsed into a
pattern plus its ``pskN`` modifiers. The only suite is 25519 (X25519),
ChaChaPoly (ChaCha20-Poly1305 IETF, nonce = 4 zero bytes || 64-bit
little-endian counter) and BLAKE2b (HASHLEN 64, BLOCKLEN 128), all through
:mod:`meshnode.core.crypto`.

Rules of the engine:
1. Ephemeral keys come from an injected RNG or are fixed by the caller (test
   vectors); the engine draws no randomness of its own.
2. Any failure moves a HandshakeState to ERROR for good: a message that does
   not decrypt, is truncated, is longer than 65535 bytes or yields an
   all-zero X25519 result raises :class:`HandshakeError` (the peer's fault);
   calling out of turn raises :class:`LocalProtocolError` (ours). Later calls
   raise at once, so nothing is ever produced after a failure.
3. A CipherState never uses nonce 2^64-1 (reserved for rekeying): past
   2^64-2 it raises :class:`NonceExhausted`. ``rekey`` is the spec's REKEY.

Part 2, meshnode's session, is three things in this order:
4. :class:`MeshHandshake`: ``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b``, prologue
   ``meshnode/v1/session``, the PSK being the mesh's network key and the
   static key the identity's X25519 key. Message 1 carries no payload; the
   payloads of messages 2 and 3 carry the sender's identity (see
   :func:`identity_payload`), which binds its Ed25519 key to the Noise
   static key. With psk0 a dialer without the network key fails at message 1,
   before the responder has revealed anything.
5. :class:`SessionMachine`: the byte-stream machine, h11 style
   (``receive_data``/``next_event``/``send``/``data_to_send``). Every Noise
   message on the stream is a *record*, ``uint16 big-endian length || noise
   message``. After the handshake a record's plaintext is ``type || body``:
   MESSAGE (the last fragment of a session message), FRAGMENT (a full
   fragment, more follow), KEEPALIVE, REKEY. Session messages up to
   ``max_message`` bytes are fragmented to fit Noise's 65535-byte limit.
6. Everything is bounded: a handshake record over MAX_HANDSHAKE_RECORD bytes
   is refused from its length prefix alone, a reassembled message over
   ``max_message`` is refused as soon as it would pass the limit, and the
   inbound buffer holds at most one record plus what the shell last fed.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final, Literal, TypeAlias

from meshnode.core import codec, crypto
from meshnode.core.identity import Identity
from meshnode.errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    NonceExhausted,
    RemoteProtocolError,
)

# ---------------------------------------------------------------------------
# Part 1: the Noise engine
# ---------------------------------------------------------------------------

DHLEN: Final = 32
HASHLEN: Final = 64
KEYLEN: Final = 32
TAGLEN: Final = crypto.TAG_SIZE
PSKLEN: Final = 32
MAX_NOISE_MESSAGE: Final = 65535
"""The Noise limit on any message, handshake or transport (spec section 3)."""
MAX_NONCE: Final = 2**64 - 1
"""Reserved for REKEY: never used to encrypt a message."""
SUITE: Final = "25519_ChaChaPoly_BLAKE2b"

Token: TypeAlias = Literal["e", "s", "ee", "es", "se", "ss", "psk"]
_TOKENS: Final[frozenset[str]] = frozenset({"e", "s", "ee", "es", "se", "ss", "psk"})


def _nonce(n: int) -> bytes:
    """ChaChaPoly's 96-bit nonce: 32 zero bits, then the counter, little-endian."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise's HKDF (spec section 4.3) with HMAC-BLAKE2b: two or three 64-byte outputs."""
    temp_key = crypto.hmac_blake2b(chaining_key, ikm)
    out1 = crypto.hmac_blake2b(temp_key, b"\x01")
    out2 = crypto.hmac_blake2b(temp_key, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, crypto.hmac_blake2b(temp_key, out2 + b"\x03")


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair, the Noise DH key type."""

    secret: bytes = field(repr=False)
    public: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> KeyPair:
        """The key pair of a 32-byte secret (fixed ephemerals in vectors, identities)."""
        if len(secret) != DHLEN:
            raise ValueError("an X25519 secret key is 32 bytes")
        return cls(secret=secret, public=crypto.x25519_public(secret))

    @classmethod
    def generate(cls, rng: crypto.Rng) -> KeyPair:
        """GENERATE_KEYPAIR with the caller's randomness (the core has none of its own)."""
        return cls.from_secret(rng(DHLEN))


class CipherState:
    """A key and a nonce (spec section 5.1); without a key it passes data through.

    Used both inside the handshake and, after ``split``, for transport
    messages. Decryption failures raise :class:`AuthenticationError` and leave
    the nonce unchanged, as the spec says; callers decide what a failure means.
    """

    __slots__ = ("_key", "_n")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEYLEN:
            raise ValueError("a cipher key is 32 bytes")
        self._key = key
        self._n = 0

    def has_key(self) -> bool:
        """Whether a key is set: before the first DH a handshake sends in the clear."""
        return self._key is not None

    @property
    def nonce(self) -> int:
        """The nonce the next encryption or decryption will use."""
        return self._n

    def set_nonce(self, nonce: int) -> None:
        """SetNonce, for out-of-order transports and for tests of exhaustion."""
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError("a Noise nonce is 64 bits")
        self._n = nonce

    def _check_nonce(self) -> None:
        if self._n >= MAX_NONCE:
            raise NonceExhausted(
                "this cipher state has used every nonce: close the session and open a new one"
            )

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd: ciphertext plus 16-byte tag, or the plaintext if no key."""
        if self._key is None:
            return bytes(plaintext)
        self._check_nonce()
        out = crypto.chacha_encrypt(self._key, _nonce(self._n), bytes(plaintext), ad)
        self._n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd, raising :class:`AuthenticationError` on a bad tag."""
        if self._key is None:
            return bytes(ciphertext)
        self._check_nonce()
        if len(ciphertext) < TAGLEN:
            raise AuthenticationError("ciphertext shorter than its tag")
        out = crypto.chacha_decrypt(self._key, _nonce(self._n), bytes(ciphertext), ad)
        self._n += 1
        return out

    def rekey(self) -> None:
        """REKEY (spec section 11.3): the first 32 bytes of encrypting zeros at nonce 2^64-1.

        The nonce is not reset, so rekeying limits what a key compromise
        reveals but does not extend the 2^64-2 message budget.
        """
        if self._key is None:
            raise LocalProtocolError("rekey needs a key")
        self._key = crypto.chacha_encrypt(self._key, _nonce(MAX_NONCE), bytes(32), b"")[:KEYLEN]


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and a CipherState (section 5.2)."""

    __slots__ = ("_ck", "_h", "cipher")

    def __init__(self, protocol_name: bytes) -> None:
        h = (
            protocol_name.ljust(HASHLEN, b"\x00")
            if len(protocol_name) <= HASHLEN
            else (crypto.blake2b_512(protocol_name))
        )
        self._ck = h
        self._h = h
        self.cipher = CipherState()

    @property
    def handshake_hash(self) -> bytes:
        """``h``: a digest of everything sent and received so far (channel binding)."""
        return self._h

    def mix_key(self, ikm: bytes) -> None:
        """MixKey: a DH result (or, in psk handshakes, an ephemeral key) into ``ck`` and k."""
        self._ck, temp_k = _hkdf(self._ck, ikm, 2)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        """MixHash: ``h = HASH(h || data)``."""
        self._h = crypto.blake2b_512(self._h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """MixKeyAndHash, for the psk token: the PSK reaches both ``ck`` and ``h``."""
        self._ck, temp_h, temp_k = _hkdf(self._ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:KEYLEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash: encrypt with ``h`` as associated data, then hash the ciphertext."""
        ciphertext = self.cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash, raising :class:`AuthenticationError` when the tag does not verify."""
        plaintext = self.cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Split: the initiator-to-responder and responder-to-initiator CipherStates."""
        temp_k1, temp_k2 = _hkdf(self._ck, b"", 2)
        return CipherState(temp_k1[:KEYLEN]), CipherState(temp_k2[:KEYLEN])


@dataclass(frozen=True)
class HandshakePattern:
    """A handshake pattern: pre-message keys and the token lists of each message.

    Message ``i`` is sent by the initiator when ``i`` is even, as in every
    pattern of the spec (they alternate, starting with the initiator).
    """

    name: str
    initiator_pre: tuple[Token, ...]
    responder_pre: tuple[Token, ...]
    messages: tuple[tuple[Token, ...], ...]


_ARROW: Final = re.compile(r"(->|<-)\s*([a-z0-9, ]*)")


def _tokens(text: str) -> tuple[Token, ...]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in _TOKENS]
    if unknown:
        raise ValueError(f"unknown Noise tokens {unknown}")
    return tuple(names)  # type: ignore[arg-type]  # checked against _TOKENS just above


def _parse_pattern(name: str, notation: str) -> HandshakePattern:
    """A pattern from the spec's notation on one line, e.g. ``<- s ... -> e, es``."""
    pre_text, _, body = notation.rpartition("...")
    pre: dict[str, tuple[Token, ...]] = {"->": (), "<-": ()}
    for arrow, tokens in _ARROW.findall(pre_text):
        pre[arrow] = _tokens(tokens)
        if pre[arrow] != ("s",):
            raise ValueError(f"pattern {name}: only static keys as pre-messages")
    lines = _ARROW.findall(body)
    if [arrow for arrow, _ in lines] != [("->", "<-")[i % 2] for i in range(len(lines))]:
        raise ValueError(f"pattern {name}: messages must alternate, initiator first")
    return HandshakePattern(name, pre["->"], pre["<-"], tuple(_tokens(t) for _, t in lines))


# The spec's sections 7.2-7.5 (one-way, fundamental interactive) and 18 (deferred).
_PATTERN_TABLE: Final = """
N    <- s ... -> e, es
K    -> s <- s ... -> e, es, ss
X    <- s ... -> e, es, s, ss
NN   -> e <- e, ee
NK   <- s ... -> e, es <- e, ee
NX   -> e <- e, ee, s, es
KN   -> s ... -> e <- e, ee, se
KK   -> s <- s ... -> e, es, ss <- e, ee, se
KX   -> s ... -> e <- e, ee, se, s, es
XN   -> e <- e, ee -> s, se
XK   <- s ... -> e, es <- e, ee -> s, se
XX   -> e <- e, ee, s, es -> s, se
IN   -> e, s <- e, ee, se
IK   <- s ... -> e, es, s, ss <- e, ee, se
IX   -> e, s <- e, ee, se, s, es
NK1  <- s ... -> e <- e, ee, es
NX1  -> e <- e, ee, s -> es
X1N  -> e <- e, ee -> s <- se
X1K  <- s ... -> e, es <- e, ee -> s <- se
XK1  <- s ... -> e <- e, ee, es -> s, se
X1K1 <- s ... -> e <- e, ee, es -> s <- se
X1X  -> e <- e, ee, s, es -> s <- se
XX1  -> e <- e, ee, s -> es, s, se
X1X1 -> e <- e, ee, s -> es, s <- se
K1N  -> s ... -> e <- e, ee -> se
K1K  -> s <- s ... -> e, es <- e, ee -> se
KK1  -> s <- s ... -> e <- e, ee, se, es
K1K1 -> s <- s ... -> e <- e, ee, es -> se
K1X  -> s ... -> e <- e, ee, s, es -> se
KX1  -> s ... -> e <- e, ee, se, s -> es
K1X1 -> s ... -> e <- e, ee, s -> se, es
I1N  -> e, s <- e, ee -> se
I1K  <- s ... -> e, es, s <- e, ee -> se
IK1  <- s ... -> e, s <- e, ee, se, es
I1K1 <- s ... -> e, s <- e, ee, es -> se
I1X  -> e, s <- e, ee, s, es -> se
IX1  -> e, s <- e, ee, se, s -> es
I1X1 -> e, s <- e, ee, s -> se, es
"""

PATTERNS: Final[dict[str, HandshakePattern]] = {
    name: _parse_pattern(name, notation)
    for name, _, notation in (line.partition(" ") for line in _PATTERN_TABLE.strip().splitlines())
}
"""Every supported pattern by name, before modifiers."""

_PROTOCOL: Final = re.compile(r"Noise_([A-Z][A-Z0-9]*)([a-z][a-z0-9+]*)?_(.+)")


@dataclass(frozen=True)
class NoiseProtocol:
    """A parsed protocol name: its pattern with the psk modifiers applied."""

    name: str
    pattern: HandshakePattern

    @property
    def psk_count(self) -> int:
        """How many 32-byte PSKs the handshake consumes, in token order."""
        return sum(m.count("psk") for m in self.pattern.messages)

    @classmethod
    def parse(cls, name: str) -> NoiseProtocol:
        """Parse e.g. ``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b``.

        Raises:
            ValueError: the name is malformed or names a pattern, modifier or
                suite this engine does not implement (so callers, and the
                vector tests, can tell "unsupported" from "wrong").
        """
        match = _PROTOCOL.fullmatch(name)
        if match is None:
            raise ValueError(f"not a Noise protocol name: {name!r}")
        base, modifiers, suite = match.groups()
        if suite != SUITE:
            raise ValueError(f"unsupported suite {suite!r}: only {SUITE} is implemented")
        if base not in PATTERNS:
            raise ValueError(f"unsupported handshake pattern {base!r}")
        pattern = PATTERNS[base]
        messages = [list(m) for m in pattern.messages]
        for modifier in modifiers.split("+") if modifiers else ():
            psk = re.fullmatch(r"psk(\d+)", modifier)
            if psk is None:
                raise ValueError(f"unsupported pattern modifier {modifier!r}")
            position = int(psk.group(1))
            if position > len(messages):
                raise ValueError(f"{modifier} is past the last message of {base}")
            if position == 0:
                messages[0].insert(0, "psk")
            else:
                messages[position - 1].append("psk")
        full = HandshakePattern(
            base + (modifiers or ""),
            pattern.initiator_pre,
            pattern.responder_pre,
            tuple(tuple(m) for m in messages),
        )
        return cls(name, full)


def _uses_static(pattern: HandshakePattern, initiator: bool) -> bool:
    """Whether a side's static key takes part: sent, pre-known, or in a DH."""
    tokens = {t for m in pattern.messages for t in m}
    own_messages = pattern.messages[0 if initiator else 1 :: 2]
    return bool(
        (pattern.initiator_pre if initiator else pattern.responder_pre)
        or any("s" in m for m in own_messages)
        or "ss" in tokens
        or ("se" if initiator else "es") in tokens
    )


def _public(key: KeyPair | bytes | None) -> bytes:
    """A static public key that ``__init__`` checked is present."""
    assert key is not None
    return key.public if isinstance(key, KeyPair) else key


class HandshakePhase(Enum):
    """Where a handshake stands, from the point of view of its owner."""

    WRITE = "our turn to write a message"
    READ = "waiting for the peer's message"
    DONE = "finished: the transport cipher states are ready"
    ERROR = "failed: the handshake can only be discarded"


class HandshakeState:
    """One side of a Noise handshake (spec section 5.3), driven by pattern tokens.

    Args:
        protocol: a protocol name or a parsed :class:`NoiseProtocol`.
        initiator: whether this side sends the first message.
        prologue: data both sides must agree on, hashed first; a mismatch
            fails the first authenticated message.
        static: our static key pair, if the pattern uses one.
        remote_static: the peer's static public key, when the pattern has it
            as a pre-message (``<- s`` for an initiator, ``-> s`` for a responder).
        psks: the 32-byte PSKs in the order the psk tokens use them.
        ephemeral: a fixed ephemeral key pair, for test vectors only.
        rng: where ephemeral keys come from otherwise.

    Raises:
        ValueError: the protocol is unsupported, or a needed key or PSK is
            missing or malformed (a local mistake, detected before any I/O).
    """

    def __init__(
        self,
        protocol: str | NoiseProtocol,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static: KeyPair | None = None,
        remote_static: bytes | None = None,
        psks: Sequence[bytes] = (),
        ephemeral: KeyPair | None = None,
        rng: crypto.Rng | None = None,
    ) -> None:
        self._protocol = (
            protocol if isinstance(protocol, NoiseProtocol) else (NoiseProtocol.parse(protocol))
        )
        pattern = self._protocol.pattern
        if len(psks) != self._protocol.psk_count or any(len(p) != PSKLEN for p in psks):
            raise ValueError(f"{pattern.name} needs {self._protocol.psk_count} PSKs of 32 bytes")
        if remote_static is not None and len(remote_static) != DHLEN:
            raise ValueError("a remote static key is 32 bytes")
        writes_e = any(
            "e" in tokens for i, tokens in enumerate(pattern.messages) if (i % 2 == 0) == initiator
        )
        if writes_e and ephemeral is None and rng is None:
            raise ValueError("give an rng (or, for test vectors, a fixed ephemeral key)")
        if static is None and _uses_static(pattern, initiator):
            raise ValueError(f"{pattern.name} needs our static key")
        remote_pre = pattern.responder_pre if initiator else pattern.initiator_pre
        if remote_static is None and remote_pre:
            raise ValueError(f"{pattern.name} needs the peer's static key in advance")
        self._initiator = initiator
        self._s = static
        self._e = ephemeral
        self._rs = remote_static
        self._re: bytes | None = None
        self._rng = rng
        self._psks = deque(psks)
        self._psk_mode = self._protocol.psk_count > 0
        self._symmetric = SymmetricState(self._protocol.name.encode("ascii"))
        self._symmetric.mix_hash(prologue)
        # Pre-messages are static keys only (the table has no "e" pre-message):
        # the initiator's first, then the responder's.
        initiator_key, responder_key = (
            (static, remote_static) if initiator else (remote_static, static)
        )
        if pattern.initiator_pre:
            self._symmetric.mix_hash(_public(initiator_key))
        if pattern.responder_pre:
            self._symmetric.mix_hash(_public(responder_key))
        self._index = 0
        self._phase = HandshakePhase.WRITE if initiator else HandshakePhase.READ
        self._result: tuple[CipherState, CipherState] | None = None

    @property
    def protocol(self) -> NoiseProtocol:
        """The protocol this handshake runs."""
        return self._protocol

    @property
    def phase(self) -> HandshakePhase:
        """Whose turn it is, or whether the handshake finished or failed."""
        return self._phase

    @property
    def handshake_hash(self) -> bytes:
        """``h`` as it stands now; after the last message, GetHandshakeHash()."""
        return self._symmetric.handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key once a pre-message or a message gave it."""
        return self._rs

    def _begin(self, phase: HandshakePhase) -> tuple[Token, ...]:
        if self._phase is HandshakePhase.ERROR:
            raise HandshakeError("this handshake already failed: start a new one")
        if self._phase is not phase:
            self._phase = HandshakePhase.ERROR
            raise LocalProtocolError(f"cannot {phase.name.lower()} now: {self._phase.value}")
        return self._protocol.pattern.messages[self._index]

    def _dh(self, token: Token) -> None:
        """ee, es, se, ss: which keys meet depends on our role (spec section 5.3)."""
        s, e = self._s, self._e
        if token == "ee":
            pair, public = e, self._re
        elif token == "ss":
            pair, public = s, self._rs
        elif (token == "es") == self._initiator:
            pair, public = e, self._rs  # initiator's es, responder's se
        else:
            pair, public = s, self._re  # initiator's se, responder's es
        # The pattern's validity rules (spec section 7.3) guarantee both keys.
        assert pair is not None
        assert public is not None
        try:
            shared = crypto.x25519(pair.secret, public)
        except AuthenticationError:
            raise HandshakeError("the peer's key is a low-order point (all-zero DH)") from None
        self._symmetric.mix_key(shared)

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self._protocol.pattern.messages):
            self._result = self._symmetric.split()
            self._phase = HandshakePhase.DONE
        else:
            self._phase = (
                HandshakePhase.WRITE
                if self._phase is HandshakePhase.READ
                else (HandshakePhase.READ)
            )

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage: the next handshake message, carrying ``payload``.

        Raises:
            LocalProtocolError: not our turn, or the message would pass 65535 bytes.
            HandshakeError: a pre-known remote key is a low-order point.
        """
        tokens = self._begin(HandshakePhase.WRITE)
        try:
            out = bytearray()
            for token in tokens:
                if token == "e":
                    if self._e is None:
                        assert self._rng is not None  # checked in __init__
                        self._e = KeyPair.generate(self._rng)
                    out += self._e.public
                    self._symmetric.mix_hash(self._e.public)
                    if self._psk_mode:
                        self._symmetric.mix_key(self._e.public)
                elif token == "s":
                    out += self._symmetric.encrypt_and_hash(_public(self._s))
                elif token == "psk":
                    self._symmetric.mix_key_and_hash(self._psks.popleft())
                else:
                    self._dh(token)
            out += self._symmetric.encrypt_and_hash(payload)
            if len(out) > MAX_NOISE_MESSAGE:
                raise LocalProtocolError("a Noise message is at most 65535 bytes: shorten it")
        except Exception:
            self._phase = HandshakePhase.ERROR
            raise
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage: process the peer's handshake message and return its payload.

        Raises:
            HandshakeError: the message is too long, truncated, altered, made
                with another PSK, prologue or key, or carries a low-order key.
            LocalProtocolError: it is not the peer's turn.
        """
        tokens = self._begin(HandshakePhase.READ)
        try:
            if len(message) > MAX_NOISE_MESSAGE:
                raise HandshakeError("a handshake message over 65535 bytes")
            view = memoryview(message)
            for token in tokens:
                if token == "e":
                    if len(view) < DHLEN:
                        raise HandshakeError("a truncated handshake message")
                    self._re = bytes(view[:DHLEN])
                    view = view[DHLEN:]
                    self._symmetric.mix_hash(self._re)
                    if self._psk_mode:
                        self._symmetric.mix_key(self._re)
                elif token == "s":
                    size = DHLEN + (TAGLEN if self._symmetric.cipher.has_key() else 0)
                    if len(view) < size:
                        raise HandshakeError("a truncated handshake message")
                    self._rs = self._symmetric.decrypt_and_hash(bytes(view[:size]))
                    view = view[size:]
                elif token == "psk":
                    self._symmetric.mix_key_and_hash(self._psks.popleft())
                else:
                    self._dh(token)
            payload = self._symmetric.decrypt_and_hash(bytes(view))
        except AuthenticationError:
            self._phase = HandshakePhase.ERROR
            raise HandshakeError(
                "a handshake message did not decrypt: it was altered, or the peer uses "
                "another network key, prologue or static key"
            ) from None
        except Exception:
            self._phase = HandshakePhase.ERROR
            raise
        self._advance()
        return payload

    def abort(self) -> None:
        """Move to ERROR for good: the application refused a payload this handshake read."""
        self._phase = HandshakePhase.ERROR
        self._result = None

    def cipher_states(self) -> tuple[CipherState, CipherState]:
        """(send, receive) transport CipherStates from our point of view, after the last message.

        In a one-way pattern only the initiator's send (the responder's
        receive) is meant to be used.
        """
        if self._result is None:
            raise LocalProtocolError(f"the handshake is not finished: {self._phase.value}")
        first, second = self._result
        return (first, second) if self._initiator else (second, first)


# ---------------------------------------------------------------------------
# Part 2: meshnode's session
# ---------------------------------------------------------------------------

PROTOCOL_NAME: Final = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b"
PROLOGUE: Final = b"meshnode/v1/session"
OPEN_MESH_KEY: Final[bytes] = crypto.blake2b_256(b"meshnode/v1/open-mesh")
"""The published network key of the open mesh: BLAKE2b-256 of ``meshnode/v1/open-mesh``.

It is public on purpose (docs/spec/session.md gives its value): the open mesh
is open. A private mesh uses a secret 32-byte key of its own instead.
"""
IDENTITY_LABEL: Final = b"meshnode/v1/session/identity"
IDENTITY_VERSION: Final = 1
MAX_IDENTITY_PAYLOAD: Final = 128
"""The identity payload is 102 bytes; the bound leaves room and refuses anything bigger."""
MAX_HANDSHAKE_RECORD: Final = 512
"""No meshnode handshake message is longer (message 2 is 198 bytes), so a longer
length prefix ends an unauthenticated connection before its body is read."""

_PROTOCOL_XXPSK0: Final = NoiseProtocol.parse(PROTOCOL_NAME)


def _signed_identity(x25519_public: bytes, handshake_hash: bytes) -> bytes:
    return IDENTITY_LABEL + x25519_public + handshake_hash


def identity_payload(identity: Identity, handshake_hash: bytes) -> bytes:
    """The handshake payload that proves ``identity`` owns the Noise static key.

    ``[1, ed25519 public key, signature]`` in canonical msgpack, the signature
    by the Ed25519 key over ``IDENTITY_LABEL || X25519 static key || h``,
    where ``h`` is the handshake hash just before the message is written. The
    hash makes the signature good for this one session; the X25519 key in it
    binds the two keys, so nobody can present another group's Ed25519 key.
    """
    signature = identity.sign(_signed_identity(identity.x25519_public, handshake_hash))
    return codec.pack([IDENTITY_VERSION, identity.public_key, signature])


def verify_identity_payload(payload: bytes, remote_static: bytes, handshake_hash: bytes) -> bytes:
    """Check a peer's identity payload against its Noise static key; return its Ed25519 key.

    Raises:
        HandshakeError: malformed, another version, an Ed25519 key whose
            X25519 form is not the static key the peer proved in Noise, or a
            signature that does not verify.
    """
    try:
        doc = codec.unpack_canonical(
            payload, max_size=MAX_IDENTITY_PAYLOAD, max_str=0, max_bin=64, max_array=3
        )
    except codec.DecodeError:
        raise HandshakeError("the peer's identity payload is malformed") from None
    if not (isinstance(doc, list) and len(doc) == 3 and type(doc[0]) is int):
        raise HandshakeError("the peer's identity payload is malformed")
    version, key, signature = doc
    if version != IDENTITY_VERSION:
        raise HandshakeError(f"the peer speaks session version {version}; upgrade one of the two")
    if not (isinstance(key, bytes) and isinstance(signature, bytes)):
        raise HandshakeError("the peer's identity payload is malformed")
    try:
        if crypto.ed25519_pk_to_x25519(key) != remote_static:
            raise HandshakeError("the peer's Ed25519 key does not match its Noise static key")
        crypto.verify(key, _signed_identity(remote_static, handshake_hash), signature)
    except AuthenticationError:
        raise HandshakeError("the peer's identity signature does not verify") from None
    return key


@dataclass(frozen=True)
class SessionKeys:
    """What a finished meshnode handshake yields."""

    send: CipherState
    receive: CipherState
    peer_key: bytes
    """The peer's Ed25519 group key, proved by the handshake."""
    handshake_hash: bytes
    """The session id: unique to this session, the same on both ends."""


class MeshHandshake:
    """The three messages of the meshnode handshake (docs/spec/session.md, "Handshake").

    Steps (numbered as in the spec):
    1. Both sides: HandshakeState(PROTOCOL_NAME, prologue=PROLOGUE,
       psks=[network key], static=identity's X25519 key pair).
    2. Initiator writes message 1 with an empty payload (``psk, e``).
    3. Responder reads message 1; it must decrypt (else: wrong network key)
       and its payload must be empty. Then it writes message 2
       (``e, ee, s, es``) with its identity payload over ``h`` before message 2.
    4. Initiator reads message 2 and verifies the responder's identity
       payload, then writes message 3 (``s, se``) with its own identity
       payload over ``h`` before message 3.
    5. Responder reads message 3 and verifies the initiator's identity payload.
    6. Both sides split into transport cipher states; the session id is ``h``.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        rng: crypto.Rng,
        network_key: bytes = OPEN_MESH_KEY,
    ) -> None:
        if len(network_key) != PSKLEN:
            raise ValueError("a network key is 32 bytes")
        self._identity = identity
        self._peer_key: bytes | None = None
        # Step 1.
        self._state = HandshakeState(
            _PROTOCOL_XXPSK0,
            initiator=initiator,
            prologue=PROLOGUE,
            static=KeyPair(identity.x25519_secret, identity.x25519_public),
            psks=[network_key],
            rng=rng,
        )
        self._messages = 0

    @property
    def phase(self) -> HandshakePhase:
        """Whose turn it is, or whether the handshake finished or failed."""
        return self._state.phase

    def write_message(self) -> bytes:
        """The next message: message 1 (step 2), 2 (step 3) or 3 (step 4).

        Raises:
            LocalProtocolError: it is not our turn.
            HandshakeError: the handshake already failed.
        """
        payload = b""
        if self._messages > 0:
            payload = identity_payload(self._identity, self._state.handshake_hash)
        message = self._state.write_message(payload)
        self._messages += 1
        return message

    def read_message(self, message: bytes) -> None:
        """Read message 1 (step 3), 2 (step 4) or 3 (step 5).

        Raises:
            HandshakeError: wrong network key, an altered or truncated
                message, a payload in message 1, or an identity that does not
                bind to the Noise static key. The handshake is then in ERROR.
            LocalProtocolError: it is the peer's turn to read, not ours.
        """
        handshake_hash = self._state.handshake_hash
        payload = self._state.read_message(message)
        try:
            if self._messages == 0:
                if payload:
                    raise HandshakeError("message 1 must not carry a payload")
            else:
                remote_static = self._state.remote_static
                assert remote_static is not None  # the s token of XX precedes every payload
                self._peer_key = verify_identity_payload(payload, remote_static, handshake_hash)
        except HandshakeError:
            self._state.abort()
            raise
        self._messages += 1

    def result(self) -> SessionKeys:
        """Step 6: the transport cipher states, the peer's Ed25519 key and the session id.

        Raises:
            LocalProtocolError: the handshake has not finished.
        """
        send, receive = self._state.cipher_states()
        assert self._peer_key is not None  # both sides verified an identity to finish
        return SessionKeys(send, receive, self._peer_key, self._state.handshake_hash)


class RecordType(IntEnum):
    """The first plaintext byte of every record after the handshake."""

    MESSAGE = 0
    """The last (or only) fragment of a session message."""
    FRAGMENT = 1
    """A fragment of exactly MAX_FRAGMENT bytes; more of the same message follow."""
    KEEPALIVE = 2
    """No body: proves the peer is alive when it has nothing to say."""
    REKEY = 3
    """No body: the sender rekeys its sending key after this record; so must the receiver."""


LENGTH_SIZE: Final = 2
MAX_RECORD: Final = MAX_NOISE_MESSAGE
MAX_FRAGMENT: Final = MAX_RECORD - TAGLEN - 1
"""65518 bytes: a record's plaintext is the type byte and at most this much body."""


class NeedData(Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""next_event's answer when a whole record has not arrived yet: feed receive_data."""


@dataclass(frozen=True)
class HandshakeComplete:
    """The handshake finished: the session is open and the peer proved ``peer_key``."""

    peer_key: bytes
    handshake_hash: bytes


@dataclass(frozen=True)
class MessageReceived:
    """A whole session message, reassembled from its fragments."""

    data: bytes


@dataclass(frozen=True)
class KeepaliveReceived:
    """The peer sent a keepalive: it is alive, and has nothing to say."""


Event: TypeAlias = HandshakeComplete | MessageReceived | KeepaliveReceived


class SessionState(Enum):
    """Where a SessionMachine stands."""

    HANDSHAKE = "handshaking"
    OPEN = "open"
    ERROR = "failed: discard the machine and close the connection"


@dataclass(frozen=True)
class SessionCounters:
    """What a session has carried, for ``Session.statistics()``."""

    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    keepalives_sent: int
    keepalives_received: int
    rekeys_sent: int
    rekeys_received: int


class SessionMachine:
    """A meshnode session on a byte stream: handshake, then framed, encrypted messages.

    The shell feeds whatever the stream gives to :meth:`receive_data`, calls
    :meth:`next_event` until it returns :data:`NEED_DATA` (reading more only
    then, which bounds the inbound buffer), and writes whatever
    :meth:`data_to_send` returns. An initiator's message 1 is queued at once.

    Args:
        identity: our group identity (its X25519 key is the Noise static key).
        initiator: whether we dialled.
        rng: randomness for the ephemeral key.
        max_message: the largest session message we send or accept.
        rekey_after: rekey our sending key after this many records.
        network_key: the mesh's 32-byte PSK.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        rng: crypto.Rng,
        max_message: int,
        rekey_after: int,
        network_key: bytes = OPEN_MESH_KEY,
    ) -> None:
        if max_message < 0 or rekey_after < 1:
            raise ValueError("max_message must be at least 0 and rekey_after at least 1")
        self._handshake: MeshHandshake | None = MeshHandshake(
            identity, initiator=initiator, rng=rng, network_key=network_key
        )
        self._keys: SessionKeys | None = None
        self._max_message = max_message
        self._rekey_after = rekey_after
        self._since_rekey = 0
        self._state = SessionState.HANDSHAKE
        self._inbound = bytearray()
        self._outbound = bytearray()
        self._partial = bytearray()
        self._counts = dict.fromkeys(SessionCounters.__dataclass_fields__, 0)
        if initiator:
            self._queue(self._handshake.write_message())

    @property
    def state(self) -> SessionState:
        """HANDSHAKE, OPEN or ERROR."""
        return self._state

    @property
    def keys(self) -> SessionKeys | None:
        """The peer's key, session id and cipher states once the handshake finished."""
        return self._keys

    def statistics(self) -> SessionCounters:
        """Bytes, messages, keepalives and rekeys so far, both ways."""
        return SessionCounters(**self._counts)

    def _queue(self, record: bytes) -> None:
        self._outbound += len(record).to_bytes(LENGTH_SIZE, "big") + record

    def data_to_send(self) -> bytes:
        """Drain the bytes to write to the stream (empty after a failure, always)."""
        out = bytes(self._outbound)
        self._outbound.clear()
        self._counts["bytes_sent"] += len(out)
        return out

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the stream; call next_event to process them."""
        if self._state is SessionState.ERROR:
            raise LocalProtocolError("the session failed: close its connection")
        self._inbound += data
        self._counts["bytes_received"] += len(data)

    def _fail(self) -> None:
        self._state = SessionState.ERROR
        self._handshake = None
        self._keys = None
        self._outbound.clear()
        self._inbound.clear()
        self._partial.clear()

    def _next_record(self) -> bytes | None:
        if len(self._inbound) < LENGTH_SIZE:
            return None
        size = int.from_bytes(self._inbound[:LENGTH_SIZE], "big")
        if self._state is SessionState.HANDSHAKE and size > MAX_HANDSHAKE_RECORD:
            raise HandshakeError(f"a handshake message longer than {MAX_HANDSHAKE_RECORD} bytes")
        if len(self._inbound) < LENGTH_SIZE + size:
            return None
        record = bytes(self._inbound[LENGTH_SIZE : LENGTH_SIZE + size])
        del self._inbound[: LENGTH_SIZE + size]
        return record

    def next_event(self) -> Event | NeedData:
        """Process buffered records until an event or :data:`NEED_DATA`.

        Raises:
            HandshakeError: the handshake failed (wrong network key, tampering,
                a bad identity); nothing was or will be queued after it.
            RemoteProtocolError: a record after the handshake failed to
                decrypt, has an unknown type or a malformed body, or a
                message passed ``max_message``.
            LocalProtocolError: the session already failed.
        """
        if self._state is SessionState.ERROR:
            raise LocalProtocolError("the session failed: close its connection")
        try:
            while (record := self._next_record()) is not None:
                event = (
                    self._handshake_record(record)
                    if self._state is SessionState.HANDSHAKE
                    else self._transport_record(record)
                )
                if event is not None:
                    return event
        except (RemoteProtocolError, NonceExhausted):
            self._fail()
            raise
        return NEED_DATA

    def _handshake_record(self, record: bytes) -> HandshakeComplete | None:
        handshake = self._handshake
        assert handshake is not None  # set until the handshake completes or fails
        handshake.read_message(record)
        if handshake.phase is HandshakePhase.WRITE:
            self._queue(handshake.write_message())
        if handshake.phase is not HandshakePhase.DONE:
            return None
        self._keys = handshake.result()
        self._handshake = None
        self._state = SessionState.OPEN
        return HandshakeComplete(self._keys.peer_key, self._keys.handshake_hash)

    def _transport_record(self, record: bytes) -> Event | None:
        """Framing steps 3-5 of docs/spec/session.md, "Records"."""
        keys = self._keys
        assert keys is not None  # set while OPEN
        try:
            plaintext = keys.receive.decrypt_with_ad(b"", record)
        except AuthenticationError:
            raise RemoteProtocolError("a session record did not decrypt: it was altered") from None
        if not plaintext:
            raise RemoteProtocolError("a session record without a type byte")
        kind, body = plaintext[0], plaintext[1:]
        if kind in (RecordType.KEEPALIVE, RecordType.REKEY) and body:
            raise RemoteProtocolError("a keepalive or rekey record with a body")
        if kind == RecordType.KEEPALIVE:
            self._counts["keepalives_received"] += 1
            return KeepaliveReceived()
        if kind == RecordType.REKEY:
            keys.receive.rekey()
            self._counts["rekeys_received"] += 1
            return None
        if kind not in (RecordType.MESSAGE, RecordType.FRAGMENT):
            raise RemoteProtocolError(f"a session record of unknown type {kind}")
        if kind == RecordType.FRAGMENT and len(body) != MAX_FRAGMENT:
            raise RemoteProtocolError("a fragment shorter than MAX_FRAGMENT")
        if len(self._partial) + len(body) > self._max_message:
            raise RemoteProtocolError(
                f"the peer sent a message over the {self._max_message}-byte limit"
            )
        self._partial += body
        if kind == RecordType.FRAGMENT:
            return None
        data = bytes(self._partial)
        self._partial.clear()
        self._counts["messages_received"] += 1
        return MessageReceived(data)

    def _seal(self, kind: RecordType, body: bytes | memoryview = b"") -> None:
        """Framing steps 1-2: encrypt one record, then rekey when ``rekey_after`` are out."""
        keys = self._keys
        assert keys is not None  # callers check OPEN
        self._queue(keys.send.encrypt_with_ad(b"", bytes([kind]) + bytes(body)))
        self._since_rekey += 1
        if self._since_rekey >= self._rekey_after:
            self._queue(keys.send.encrypt_with_ad(b"", bytes([RecordType.REKEY])))
            keys.send.rekey()
            self._since_rekey = 0
            self._counts["rekeys_sent"] += 1

    def _check_open(self) -> None:
        if self._state is not SessionState.OPEN:
            raise LocalProtocolError(f"cannot send: the session is {self._state.value}")

    def send(self, data: bytes) -> None:
        """Queue a session message: FRAGMENT records of MAX_FRAGMENT bytes, then one MESSAGE.

        Raises:
            LocalProtocolError: the session is not open, or ``data`` is over
                ``max_message`` (the peer would refuse it and close).
            NonceExhausted: 2^64-2 records went out; the session is failed.
        """
        self._check_open()
        if len(data) > self._max_message:
            raise LocalProtocolError(
                f"a session message is at most {self._max_message} bytes, not {len(data)}"
            )
        view = memoryview(data)
        try:
            while len(view) > MAX_FRAGMENT:
                self._seal(RecordType.FRAGMENT, view[:MAX_FRAGMENT])
                view = view[MAX_FRAGMENT:]
            self._seal(RecordType.MESSAGE, view)
        except NonceExhausted:
            self._fail()
            raise
        self._counts["messages_sent"] += 1

    def send_keepalive(self) -> None:
        """Queue a KEEPALIVE record, so the peer's idle timer sees we are alive."""
        self._check_open()
        try:
            self._seal(RecordType.KEEPALIVE)
        except NonceExhausted:
            self._fail()
            raise
        self._counts["keepalives_sent"] += 1
