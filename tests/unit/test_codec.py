"""The strict msgpack codec: bounds, trailing bytes, canonical form, typed failures."""

from __future__ import annotations

import msgpack
import pytest

from meshnode.core import codec
from meshnode.core.codec import DecodeError


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        127,
        128,
        -1,
        -33,
        2**64 - 1,
        -(2**63),
        "",
        "text ✊",
        b"",
        b"\x00\xff",
        [],
        [1, [2, [3, b"x"]], None, "s"],
    ],
)
def test_round_trip_is_canonical(value: object) -> None:
    data = codec.pack(value)
    assert codec.unpack(data) == value
    assert codec.unpack_canonical(data) == value


def test_bytes_pack_as_bin_and_text_as_str() -> None:
    assert codec.pack(b"ab") == b"\xc4\x02ab"
    assert codec.pack("ab") == b"\xa2ab"
    assert isinstance(codec.unpack(b"\xc4\x02ab"), bytes)
    assert isinstance(codec.unpack(b"\xa2ab"), str)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(DecodeError):
        codec.unpack(codec.pack([1, 2]) + b"\x00")
    with pytest.raises(DecodeError):
        codec.unpack(b"\x01\x02")


@pytest.mark.parametrize(
    "data", [b"", b"\x92\x01", b"\xc4\x05abc", b"\xdc\x00", b"\xc1", b"\xa3ab"]
)
def test_truncated_and_reserved_input_is_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.unpack(data)


def test_invalid_utf8_in_str_is_refused() -> None:
    with pytest.raises(DecodeError):
        codec.unpack(b"\xa2\xff\xfe")


def test_total_size_limit() -> None:
    data = codec.pack(b"x" * 100)
    assert codec.unpack(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(DecodeError, match="exceeds"):
        codec.unpack(data, max_size=len(data) - 1)
    with pytest.raises(DecodeError, match="exceeds"):
        codec.unpack(b"\xc0" * (codec.MAX_DOCUMENT + 1))


@pytest.mark.parametrize(
    ("value", "bound"),
    [
        ("x" * 11, "max_str"),
        (b"x" * 11, "max_bin"),
        (list(range(11)), "max_array"),
    ],
)
def test_length_limits(value: object, bound: str) -> None:
    data = codec.pack(value)
    assert codec.unpack(data, **{bound: 11}) == value
    with pytest.raises(DecodeError):
        codec.unpack(data, **{bound: 10})


def test_maps_are_refused_by_default_and_bounded_when_allowed() -> None:
    data = codec.pack({"a": 1})
    with pytest.raises(DecodeError):
        codec.unpack(data)
    assert codec.unpack(data, max_map=1) == {"a": 1}
    with pytest.raises(DecodeError):
        codec.unpack(msgpack.packb({1: 1}), max_map=1)  # non-str keys are refused


def test_declared_lengths_beyond_the_data_are_refused_cheaply() -> None:
    # A header claiming 2**32-1 elements or bytes with nothing behind it.
    for data in (b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"):
        with pytest.raises(DecodeError):
            codec.unpack(data)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(DecodeError):
        codec.unpack(b"\x91" * 100_000 + b"\xc0")


def test_ext_and_timestamps_are_refused() -> None:
    with pytest.raises(DecodeError):
        codec.unpack(msgpack.packb(msgpack.ExtType(5, b"abc")))
    with pytest.raises(DecodeError):
        codec.unpack(msgpack.packb(msgpack.Timestamp(1, 0)))


def test_floats_decode_but_bulletin_decoders_reject_them() -> None:
    # The codec is generic; the typed decoders above it check every field's type.
    assert codec.unpack(msgpack.packb(1.5)) == 1.5
    assert codec.unpack_canonical(msgpack.packb(1.5)) == 1.5  # float64 is msgpack's own form
    with pytest.raises(DecodeError):
        codec.unpack_canonical(msgpack.packb(1.5, use_single_float=True))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xcc\x01", "uint8 for a fixint"),
        (b"\xcd\x00\x01", "uint16 for a fixint"),
        (b"\xce\x00\x00\x00\x80", "uint32 for a uint8"),
        (b"\xcf" + (1).to_bytes(8, "big"), "uint64 for a fixint"),
        (b"\xd0\xff", "int8 for a negative fixint"),
        (b"\xd1\x00\x05", "int16 for a fixint"),
        (b"\xd0\x05", "int8 for a positive fixint"),
        (b"\xd9\x02ab", "str8 for a fixstr"),
        (b"\xda\x00\x02ab", "str16 for a fixstr"),
        (b"\xc5\x00\x02ab", "bin16 for a bin8"),
        (b"\xc6\x00\x00\x00\x02ab", "bin32 for a bin8"),
        (b"\xdc\x00\x01\x01", "array16 for a fixarray"),
        (b"\xdd\x00\x00\x00\x01\x01", "array32 for a fixarray"),
    ],
)
def test_non_canonical_encodings_are_refused(data: bytes, why: str) -> None:
    assert codec.pack(codec.unpack(data)) != data, why
    with pytest.raises(DecodeError, match="canonical"):
        codec.unpack_canonical(data)


def test_unpack_canonical_applies_the_bounds() -> None:
    with pytest.raises(DecodeError):
        codec.unpack_canonical(codec.pack("x" * 20), max_str=10)


@pytest.mark.parametrize("data", ["text", 12, None, [b"x"]])
def test_non_bytes_input_is_refused(data: object) -> None:
    with pytest.raises(DecodeError):
        codec.unpack(data)  # type: ignore[arg-type]


def test_memoryview_and_bytearray_are_accepted() -> None:
    data = codec.pack([1, b"x"])
    # The annotations say bytes (the common case); any bytes-like buffer works.
    assert codec.unpack(memoryview(data)) == [1, b"x"]  # type: ignore[arg-type]
    assert codec.unpack_canonical(bytearray(data)) == [1, b"x"]  # type: ignore[arg-type]


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


@pytest.mark.parametrize(
    ("data", "depth"),
    [
        (codec.pack(1), 0),
        (codec.pack([1, [2]]), 2),
        (codec.pack({"a": [1]}), 2),
        (b"\x91" * 900 + b"\xc0", 900),
        (b"\x81\xa1a" * 900 + b"\xc0", 900),
    ],
)
def test_max_depth_counts_arrays_and_maps(data: bytes, depth: int) -> None:
    """Code that walks a value recursively asks for a depth bound; the check itself
    does not recurse."""
    assert codec.unpack(data, max_map=1, max_depth=depth) == codec.unpack(data, max_map=1)
    if depth:
        with pytest.raises(DecodeError, match=f"deeper than {depth - 1}"):
            codec.unpack(data, max_map=1, max_depth=depth - 1)


def test_a_bound_on_containers_stops_a_document_of_empty_maps_early() -> None:
    """Each byte of ``[{}, {}, ...]`` is a map of some 64 bytes once built: the count
    stops the decode as the bound is passed, not after."""
    bomb = codec.pack([{}] * 50_000)
    with pytest.raises(codec.DecodeError, match="more than 256 arrays and maps"):
        codec.unpack(bomb, max_size=len(bomb), max_array=50_000, max_map=1, max_containers=256)
    fine = codec.pack([{"a": [1, 2]}, [], {}])
    assert codec.unpack(fine, max_map=1, max_containers=5) == [{"a": [1, 2]}, [], {}]
    with pytest.raises(codec.DecodeError):
        codec.unpack(fine, max_map=1, max_containers=4)
