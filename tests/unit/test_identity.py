"""Group identities: fingerprints, key texts, names and keyfiles."""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING

import pytest

import meshnode
import meshnode.api
from meshnode.api import load_identity, save_identity
from meshnode.core import codec, crypto, providers, textcode
from meshnode.core.identity import (
    KEYFILE_MAGIC,
    KEYFILE_VERSION,
    MAX_NAME_CHARS,
    Identity,
    fingerprint,
    format_key,
    normalize_name,
    parse_key,
)
from meshnode.errors import InvalidKey, KeyfileError, MeshError, WrongPassphrase
from tests.conftest import StoppedClock, seeded_rng

if TYPE_CHECKING:
    from pathlib import Path

CHEAP = {"opslimit": 1, "memlimit": 8192}
FINGERPRINT = re.compile(r"^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$")


def test_identity_from_seed_is_deterministic(alice: Identity) -> None:
    again = Identity.from_seed(alice.seed, alice.name)
    assert again.public_key == alice.public_key
    assert again.x25519_public == alice.x25519_public
    assert again.x25519_secret == alice.x25519_secret
    assert len(alice.public_key) == len(alice.x25519_public) == 32
    assert crypto.x25519_public(alice.x25519_secret) == alice.x25519_public
    assert crypto.ed25519_pk_to_x25519(alice.public_key) == alice.x25519_public


def test_identity_refuses_a_wrong_seed() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Identity.from_seed(b"\x01" * 31, "x")


def test_sign_and_dh(alice: Identity, bob: Identity) -> None:
    crypto.verify(alice.public_key, b"msg", alice.sign(b"msg"))
    assert alice.dh(bob.x25519_public) == bob.dh(alice.x25519_public)
    assert alice.dh(bob.x25519_public) != alice.dh(alice.x25519_public)


def test_secrets_stay_out_of_repr(alice: Identity) -> None:
    text = repr(alice)
    assert alice.seed.hex() not in text
    assert "Local 12" in text


def test_store_seal_key_is_bound_to_the_seed(alice: Identity, bob: Identity) -> None:
    assert len(alice.store_seal_key()) == 32
    assert alice.store_seal_key() == Identity.from_seed(alice.seed, "other").store_seal_key()
    assert alice.store_seal_key() != bob.store_seal_key()
    assert alice.store_seal_key() not in (alice.seed, alice.x25519_secret)


# --- fingerprints and key texts ------------------------------------------------------


def test_fingerprint_format(alice: Identity, bob: Identity) -> None:
    for who in (alice, bob):
        assert FINGERPRINT.match(who.fingerprint)
        assert who.fingerprint == fingerprint(who.public_key)
    assert alice.fingerprint != bob.fingerprint


def test_fingerprint_has_no_ambiguous_characters() -> None:
    seen: set[str] = set()
    for i in range(200):
        seen |= set(fingerprint(i.to_bytes(32, "big")))
    assert seen <= set(textcode.ALPHABET) | {"-"}
    assert not seen & set("ilou")


def test_key_text_round_trip(alice: Identity) -> None:
    text = format_key(alice.public_key)
    assert text == alice.key_text
    assert text.startswith("mk1")
    assert re.fullmatch(r"mk1[0-9a-hjkmnp-tv-z]+", text)
    assert parse_key(text) == alice.public_key


def test_key_text_tolerates_case_spaces_and_look_alikes(alice: Identity) -> None:
    text = format_key(alice.public_key)
    body = text[3:]
    variants = [
        text.upper(),
        f"  {text}\n",
        "mk1" + textcode.grouped(body),
        "mk1" + " ".join(textcode.grouped(body).split("-")),
        "mk1" + "\n".join(textcode.grouped(body, 20).split("-")),
        "mk1" + body.replace("0", "O").replace("1", "l"),
    ]
    for variant in variants:
        assert parse_key(variant) == alice.public_key


def test_every_single_character_substitution_is_refused(alice: Identity) -> None:
    text = format_key(alice.public_key)
    refused = 0
    for pos in range(len(text)):
        for ch in textcode.ALPHABET:
            changed = text[:pos] + ch + text[pos + 1 :]
            if changed == text:
                continue
            with pytest.raises(InvalidKey):
                parse_key(changed)
            refused += 1
    assert refused == len(text) * 31


@pytest.mark.parametrize("cut", [1, 2, 5, 20])
def test_truncated_or_extended_key_text_is_refused(alice: Identity, cut: int) -> None:
    text = format_key(alice.public_key)
    with pytest.raises(InvalidKey):
        parse_key(text[:-cut])
    with pytest.raises(InvalidKey):
        parse_key(text + "0" * cut)


@pytest.mark.parametrize(
    ("written", "ascii", "look_alike"), [("k", "K", "\u212a"), ("1", "I", "\u0130")]
)
def test_key_text_refuses_non_ascii_look_alikes(written: str, ascii: str, look_alike: str) -> None:
    """Key texts are ASCII: str.lower() would read the Kelvin sign as k; we do not."""
    key = next(k for n in range(256) if written in format_key(k := bytes([n]) * 32)[3:])
    body = format_key(key)[3:]
    assert parse_key("mk1" + body.replace(written, ascii)) == key
    with pytest.raises(InvalidKey):
        parse_key("mk1" + body.replace(written, look_alike))


def test_other_text_codes_are_not_keys(alice: Identity) -> None:
    invite_like = textcode.encode("mni1", alice.public_key)
    short = textcode.encode("mk1", alice.public_key[:16])
    for text in (invite_like, short, "", "mk1", "hello", "mk1" + "z" * 300):
        with pytest.raises(InvalidKey):
            parse_key(text)


def test_format_key_refuses_non_keys() -> None:
    for bad in (b"", b"\x00" * 31, b"\x00" * 33, "0" * 32):
        with pytest.raises(InvalidKey):
            format_key(bad)  # type: ignore[arg-type]


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Local 12", "Local 12"),
        ("  Local 12\n", "Local 12"),
        ("Cafe\u0301", "Café"),  # NFD becomes NFC
        ("x" * MAX_NAME_CHARS, "x" * MAX_NAME_CHARS),
        ("Syndicat des locataires ✊", "Syndicat des locataires ✊"),
        # The limit counts code points after NFC and trimming, not bytes or input length.
        ("\U0001f600" * MAX_NAME_CHARS, "\U0001f600" * MAX_NAME_CHARS),  # 256 bytes of UTF-8
        ("e\u0301" * MAX_NAME_CHARS, "\u00e9" * MAX_NAME_CHARS),  # 128 code points before NFC
        ("\u3000\u00a0" + "x" * MAX_NAME_CHARS + "\u2029\x85", "x" * MAX_NAME_CHARS),
        ("a\u00a0b\u3000c", "a\u00a0b\u3000c"),  # white space inside stays
        ("Ω\u212b", "Ω\u00c5"),  # NFC maps the Angstrom sign to Å
    ],
)
def test_names_are_normalized(given: str, stored: str) -> None:
    assert normalize_name(given) == stored
    assert Identity.from_seed(bytes(32), given).name == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "\u3000\n\u2028",
        "x" * (MAX_NAME_CHARS + 1),
        "\u00e9" * MAX_NAME_CHARS + "e\u0301",  # 65 after NFC
        "Local\x0012",  # Cc
        "tab\there",  # Cc inside (only the ends are trimmed)
        "bidi\u202eevil",  # Cf: a right-to-left override
        "zero\u200bwidth",  # Cf
        "Local 12\x1c",  # Cc at the end: not White_Space, so refused, not trimmed
        "private\ue000",  # Co
        "unassigned\U000e0080",  # Cn
        "two\u2028lines",  # Zl
        "two\u2029paragraphs",  # Zp
        12,
    ],
)
def test_bad_names_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="name"):
        normalize_name(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        Identity.from_seed(bytes(32), bad)  # type: ignore[arg-type]


# --- keyfiles ------------------------------------------------------------------------


def test_keyfile_round_trip_without_passphrase(alice: Identity, rng: crypto.Rng) -> None:
    data = alice.to_keyfile(None, rng=rng)
    assert not Identity.keyfile_is_sealed(data)
    loaded = Identity.from_keyfile(data, None)
    assert (loaded.public_key, loaded.name) == (alice.public_key, alice.name)
    # A passphrase given for an unsealed file is not needed, and not an error.
    assert Identity.from_keyfile(data, "anything").public_key == alice.public_key


def test_keyfile_round_trip_with_passphrase(alice: Identity, rng: crypto.Rng) -> None:
    data = alice.to_keyfile("correct horse", rng=rng, **CHEAP)
    assert Identity.keyfile_is_sealed(data)
    assert alice.seed not in data
    loaded = Identity.from_keyfile(data, "correct horse")
    assert (loaded.public_key, loaded.name) == (alice.public_key, alice.name)
    doc = codec.unpack(data)
    assert isinstance(doc, list)
    assert doc[:3] == [KEYFILE_MAGIC, KEYFILE_VERSION, alice.name]
    assert doc[3][:3] == ["argon2id13", 1, 8192]  # the costs are stored in the file


def test_keyfiles_use_fresh_salt_and_nonce(alice: Identity, rng: crypto.Rng) -> None:
    one = alice.to_keyfile("pw", rng=rng, **CHEAP)
    two = alice.to_keyfile("pw", rng=rng, **CHEAP)
    assert one != two


def test_wrong_or_missing_passphrase(alice: Identity, rng: crypto.Rng) -> None:
    data = alice.to_keyfile("correct horse", rng=rng, **CHEAP)
    for wrong in ("Correct horse", "correct horse ", "", "battery staple"):
        with pytest.raises(WrongPassphrase, match="passphrase"):
            Identity.from_keyfile(data, wrong)
    with pytest.raises(WrongPassphrase, match="passphrase"):
        Identity.from_keyfile(data, None)


def test_empty_passphrase_is_refused_when_saving(alice: Identity, rng: crypto.Rng) -> None:
    with pytest.raises(ValueError, match="passphrase"):
        alice.to_keyfile("", rng=rng, **CHEAP)


def test_every_byte_change_of_a_sealed_keyfile_is_caught(alice: Identity, rng: crypto.Rng) -> None:
    """A damaged sealed file never loads another key and never raises anything else.

    The display name sits outside the box, so a change there loads the same key
    under another name (or is refused as a bad name), and Argon2 counts memory in
    KiB, so a change in the low bits of ``memlimit`` derives the same key;
    everything else is refused.
    """
    data = alice.to_keyfile("pw", rng=rng, **CHEAP)
    for pos in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[pos] ^= flip
            try:
                loaded = Identity.from_keyfile(bytes(damaged), "pw")
            except KeyfileError:
                continue
            assert loaded.public_key == alice.public_key


def test_every_truncation_of_a_keyfile_is_refused(alice: Identity, rng: crypto.Rng) -> None:
    for data in (alice.to_keyfile(None, rng=rng), alice.to_keyfile("pw", rng=rng, **CHEAP)):
        for end in range(len(data)):
            with pytest.raises(KeyfileError):
                Identity.from_keyfile(data[:end], "pw")
        with pytest.raises(KeyfileError):
            Identity.from_keyfile(data + b"\x00", "pw")


def _keyfile(*fields: object) -> bytes:
    return codec.pack(list(fields))


def _sealed(kdf: object, nonce: bytes, box: bytes) -> bytes:
    return _keyfile(KEYFILE_MAGIC, KEYFILE_VERSION, "x", kdf, nonce, box)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 64,
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
        codec.pack({"magic": "meshnode-keyfile"}),
        codec.pack("meshnode-keyfile"),
        _keyfile("meshnode-keyfile", 1, "x", None, b""),
        _keyfile("other-keyfile", 1, "x", None, b"", bytes(32)),
        _keyfile("meshnode-keyfile", 2, "x", None, b"", bytes(32)),
        _keyfile("meshnode-keyfile", "1", "x", None, b"", bytes(32)),
        _keyfile("meshnode-keyfile", 1, b"x", None, b"", bytes(32)),
        _keyfile("meshnode-keyfile", 1, "", None, b"", bytes(32)),
        _keyfile("meshnode-keyfile", 1, "bad\x07name", None, b"", bytes(32)),
        _keyfile("meshnode-keyfile", 1, "x", None, b"", bytes(31)),
        _keyfile("meshnode-keyfile", 1, "x", None, b"", "0" * 32),
        _sealed(["scrypt", 1, 8192, bytes(16)], bytes(24), bytes(48)),
        _sealed(["argon2id13", 0, 8192, bytes(16)], bytes(24), bytes(48)),
        _sealed(["argon2id13", 65, 8192, bytes(16)], bytes(24), bytes(48)),
        _sealed(["argon2id13", 1, 8191, bytes(16)], bytes(24), bytes(48)),
        _sealed(["argon2id13", 1, 2**40, bytes(16)], bytes(24), bytes(48)),
        _sealed(["argon2id13", True, 8192, bytes(16)], bytes(24), bytes(48)),
        _sealed(["argon2id13", 1, 8192, bytes(15)], bytes(24), bytes(48)),
        _sealed(["argon2id13", 1, 8192, bytes(16)], bytes(23), bytes(48)),
        _sealed(["argon2id13", 1, 8192, bytes(16)], bytes(24), bytes(32)),
        _sealed(["argon2id13", 1, 8192], bytes(24), bytes(48)),
        _sealed("argon2id13", bytes(24), bytes(48)),
    ],
)
def test_damaged_and_foreign_files_are_refused(data: bytes) -> None:
    with pytest.raises(KeyfileError) as caught:
        Identity.from_keyfile(data, "pw")
    assert not isinstance(caught.value, WrongPassphrase)
    with pytest.raises(KeyfileError):
        Identity.keyfile_is_sealed(data)


# --- the API's files ---------------------------------------------------------------------


def test_save_identity_and_load_identity(tmp_path: Path) -> None:
    me = Identity.generate("Local 12")
    assert type(me) is meshnode.Identity
    path = tmp_path / "local12.key"
    meshnode.save_identity(me, path, passphrase="correct horse", **CHEAP)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = meshnode.load_identity(path, passphrase="correct horse")
    assert type(loaded) is meshnode.Identity
    assert loaded.public_key == me.public_key
    with pytest.raises(WrongPassphrase):
        load_identity(path, passphrase="wrong")
    assert [p.name for p in tmp_path.iterdir()] == ["local12.key"]  # no temporary left
    save_identity(me, str(path))  # unsealed, the default cost unused; a str path too
    assert load_identity(str(path)).seed == me.seed


def test_save_identity_keeps_mode_0600_over_a_wider_file(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        save_identity(Identity.generate("x"), path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(path).name == "x"


def test_load_identity_reports_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(KeyfileError, match="no keyfile"):
        load_identity(tmp_path / "absent.key")
    with pytest.raises(KeyfileError, match="cannot read"):
        load_identity(tmp_path)  # a directory
    (tmp_path / "notes.txt").write_text("not a key\n")
    with pytest.raises(KeyfileError):
        load_identity(tmp_path / "notes.txt")


def test_generate_draws_the_seed_from_the_installed_random_source() -> None:
    with providers.installed(StoppedClock(0, seeded_rng("generate"))):
        me = Identity.generate("Local 12")
    assert me.seed == seeded_rng("generate")(32)
    assert Identity.generate("Local 12").seed != me.seed  # the system's again


def test_without_providers_the_conveniences_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(providers, "_current", None)
    with pytest.raises(MeshError, match="import meshnode, or pass now and rng"):
        Identity.generate("Local 12")


def test_identity_save_and_load_still_work_for_one_release(tmp_path: Path) -> None:
    me = Identity.generate("Local 12")
    path = tmp_path / "local12.key"
    with pytest.warns(DeprecationWarning, match=r"Identity\.save.*0\.3\.0.*save_identity") as w:
        me.save(path, passphrase="correct horse", **CHEAP)
    assert [r.filename for r in w] == [__file__]  # the warning points at the caller
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.warns(DeprecationWarning, match=r"Identity\.load.*load_identity"):
        loaded = Identity.load(path, passphrase="correct horse")
    assert type(loaded) is meshnode.Identity
    assert loaded.seed == me.seed
    absent = tmp_path / "absent.key"
    with (
        pytest.warns(DeprecationWarning, match="load_identity"),
        pytest.raises(KeyfileError, match=f"no keyfile at {absent}"),
    ):
        Identity.load(absent)


def test_the_api_module_classes_are_deprecated_names_of_the_one_class() -> None:
    for name in ("Identity", "Channel", "Bulletin"):
        with pytest.warns(DeprecationWarning, match=f"meshnode.api.{name} .*use meshnode.{name}"):
            assert getattr(meshnode.api, name) is getattr(meshnode, name)
    with pytest.raises(AttributeError, match="no attribute 'Node'"):
        meshnode.api.Node  # noqa: B018


def test_errors_are_mesh_errors() -> None:
    assert issubclass(WrongPassphrase, KeyfileError)
    assert issubclass(KeyfileError, MeshError)
    assert issubclass(InvalidKey, MeshError)
