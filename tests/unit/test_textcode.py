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


# --- finding a code in what people paste (identity.md, "Reading a code") ------------------

DATA = bytes(range(20))
CODE = textcode.encode("tc1", DATA)
BODY = CODE[3:]


@pytest.mark.parametrize(
    "text",
    [
        f"Our key: {CODE}.",
        f"Our key: {CODE}. See you Friday!",
        f"({CODE})",
        f'"{CODE}"',
        f"'{CODE}',",
        f"«{CODE}»",
        f"<{CODE}>",
        f"https://meshnode.example/join#{CODE}",
        f"https://meshnode.example/join?code={CODE}&via=chat",
        f"{CODE} see you friday",  # the words after it are code characters but for 'u'
        f"{CODE} - sent from my phone",
        f"{CODE}--\n",
        "tc1 " + textcode.grouped(BODY, 4, " ") + " and more words",
        "tc1" + textcode.grouped(BODY, 7, "\r\n") + "\r\n\r\nthanks",
        "TC1" + textcode.grouped(BODY.upper(), 5, "-") + ".",
        "> tc1" + BODY[:20] + "\n" + BODY[20:] + "\n> next line",
        CODE[:-1] + " " + CODE[-1],  # a break anywhere, even before the last character
    ],
)
def test_code_is_found_in_sentences_links_and_broken_lines(text: str) -> None:
    assert textcode.decode("tc1", text) == DATA


@pytest.mark.parametrize(
    "text",
    [
        CODE + "0",  # an extra code character is not cut off: only separators end a code
        CODE[:-1] + "." + CODE[-1],
        "tc1 tc1" + BODY,  # the first prefix is the code's start, and it has none
        CODE[:10] + "u" + CODE[10:],
    ],
)
def test_a_code_is_never_mended(text: str) -> None:
    with pytest.raises(TextCodeError):
        textcode.decode("tc1", text)


@pytest.mark.parametrize(
    ("written", "ascii", "look_alike"),
    [
        ("k", "K", "\u212a"),  # KELVIN SIGN, which str.lower() makes "k"
        ("1", "I", "\u0130"),  # LATIN CAPITAL LETTER I WITH DOT ABOVE, lower() "i" + U+0307
        ("a", "A", "\uff21"),  # FULLWIDTH LATIN CAPITAL LETTER A
        ("0", "O", "\u0660"),  # ARABIC-INDIC DIGIT ZERO, which int() reads as 0
    ],
)
def test_only_ascii_letters_are_folded(written: str, ascii: str, look_alike: str) -> None:
    data = next(
        d for n in range(256) if written in textcode.encode("tc1", d := bytes([n] * 20))[3:]
    )
    body = textcode.encode("tc1", data)[3:]
    assert textcode.decode("tc1", "tc1" + body.replace(written, ascii)) == data
    with pytest.raises(TextCodeError):
        textcode.decode("tc1", "tc1" + body.replace(written, look_alike))


def test_prefix_is_ascii_folded_only() -> None:
    code = textcode.encode("mk1", DATA)
    assert textcode.decode("mk1", "MK1" + code[3:]) == DATA
    with pytest.raises(TextCodeError, match="does not contain"):
        textcode.decode("mk1", "m\u212a1" + code[3:])


def test_size_limits() -> None:
    data = bytes(range(40))
    code = textcode.encode("tc1", data)
    assert textcode.decode("tc1", code, max_size=40) == data
    with pytest.raises(TextCodeError, match="longer"):
        textcode.decode("tc1", code, max_size=39)
    padded = " " * (textcode.MAX_TEXT_CHARS - len(code)) + code
    assert textcode.decode("tc1", padded) == data
    with pytest.raises(TextCodeError, match="size"):
        textcode.decode("tc1", " " + padded)


def test_a_text_full_of_separators_is_refused_quickly() -> None:
    """Every separator makes a candidate; decoding each is C-speed, so this stays fast."""
    text = "tc1" + "a " * ((textcode.MAX_TEXT_CHARS - 3) // 2)
    with pytest.raises(TextCodeError):
        textcode.decode("tc1", text)
