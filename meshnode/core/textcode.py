"""Checksummed text forms for keys, invites and contact cards.

A text code is ``<prefix><payload>``, where the payload is the data followed by
a 4-byte BLAKE2b checksum (over prefix and data), written in lowercase
Crockford base32 (digits and letters without i, l, o, u). Such a code contains
only ``[0-9a-z]`` after its prefix, so it survives a terminal, a URL and a chat
message. Reading is forgiving where it cannot be wrong (case, spaces, dashes,
line breaks, ``o`` for ``0`` and ``i``/``l`` for ``1``) and strict everywhere
else: a changed character fails the checksum.
"""

from __future__ import annotations

import hashlib
from typing import Final

ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
CHECKSUM_SIZE: Final = 4
_DECODE: Final = {c: i for i, c in enumerate(ALPHABET)} | {"o": 0, "i": 1, "l": 1}
_IGNORED: Final = str.maketrans("", "", " \t\r\n-_")


class TextCodeError(ValueError):
    """The text is not a valid code of the expected kind (callers re-raise their own)."""


def b32encode(data: bytes) -> str:
    """Crockford base32, lowercase, no padding."""
    n = int.from_bytes(data, "big")
    bits = len(data) * 8
    chars = -(-bits // 5)
    n <<= chars * 5 - bits
    out = [ALPHABET[(n >> (5 * i)) & 31] for i in range(chars - 1, -1, -1)]
    return "".join(out)


def b32decode(text: str) -> bytes:
    """Inverse of :func:`b32encode`; refuses stray characters and non-zero pad bits."""
    n = 0
    for ch in text:
        v = _DECODE.get(ch)
        if v is None:
            raise TextCodeError(f"unexpected character {ch!r}")
        n = (n << 5) | v
    bits = len(text) * 5
    size = bits // 8
    pad = bits - size * 8
    if pad >= 5 or n & ((1 << pad) - 1):
        raise TextCodeError("wrong length")
    return (n >> pad).to_bytes(size, "big")


def _checksum(prefix: str, data: bytes) -> bytes:
    return hashlib.blake2b(prefix.encode() + data, digest_size=CHECKSUM_SIZE).digest()


def encode(prefix: str, data: bytes) -> str:
    """The checksummed text form of ``data`` under ``prefix``."""
    return prefix + b32encode(data + _checksum(prefix, data))


def decode(prefix: str, text: str, *, max_chars: int = 4096) -> bytes:
    """Read a code written by :func:`encode`, raising :class:`TextCodeError`."""
    if not isinstance(text, str) or len(text) > max_chars:
        raise TextCodeError("not a code of the expected size")
    cleaned = text.strip().lower()
    if not cleaned.startswith(prefix):
        raise TextCodeError(f"does not start with {prefix!r}")
    raw = b32decode(cleaned[len(prefix) :].translate(_IGNORED))
    if len(raw) < CHECKSUM_SIZE:
        raise TextCodeError("too short")
    data, check = raw[:-CHECKSUM_SIZE], raw[-CHECKSUM_SIZE:]
    if _checksum(prefix, data) != check:
        raise TextCodeError("checksum mismatch (a typo or a truncated copy)")
    return data


def grouped(text: str, size: int = 4, sep: str = "-") -> str:
    """``text`` in groups of ``size`` characters, for reading aloud."""
    return sep.join(text[i : i + size] for i in range(0, len(text), size))
