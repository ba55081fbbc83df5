"""Deeply nested values where a decoder names a field in its error message.

msgpack decodes arrays up to its own depth limit (about 1000 levels), but
repr() of 600 nested lists raises RecursionError: every decoder that quoted a
bad version or kind with ``!r`` let that escape instead of its typed error.
Found by ``make fuzz`` (target ``bulletin``); the others by inspection.
"""

from __future__ import annotations

import pytest

from meshnode.core import codec, crypto, textcode
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import INVITE_PREFIX as CHANNEL_PREFIX
from meshnode.core.channel import Channel
from meshnode.core.identity import KEYFILE_MAGIC, Identity
from meshnode.core.invite import INVITE_PREFIX, parse_code
from meshnode.core.operation import decode_op
from meshnode.errors import InvalidBulletin, InvalidInvite, InvalidOperation, KeyfileError

DEEP = b"\x91" * 600 + b"\x90"
"""600 nested one-element arrays: within msgpack's depth limit, beyond repr's."""
SIG = bytes(crypto.SIGNATURE_SIZE)


def _array(*items: bytes) -> bytes:
    assert len(items) < 16
    return bytes([0x90 + len(items)]) + b"".join(items)


def test_describe_names_containers_by_type_and_shortens_the_rest() -> None:
    assert codec.describe(codec.unpack(DEEP, max_array=1)) == "a list"
    assert codec.describe(3) == "3"
    assert codec.describe("x" * 100) == repr("x" * 40)[:40] + "..."


def test_bulletin_with_a_deep_version() -> None:
    with pytest.raises(InvalidBulletin, match="version a list"):
        Bulletin.from_bytes(_array(DEEP, *[b"\x01"] * 10) + SIG)


def test_bulletin_with_a_deep_kind() -> None:
    with pytest.raises(InvalidBulletin, match="kind a list"):
        Bulletin.from_bytes(_array(b"\x01", DEEP, *[b"\x01"] * 9) + SIG)


def test_operation_with_a_deep_version() -> None:
    with pytest.raises(InvalidOperation, match="version a list"):
        decode_op(_array(DEEP, *[b"\x01"] * 7) + SIG)


def test_keyfile_with_a_deep_version() -> None:
    with pytest.raises(KeyfileError, match="version a list"):
        Identity.from_keyfile(_array(codec.pack(KEYFILE_MAGIC), DEEP, *[b"\xc0"] * 4), None)


def test_invite_code_with_a_deep_version() -> None:
    code = textcode.encode(INVITE_PREFIX, _array(DEEP, *[b"\xc0"] * 9) + SIG)
    with pytest.raises(InvalidInvite, match="version a list"):
        parse_code(code, now=0)


def test_channel_invite_with_a_deep_version() -> None:
    code = textcode.encode(CHANNEL_PREFIX, _array(DEEP, *[b"\xc0"] * 8) + SIG)
    with pytest.raises(InvalidInvite, match="version a list"):
        Channel.parse_invite(code, now=0)
