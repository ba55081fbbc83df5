"""Thin wrappers over libsodium (pynacl) for every primitive meshnode uses.

Rules:
1. This is the only core module that catches ``nacl.exceptions.CryptoError``;
   it re-raises :class:`AuthenticationError` ``from None`` so no key material
   reaches a traceback.
2. An all-zero X25519 result (a low-order point) is refused, as libsodium does.
3. Derivations are keyed BLAKE2b with a purpose label, so every derived key is
   bound to one purpose: ``derive(secret, b"meshnode/v1/<purpose>")``.
4. The per-bulletin primitives (sign, verify, XChaCha20-Poly1305) call the
   libsodium functions through pynacl's own cffi module (``nacl._sodium``), the
   very functions ``nacl.bindings`` calls, without that layer's argument checks
   and extra copies, which cost as much as the cipher on a 1 KiB bulletin. The
   lengths libsodium relies on are checked here instead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Final

import nacl.bindings as _s
import nacl.exceptions
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from meshnode.errors import AuthenticationError

Rng = Callable[[int], bytes]
"""A source of random bytes: called with a length, returns that many bytes."""

KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
NONCE_SIZE: Final = 12
XNONCE_SIZE: Final = 24
TAG_SIZE: Final = 16


def blake2b_256(data: bytes) -> bytes:
    """BLAKE2b with a 32-byte digest (hashlib's is several times faster than pynacl's)."""
    return hashlib.blake2b(data, digest_size=32).digest()


def blake2b_512(data: bytes) -> bytes:
    """BLAKE2b with its full 64-byte digest: the Noise suite's HASH (HASHLEN 64)."""
    return hashlib.blake2b(data).digest()


def hmac_blake2b(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) over BLAKE2b-512, BLOCKLEN 128: the HMAC-HASH of Noise's HKDF.

    This is deliberately not keyed BLAKE2b: Noise defines its HKDF on HMAC, and
    interoperating with other Noise implementations needs exactly that.
    """
    return hmac.new(key, data, hashlib.blake2b).digest()


def derive(secret: bytes, label: bytes, size: int = 32) -> bytes:
    """A key for one purpose: BLAKE2b keyed with ``secret`` over the purpose ``label``."""
    return hashlib.blake2b(label, digest_size=size, key=secret).digest()


def signing_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """The Ed25519 (public key, 64-byte secret key) for a 32-byte seed."""
    return _s.crypto_sign_seed_keypair(seed)


def sign(secret_key: bytes, message: bytes) -> bytes:
    """A detached Ed25519 signature."""
    if len(secret_key) != 2 * KEY_SIZE:
        raise ValueError("an Ed25519 secret key is 64 bytes")
    signed = _ffi.new("unsigned char[]", len(message) + SIGNATURE_SIZE)
    if _lib.crypto_sign(signed, _ffi.NULL, message, len(message), secret_key) != 0:
        raise AuthenticationError("signing failed")
    return _ffi.buffer(signed, SIGNATURE_SIZE)[:]  # type: ignore[no-any-return]


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check a detached Ed25519 signature, raising :class:`AuthenticationError` if bad."""
    if len(signature) != SIGNATURE_SIZE or len(public_key) != KEY_SIZE:
        raise AuthenticationError("signature or key has the wrong length")
    signed = signature + message
    opened = _ffi.new("unsigned char[]", len(signed))
    if _lib.crypto_sign_open(opened, _ffi.NULL, signed, len(signed), public_key) != 0:
        raise AuthenticationError("signature does not verify")


def ed25519_pk_to_x25519(public_key: bytes) -> bytes:
    """The X25519 public key of an Ed25519 public key."""
    try:
        return _s.crypto_sign_ed25519_pk_to_curve25519(public_key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, RuntimeError):
        raise AuthenticationError("not a valid Ed25519 public key") from None


def ed25519_sk_to_x25519(secret_key: bytes) -> bytes:
    """The X25519 secret key of a 64-byte Ed25519 secret key."""
    return _s.crypto_sign_ed25519_sk_to_curve25519(secret_key)


def x25519_public(secret: bytes) -> bytes:
    """The X25519 public key of a 32-byte secret."""
    return _s.crypto_scalarmult_base(secret)


def x25519(secret: bytes, public: bytes) -> bytes:
    """X25519 shared secret; refuses low-order points (an all-zero result)."""
    if len(secret) != KEY_SIZE or len(public) != KEY_SIZE:
        raise AuthenticationError("X25519 key has the wrong length")
    try:
        shared: bytes = _s.crypto_scalarmult(secret, public)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, RuntimeError):
        raise AuthenticationError("X25519 with a low-order point") from None
    if shared == bytes(KEY_SIZE):
        raise AuthenticationError("X25519 with a low-order point")
    return shared


def xchacha_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XChaCha20-Poly1305 (IETF) encryption: ciphertext with the 16-byte tag appended."""
    return _aead_encrypt(
        _lib.crypto_aead_xchacha20poly1305_ietf_encrypt, XNONCE_SIZE, key, nonce, plaintext, ad
    )


def xchacha_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """XChaCha20-Poly1305 (IETF) decryption, raising :class:`AuthenticationError`."""
    return _aead_decrypt(
        _lib.crypto_aead_xchacha20poly1305_ietf_decrypt, XNONCE_SIZE, key, nonce, ciphertext, ad
    )


def chacha_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF, 12-byte nonce) encryption.

    Straight to libsodium, as :func:`xchacha_encrypt`: the session layer calls this
    once per message, and PyNaCl's checks cost more than the cipher on 1 KiB.
    """
    return _aead_encrypt(
        _lib.crypto_aead_chacha20poly1305_ietf_encrypt, NONCE_SIZE, key, nonce, plaintext, ad
    )


def chacha_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """ChaCha20-Poly1305 (IETF, 12-byte nonce) decryption, raising AuthenticationError."""
    return _aead_decrypt(
        _lib.crypto_aead_chacha20poly1305_ietf_decrypt, NONCE_SIZE, key, nonce, ciphertext, ad
    )


def _aead_encrypt(
    encrypt: Callable[..., int],
    nonce_size: int,
    key: bytes,
    nonce: bytes,
    plaintext: bytes,
    ad: bytes,
) -> bytes:
    """One libsodium ``*_ietf_encrypt`` call with the lengths checked here."""
    if len(key) != KEY_SIZE or len(nonce) != nonce_size:
        raise ValueError("key or nonce has the wrong length")
    out = bytearray(len(plaintext) + TAG_SIZE)
    rc = encrypt(
        _ffi.from_buffer(out), _ffi.NULL, plaintext, len(plaintext), ad, len(ad),
        _ffi.NULL, nonce, key,
    )  # fmt: skip
    if rc != 0:
        raise AuthenticationError("encryption failed")
    return bytes(out)


def _aead_decrypt(
    decrypt: Callable[..., int],
    nonce_size: int,
    key: bytes,
    nonce: bytes,
    ciphertext: bytes,
    ad: bytes,
) -> bytes:
    """One libsodium ``*_ietf_decrypt`` call; any failure is AuthenticationError."""
    if len(key) != KEY_SIZE or len(nonce) != nonce_size:
        raise AuthenticationError("key or nonce has the wrong length")
    if len(ciphertext) < TAG_SIZE:
        raise AuthenticationError("decryption failed: wrong key or altered data")
    out = bytearray(len(ciphertext) - TAG_SIZE)
    rc = decrypt(
        _ffi.from_buffer(out), _ffi.NULL, _ffi.NULL, ciphertext, len(ciphertext), ad, len(ad),
        nonce, key,
    )  # fmt: skip
    if rc != 0:
        raise AuthenticationError("decryption failed: wrong key or altered data")
    return bytes(out)


def secretbox_seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """XSalsa20-Poly1305 secretbox, for keyfiles and sealed store columns."""
    return _s.crypto_secretbox(plaintext, nonce, key)


def secretbox_open(key: bytes, nonce: bytes, box: bytes) -> bytes:
    """Open a secretbox, raising :class:`AuthenticationError`."""
    try:
        return _s.crypto_secretbox_open(box, nonce, key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError):
        raise AuthenticationError("sealed data does not open: wrong key or damaged") from None


def argon2id(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """A 32-byte key from a passphrase (Argon2id v1.3)."""
    from nacl.pwhash import argon2id as _a

    return _a.kdf(32, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
