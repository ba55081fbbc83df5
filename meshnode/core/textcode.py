"""Checksummed text forms for keys, invites and contact cards.

A text code is ``<prefix><payload>``, where the payload is the data followed by
a 4-byte BLAKE2b checksum (over prefix and data), written in lowercase
Crockford base32 (digits and letters without i, l, o, u). Such a code contains
only ``[0-9a-z]`` after its prefix, so it survives a terminal, a URL and a chat
message.

Reading (the rule of ``docs/spec/identity.md``, "Reading a code"):
1. ASCII letters are folded to lower case and nothing else is: a look-alike
   such as the Kelvin sign is not a ``k``, so one code has one spelling.
2. The code starts at the first occurrence of the prefix.
3. After the prefix comes a *run* of code characters (the alphabet, ``o`` read
   as ``0``, ``i`` and ``l`` as ``1``) and separators (space, tab, line
   breaks, ``-``, ``_``), so that a code a mail client broke across lines or
   that someone wrote in groups still reads. The first other character (``.``,
   ``)``, a quote, ``&``, ``u``, any non-ASCII character) ends the run.
4. The checksum decides where the code ends: the candidates are the run cut
   before each separator and at its end; the longest one that decodes (zero
   pad bits, a matching checksum) is the code. So trailing separators and the
   words of a sentence after a code drop off, while a changed or missing
   character still fails.
"""

from __future__ import annotations

import hashlib
import re
import string
from typing import Final

ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
CHECKSUM_SIZE: Final = 4
MAX_TEXT_CHARS: Final = 65536
"""The longest text a reader searches for a code (a code with what surrounds it)."""
_DECODE: Final = {c: i for i, c in enumerate(ALPHABET)} | {"o": 0, "i": 1, "l": 1}
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_SEPARATORS: Final = " \t\r\n-_"
_NOT_IN_RUN: Final = re.compile(r"[^0-9a-tv-z \t\r\n_-]")
_SEPARATOR_RUN: Final = re.compile(r"[ \t\r\n_-]+")
_DROP_SEPARATORS: Final = str.maketrans("", "", _SEPARATORS)
_AS_INT_DIGITS: Final = str.maketrans(ALPHABET + "oil", "0123456789abcdefghijklmnopqrstuv011")


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
    stray = set(text) - _DECODE.keys()
    if stray:
        raise TextCodeError(f"unexpected character {min(stray)!r}")
    # Each character is its value as a digit of Python's base 32: one C-speed conversion.
    n = int(text.translate(_AS_INT_DIGITS), 32) if text else 0
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


def decode(prefix: str, text: str, *, max_size: int = 4096) -> bytes:
    """Find and read a code written by :func:`encode` in ``text``.

    Args:
        prefix: the kind of code wanted (``mk1``, ``mni1``).
        text: what someone pasted: the code alone, or a sentence or link holding it.
        max_size: the most data bytes a code of this kind carries, so a reader
            never decodes more than the writer can make.

    Raises:
        TextCodeError: no code of this kind in ``text``, or a damaged one.
    """
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        raise TextCodeError("not a code of the expected size")
    folded = text.translate(_ASCII_LOWER)
    start = folded.find(prefix)
    if start < 0:
        raise TextCodeError(f"does not contain a code starting {prefix!r}")
    start += len(prefix)
    stop = _NOT_IN_RUN.search(folded, start)
    run = folded[start : stop.start() if stop else len(folded)]
    chars = run.translate(_DROP_SEPARATORS)
    ends = {len(chars)}
    dropped = 0
    for sep in _SEPARATOR_RUN.finditer(run):
        ends.add(sep.start() - dropped)  # a candidate end, counted in code characters
        dropped += sep.end() - sep.start()
    max_chars = -(-(max_size + CHECKSUM_SIZE) * 8 // 5)
    problem = None
    for end in sorted(ends, reverse=True):
        if end > max_chars:
            continue
        try:
            return _read(prefix, chars[:end])
        except TextCodeError as exc:
            problem = problem or str(exc)
    raise TextCodeError(problem or "longer than a code of this kind")


def _read(prefix: str, chars: str) -> bytes:
    """The data of the code characters ``chars`` (prefix and separators removed)."""
    raw = b32decode(chars)
    if len(raw) < CHECKSUM_SIZE:
        raise TextCodeError("too short")
    data, check = raw[:-CHECKSUM_SIZE], raw[-CHECKSUM_SIZE:]
    if _checksum(prefix, data) != check:
        raise TextCodeError("checksum mismatch (a typo or a truncated copy)")
    return data


def grouped(text: str, size: int = 4, sep: str = "-") -> str:
    """``text`` in groups of ``size`` characters, for reading aloud."""
    return sep.join(text[i : i + size] for i in range(0, len(text), size))
