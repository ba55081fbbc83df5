"""The Noise Protocol Framework (revision 34): the pattern engine.

Theory of operation (normative text: docs/spec/session.md, "1. Protocol"), the
framework as its specification writes it: :class:`CipherState`,
:class:`SymmetricState` and :class:`HandshakeState`, driven by the tokens of a
handshake pattern (``e s ee es se ss psk``). The pattern table holds the
one-way patterns (N, K, X), the twelve interactive fundamental patterns and
the deferred ones (NK1, X1X1, ...); a protocol name such as
``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b`` is parsed into a pattern plus its
``pskN`` modifiers. The only suite is 25519 (X25519), ChaChaPoly
(ChaCha20-Poly1305 IETF, nonce = 4 zero bytes || 64-bit little-endian counter)
and BLAKE2b (HASHLEN 64, BLOCKLEN 128), all through :mod:`meshnode.core.crypto`.
Nothing here is meshnode's own: meshnode's session on top of it is
:mod:`meshnode.core.session`.

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
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from meshnode.core import crypto
from meshnode.errors import (
    AuthenticationError,
    HandshakeError,
    LocalProtocolError,
    NonceExhausted,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

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
