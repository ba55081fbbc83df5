"""Group identities: an Ed25519 key pair and a display name.

Theory of operation:
- The 32-byte seed is the whole secret. The Ed25519 key pair signs, the X25519
  key pair derived from it (libsodium's birational map) encrypts and runs the
  Noise handshake, and the store's sealing key is derived from the seed, so
  one passphrase protects all three.
- People compare the *fingerprint* aloud: 80 bits of BLAKE2b of the public key
  in 16 Crockford base32 characters, in four groups. Machines exchange the
  *key text*: ``mk1`` and the full key with a 4-byte checksum (see textcode).
- The keyfile is bytes in, bytes out here; :func:`meshnode.save_identity` writes it
  with mode 0600 and :func:`meshnode.load_identity` reads it. Format (msgpack array,
  version 1)::

      ["meshnode-keyfile", 1, name, kdf, nonce, secret]

  ``kdf`` is nil for an unsealed file (``secret`` is the 32-byte seed) or
  ``["argon2id13", opslimit, memlimit, salt]`` for a sealed one (``secret`` is
  the seed in a secretbox under the Argon2id key, ``nonce`` its 24-byte nonce).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from meshnode.core import codec, crypto, providers, textcode
from meshnode.core._deprecate import warn_deprecated
from meshnode.errors import AuthenticationError, InvalidKey, KeyfileError, WrongPassphrase

KEY_PREFIX: Final = "mk1"
MAX_NAME_CHARS: Final = 64
KEYFILE_MAGIC: Final = "meshnode-keyfile"
KEYFILE_VERSION: Final = 1
KDF_ARGON2ID: Final = "argon2id13"
# About a second on the reference machine (2 cores); tests pass cheaper costs.
DEFAULT_OPSLIMIT: Final = 3
DEFAULT_MEMLIMIT: Final = 384 * 1024 * 1024
MAX_OPSLIMIT: Final = 64
MAX_MEMLIMIT: Final = 4 * 1024 * 1024 * 1024
_STORE_SEAL_LABEL: Final = b"meshnode/v1/store-seal"
# The Unicode White_Space property (a fixed list), which names are trimmed of:
# not str.strip()'s notion, which also strips the controls U+001C to U+001F.
_WHITE_SPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_REFUSED_IN_NAMES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def format_key(public_key: bytes) -> str:
    """The checksummed text form of a 32-byte public key (``mk1...``)."""
    if not isinstance(public_key, bytes) or len(public_key) != crypto.KEY_SIZE:
        raise InvalidKey("a public key is 32 bytes")
    return textcode.encode(KEY_PREFIX, public_key)


def parse_key(text: str) -> bytes:
    """Read a key written by :func:`format_key`, refusing typos and truncations."""
    try:
        key = textcode.decode(KEY_PREFIX, text, max_size=crypto.KEY_SIZE)
    except textcode.TextCodeError as exc:
        raise InvalidKey(f"not a meshnode key: {exc}") from None
    if len(key) != crypto.KEY_SIZE:
        raise InvalidKey("not a meshnode key: wrong length")
    return key


@functools.lru_cache(maxsize=4096)
def fingerprint(public_key: bytes) -> str:
    """Sixteen unambiguous characters in four groups, for comparing a key aloud.

    Cached: every bulletin shown to a reader names its author by it."""
    digest = crypto.derive(public_key, b"meshnode/v1/fingerprint", size=10)
    return textcode.grouped(textcode.b32encode(digest))


def normalize_name(name: str) -> str:
    """A group's display name or a channel's name as stored and signed.

    The one rule for names (``docs/spec/identity.md``, "Names"): NFC, so one
    name has one spelling; trimmed of Unicode White_Space at both ends, since
    a pasted name often carries a space or a line break; then 1 to 64 code
    points, none of category C (control, format, surrogate, private use,
    unassigned) nor a line or paragraph separator, because a name is one line
    that shows what it says: no bidi override, no invisible character.

    Raises:
        ValueError: the name breaks the rule; the message says how.
    """
    if not isinstance(name, str):
        raise ValueError("a name is text")
    clean = unicodedata.normalize("NFC", name).strip(_WHITE_SPACE)
    if not 1 <= len(clean) <= MAX_NAME_CHARS:
        raise ValueError(f"a name has 1 to {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(ch) in _REFUSED_IN_NAMES for ch in clean):
        raise ValueError(
            "a name cannot contain control, format, private-use, unassigned or "
            "line-separator characters"
        )
    return clean


@dataclass(frozen=True, eq=False)
class Identity:
    """A group's identity: its signing keys, encryption keys and display name."""

    name: str
    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    _secret_key: bytes = field(init=False, repr=False)
    x25519_public: bytes = field(init=False)
    _x25519_secret: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != crypto.KEY_SIZE:
            raise ValueError("an identity seed is 32 bytes")
        object.__setattr__(self, "name", normalize_name(self.name))
        pk, sk = crypto.signing_keypair(self.seed)
        object.__setattr__(self, "public_key", pk)
        object.__setattr__(self, "_secret_key", sk)
        object.__setattr__(self, "x25519_public", crypto.ed25519_pk_to_x25519(pk))
        object.__setattr__(self, "_x25519_secret", crypto.ed25519_sk_to_x25519(sk))

    @classmethod
    def from_seed(cls, seed: bytes, name: str) -> Identity:
        """The identity of a 32-byte seed (``Identity.generate`` draws one at random)."""
        return cls(name=name, seed=seed)

    @classmethod
    def generate(cls, name: str) -> Identity:
        """A new identity with a fresh random key (from the installed providers).

        Keep it with :func:`meshnode.save_identity`: the seed is the group's whole secret.
        """
        return cls.from_seed(providers.current().random(crypto.KEY_SIZE), name)

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.public_key)

    @property
    def key_text(self) -> str:
        """See :func:`format_key`."""
        return format_key(self.public_key)

    @property
    def x25519_secret(self) -> bytes:
        """The X25519 secret key, for sealing and opening and for the Noise handshake."""
        return self._x25519_secret

    def sign(self, message: bytes) -> bytes:
        """A detached Ed25519 signature by this identity."""
        return crypto.sign(self._secret_key, message)

    def dh(self, public: bytes) -> bytes:
        """X25519 with this identity's encryption key (refuses low-order points)."""
        return crypto.x25519(self._x25519_secret, public)

    def store_seal_key(self) -> bytes:
        """The key that seals channel secrets in the store: only the seed yields it."""
        return crypto.derive(self.seed, _STORE_SEAL_LABEL)

    def to_keyfile(
        self,
        passphrase: str | None,
        *,
        rng: crypto.Rng,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> bytes:
        """The keyfile bytes, sealed under ``passphrase`` when one is given."""
        if passphrase is None:
            return codec.pack([KEYFILE_MAGIC, KEYFILE_VERSION, self.name, None, b"", self.seed])
        if not passphrase:
            raise ValueError("an empty passphrase protects nothing: give one or none")
        salt = rng(16)
        nonce = rng(24)
        key = crypto.argon2id(passphrase.encode(), salt, opslimit, memlimit)
        box = crypto.secretbox_seal(key, nonce, self.seed)
        kdf = [KDF_ARGON2ID, opslimit, memlimit, salt]
        return codec.pack([KEYFILE_MAGIC, KEYFILE_VERSION, self.name, kdf, nonce, box])

    @classmethod
    def from_keyfile(cls, data: bytes, passphrase: str | None) -> Identity:
        """Read keyfile bytes, raising :class:`KeyfileError` or :class:`WrongPassphrase`."""
        name, kdf, nonce, secret = _parse_keyfile(data)
        if kdf is None:
            return cls(name=name, seed=secret)
        if passphrase is None:
            raise WrongPassphrase("this keyfile is protected by a passphrase: give it")
        _alg, opslimit, memlimit, salt = kdf
        key = crypto.argon2id(passphrase.encode(), salt, opslimit, memlimit)
        try:
            seed = crypto.secretbox_open(key, nonce, secret)
        except AuthenticationError:
            raise WrongPassphrase("wrong passphrase (or a damaged keyfile)") from None
        return cls(name=name, seed=seed)

    def save(
        self,
        path: providers.StrPath,
        passphrase: str | None = None,
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> None:
        """Deprecated since 0.2.0: use ``meshnode.save_identity(identity, path, ...)``."""
        warn_deprecated("Identity.save(path)", instead="meshnode.save_identity(identity, path)")
        system = providers.current()
        data = self.to_keyfile(
            passphrase, rng=system.random, opslimit=opslimit, memlimit=memlimit
        )
        system.write_keyfile(path, data)

    @classmethod
    def load(cls, path: providers.StrPath, passphrase: str | None = None) -> Identity:
        """Deprecated since 0.2.0: use ``meshnode.load_identity(path, ...)``."""
        warn_deprecated("Identity.load(path)", instead="meshnode.load_identity(path)")
        return cls.from_keyfile(providers.current().read_keyfile(path), passphrase)

    @staticmethod
    def keyfile_is_sealed(data: bytes) -> bool:
        """Whether the keyfile needs a passphrase (so a CLI knows to ask for one)."""
        return _parse_keyfile(data)[1] is not None


def _parse_keyfile(data: bytes) -> tuple[str, tuple[str, int, int, bytes] | None, bytes, bytes]:
    try:
        doc = codec.unpack(data, max_size=4096, max_str=256, max_bin=256, max_array=8)
    except codec.DecodeError:
        raise KeyfileError("not a meshnode keyfile (damaged or another kind of file)") from None
    if not (isinstance(doc, list) and len(doc) == 6 and doc[0] == KEYFILE_MAGIC):
        raise KeyfileError("not a meshnode keyfile (damaged or another kind of file)")
    _magic, version, name, kdf, nonce, secret = doc
    if version != KEYFILE_VERSION:
        raise KeyfileError(
            f"keyfile version {codec.describe(version)} is not supported by this meshnode"
        )
    if not isinstance(name, str) or not isinstance(nonce, bytes) or not isinstance(secret, bytes):
        raise KeyfileError("damaged keyfile")
    try:
        name = normalize_name(name)
    except ValueError:
        raise KeyfileError("damaged keyfile (the name is not a valid display name)") from None
    if kdf is None:
        if len(secret) != crypto.KEY_SIZE:
            raise KeyfileError("damaged keyfile")
        return name, None, nonce, secret
    if not (
        isinstance(kdf, list)
        and len(kdf) == 4
        and kdf[0] == KDF_ARGON2ID
        and type(kdf[1]) is int
        and type(kdf[2]) is int
        and isinstance(kdf[3], bytes)
        and 1 <= kdf[1] <= MAX_OPSLIMIT
        and 8192 <= kdf[2] <= MAX_MEMLIMIT
        and len(kdf[3]) == 16
        and len(nonce) == 24
        and len(secret) == crypto.KEY_SIZE + crypto.TAG_SIZE
    ):
        raise KeyfileError("damaged keyfile (unknown or out-of-range key derivation)")
    return name, (kdf[0], kdf[1], kdf[2], kdf[3]), nonce, secret
