"""Checksummed base32 text codes: exact round trips, forgiving reading, strict checking."""

from __future__ import annotations

import pytest

from meshnode.core import textcode
from meshnode.core.textcode import ALPHABET, TextCodeError


def test_alphabet_is_crockford_lowercase_without_ambiguous_letters() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 32
    assert not set(ALPHABET) & set("ilou")
    assert "".join(sorted(ALPHABET)) == ALPHABET


@pytest.mark.parametrize("size", range(41))
def test_b32_round_trip_every_length(size: int) -> None:
    data = bytes((i * 37 + size) % 256 for i in range(size))
    text = textcode.b32encode(data)
    assert len(text) == -(-size * 8 // 5)
    assert set(text) <= set(ALPHABET)
    assert textcode.b32decode(text) == data


def test_b32_known_values() -> None:
    assert textcode.b32encode(b"") == ""
    assert textcode.b32encode(b"\x00") == "00"
    assert textcode.b32encode(b"\xff") == "zw"
    assert textcode.b32encode(b"\xff" * 5) == "z" * 8


def test_b32_reads_aliases_for_ambiguous_letters() -> None:
    assert textcode.b32decode("o0") == textcode.b32decode("00")
    assert textcode.b32decode("i0") == textcode.b32decode("l0") == textcode.b32decode("10")


@pytest.mark.parametrize("text", ["u0", "!0", "0 ", "ä0", "0U"])
def test_b32_refuses_stray_characters(text: str) -> None:
    with pytest.raises(TextCodeError):
        textcode.b32decode(text)


@pytest.mark.parametrize("text", ["0", "000", "000000"])
def test_b32_refuses_impossible_lengths(text: str) -> None:
    with pytest.raises(TextCodeError):
        textcode.b32decode(text)


def test_b32_refuses_non_zero_padding_bits() -> None:
    # One byte is 8 bits in two characters: the last two bits are padding.
    assert textcode.b32decode("zw") == b"\xff"
    for last in "xyz":
        with pytest.raises(TextCodeError):
            textcode.b32decode("z" + last)


def test_code_round_trip_and_tolerance() -> None:
    data = bytes(range(20))
    code = textcode.encode("tc1", data)
    assert code.startswith("tc1")
    assert textcode.decode("tc1", code) == data
    assert textcode.decode("tc1", code.upper()) == data
    assert textcode.decode("tc1", f"  {code}\n") == data
    body = code[3:]
    spaced = "tc1" + " ".join(textcode.grouped(body, 5, "-").split("-"))
    assert textcode.decode("tc1", spaced) == data
    assert textcode.decode("tc1", "tc1" + textcode.grouped(body)) == data
    assert textcode.decode("tc1", "tc1" + body.replace("0", "o").replace("1", "l")) == data


def test_code_checksum_is_bound_to_the_prefix() -> None:
    data = b"same data"
    one = textcode.encode("aa1", data)
    two = textcode.encode("bb1", data)
    assert one[3:] != two[3:]
    with pytest.raises(TextCodeError):
        textcode.decode("bb1", "bb1" + one[3:])


def test_code_refuses_every_single_character_change() -> None:
    data = bytes(range(32))
    code = textcode.encode("tc1", data)
    for pos in range(len(code)):
        for ch in ALPHABET:
            changed = code[:pos] + ch + code[pos + 1 :]
            if changed == code:
                continue
            with pytest.raises(TextCodeError):
                textcode.decode("tc1", changed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tc1",
        "tc",
        "xx1000000000",
        "tc100",
        "tc1" + "0" * 5000,
    ],
)
def test_code_refuses_garbage(text: str) -> None:
    with pytest.raises(TextCodeError):
        textcode.decode("tc1", text)


def test_code_refuses_non_text() -> None:
    with pytest.raises(TextCodeError):
        textcode.decode("tc1", b"tc1000000000")  # type: ignore[arg-type]


def test_truncated_code_is_refused() -> None:
    code = textcode.encode("tc1", bytes(range(32)))
    for end in range(len(code)):
        with pytest.raises(TextCodeError):
            textcode.decode("tc1", code[:end])


def test_grouped() -> None:
    assert textcode.grouped("abcdefghij") == "abcd-efgh-ij"
    assert textcode.grouped("abcdef", 3, " ") == "abc def"
    assert textcode.grouped("") == ""
