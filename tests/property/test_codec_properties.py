"""Properties of the strict codec: total decoding, exact round trips, one encoding per value.

``noncanonical`` builds, for any value, its encodings in which exactly one node
(an integer, a string, a binary or an array header) takes a longer msgpack form
than the shortest one. msgpack decodes such bytes to the same value; meshnode
must refuse them. The bulletin properties reuse it.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core import codec
from meshnode.core.codec import DecodeError

Value = None | bool | int | str | bytes | list["Value"]

SETTINGS = settings(max_examples=300, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    # lengths around the 8- and 16-bit header boundaries
    | st.integers(min_value=250, max_value=300).map(lambda n: "s" * n)
    | st.integers(min_value=250, max_value=300).map(lambda n: b"b" * n)
)
values: st.SearchStrategy[Value] = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=20), max_leaves=40
)

_UINTS = ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8))
_INTS = ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8))


def _int_forms(v: int) -> list[bytes]:
    out = []
    if 0 <= v < 128:
        out.append(bytes([v]))
    if -32 <= v < 0:
        out.append(bytes([v & 0xFF]))
    out += [bytes([tag]) + v.to_bytes(n, "big") for tag, n in _UINTS if 0 <= v < 1 << (8 * n)]
    out += [
        bytes([tag]) + v.to_bytes(n, "big", signed=True)
        for tag, n in _INTS
        if -(1 << (8 * n - 1)) <= v < 1 << (8 * n - 1)
    ]
    return out


def _header_forms(
    n: int, fix: tuple[int, int] | None, tags: tuple[tuple[int, int], ...]
) -> list[bytes]:
    out = []
    if fix is not None and n < fix[1]:
        out.append(bytes([fix[0] | n]))
    out += [bytes([tag]) + n.to_bytes(size, "big") for tag, size in tags if n < 256**size]
    return out


def _forms(value: Value, body: bytes) -> list[bytes]:
    """Every msgpack encoding of one node whose children are already encoded in ``body``."""
    if value is None or isinstance(value, bool):
        return [codec.pack(value)]
    if isinstance(value, int):
        return _int_forms(value)
    if isinstance(value, str):
        heads = _header_forms(len(body), (0xA0, 32), ((0xD9, 1), (0xDA, 2), (0xDB, 4)))
    elif isinstance(value, bytes):
        heads = _header_forms(len(body), None, ((0xC4, 1), (0xC5, 2), (0xC6, 4)))
    else:
        heads = _header_forms(len(value), (0x90, 16), ((0xDC, 2), (0xDD, 4)))
    return [head + body for head in heads]


def count_nodes(value: Value) -> int:
    """How many nodes ``value`` has (a list counts itself and its elements' nodes)."""
    if isinstance(value, list):
        return 1 + sum(count_nodes(v) for v in value)
    return 1


def noncanonical(value: Value, target: int, choice: int) -> bytes | None:
    """``value`` encoded with node number ``target`` (pre-order) in a longer form.

    ``choice`` picks among that node's non-canonical forms; None if it has none
    (nil, booleans and uint64-sized integers have exactly one form).
    """
    counter = iter(range(count_nodes(value)))

    def encode(v: Value) -> tuple[bytes, bool]:
        here = next(counter)
        changed = False
        if isinstance(v, list):
            parts = [encode(x) for x in v]
            body = b"".join(p for p, _ in parts)
            changed = any(c for _, c in parts)
        elif isinstance(v, str):
            body = v.encode()
        elif isinstance(v, bytes):
            body = v
        else:
            body = b""
        canonical = codec.pack(v) if not isinstance(v, list) else None
        forms = _forms(v, body)
        shortest = canonical if canonical is not None else forms[0]
        if here == target:
            longer = [f for f in forms if f != shortest]
            if not longer:
                return shortest, changed
            return longer[choice % len(longer)], True
        return shortest, changed

    data, changed = encode(value)
    return data if changed else None


@SETTINGS
@given(st.binary(max_size=600))
def test_unpack_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.unpack(data, max_map=4)


@SETTINGS
@given(values, st.data())
def test_damaged_documents_raise_only_decode_error(value: Value, data: st.DataObject) -> None:
    """Random bytes rarely look like msgpack; damaged real documents reach deeper."""
    doc = bytearray(codec.pack(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        pos = data.draw(st.integers(min_value=0, max_value=len(doc) - 1))
        doc[pos] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(DecodeError):
        codec.unpack_canonical(bytes(doc), max_map=4)


@SETTINGS
@given(st.binary(max_size=600))
def test_unpack_canonical_accepts_only_what_pack_writes(data: bytes) -> None:
    try:
        value = codec.unpack_canonical(data)
    except DecodeError:
        return
    assert codec.pack(value) == data


@SETTINGS
@given(values)
def test_round_trip(value: Value) -> None:
    data = codec.pack(value)
    assert codec.unpack(data) == value
    assert codec.unpack_canonical(data) == value


@SETTINGS
@given(values, st.data())
def test_every_longer_form_is_refused(value: Value, data: st.DataObject) -> None:
    target = data.draw(st.integers(min_value=0, max_value=count_nodes(value) - 1))
    choice = data.draw(st.integers(min_value=0, max_value=7))
    variant = noncanonical(value, target, choice)
    if variant is None:
        return
    assert variant != codec.pack(value)
    assert codec.unpack(variant) == value  # the same value, only encoded differently
    with pytest.raises(DecodeError, match="canonical"):
        codec.unpack_canonical(variant)


@SETTINGS
@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused(value: Value, tail: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.unpack(codec.pack(value) + tail)
