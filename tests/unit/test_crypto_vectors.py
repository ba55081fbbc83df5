"""Published test vectors, run through meshnode's own wrappers in ``core/crypto.py``.

Every file in ``../shared/vectors/ed25519/`` and ``../shared/vectors/wycheproof/``
is loaded and every vector of a primitive we use becomes one test case, so a
new vector file adds cases without touching this module. Both field layouts of
``SOURCES.md`` are accepted (Wycheproof schema v1 ``publicKey`` and the older
``key``). A minimum count per primitive makes a missing folder fail, not pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshnode.core import crypto
from meshnode.errors import AuthenticationError

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors"

# Counts in SOURCES.md when this test was written; more files only add cases.
MIN_COUNTS = {
    "rfc8032": 5,
    "ed25519": 151,
    "x25519": 518,
    "chacha20-poly1305": 325,
    "xchacha20-poly1305": 315,
}


@dataclass(frozen=True)
class Vector:
    kind: str
    source: str
    case: dict[str, Any]
    group: dict[str, Any]

    @property
    def id(self) -> str:
        tc = self.case.get("tcId", self.case.get("name", "?"))
        return f"{self.source}:{tc}"


def _json_files(folder: str) -> list[Path]:
    return sorted((VECTORS / folder).glob("*.json"))


def _load() -> list[Vector]:
    out: list[Vector] = []
    for path in _json_files("ed25519"):
        doc = json.loads(path.read_text())
        out += [Vector("rfc8032", path.stem, t, {}) for t in doc.get("tests", [])]
    for path in _json_files("wycheproof"):
        doc = json.loads(path.read_text())
        algorithm = str(doc.get("algorithm", "")).upper()
        kind = {
            "EDDSA": "ed25519",
            "XDH": "x25519",
            "CHACHA20-POLY1305": "chacha20-poly1305",
            "XCHACHA20-POLY1305": "xchacha20-poly1305",
        }.get(algorithm)
        if kind is None:  # a primitive meshnode does not use
            continue
        for group in doc.get("testGroups", []):
            if kind == "ed25519" and _group_public_key(group) is None:
                continue  # Ed448 groups share the EDDSA algorithm name
            if kind == "x25519" and group.get("curve", "curve25519") != "curve25519":
                continue
            out += [Vector(kind, path.stem, t, group) for t in group["tests"]]
    return out


def _group_public_key(group: dict[str, Any]) -> bytes | None:
    key = group.get("publicKey") or group.get("key") or {}
    if key.get("curve", "edwards25519") != "edwards25519":
        return None
    return bytes.fromhex(key["pk"])


ALL = _load()


def _of(kind: str) -> list[Any]:
    return [pytest.param(v, id=v.id) for v in ALL if v.kind == kind]


def test_every_vector_file_was_loaded() -> None:
    counts = {kind: sum(v.kind == kind for v in ALL) for kind in MIN_COUNTS}
    for kind, minimum in MIN_COUNTS.items():
        assert counts[kind] >= minimum, f"only {counts[kind]} {kind} vectors under {VECTORS}"
    # The refusal of low-order X25519 points is exercised, not only the happy path.
    zero = [v for v in ALL if v.kind == "x25519" and v.case["shared"] == "00" * 32]
    assert len(zero) >= 31


@pytest.mark.parametrize("v", _of("rfc8032"))
def test_rfc8032_sign_and_verify(v: Vector) -> None:
    seed = bytes.fromhex(v.case["secret_key"])[:32]
    public = bytes.fromhex(v.case["public_key"])
    message = bytes.fromhex(v.case["message"])
    signature = bytes.fromhex(v.case["signature"])

    derived_public, secret_key = crypto.signing_keypair(seed)
    assert derived_public == public
    assert crypto.sign(secret_key, message) == signature
    crypto.verify(public, message, signature)
    with pytest.raises(AuthenticationError):
        crypto.verify(public, message + b"\x00", signature)


@pytest.mark.parametrize("v", _of("ed25519"))
def test_wycheproof_ed25519_verify(v: Vector) -> None:
    public = _group_public_key(v.group)
    assert public is not None
    message = bytes.fromhex(v.case["msg"])
    signature = bytes.fromhex(v.case["sig"])
    if v.case["result"] == "valid":
        crypto.verify(public, message, signature)
    else:  # "invalid" (Ed25519 has no "acceptable" cases): always refused
        with pytest.raises(AuthenticationError):
            crypto.verify(public, message, signature)


@pytest.mark.parametrize("v", _of("x25519"))
def test_wycheproof_x25519(v: Vector) -> None:
    secret = bytes.fromhex(v.case["private"])
    public = bytes.fromhex(v.case["public"])
    shared = bytes.fromhex(v.case["shared"])
    if v.case["result"] == "invalid" or shared == bytes(32):
        # Low-order points give an all-zero secret: refused, as a handshake failure.
        with pytest.raises(AuthenticationError):
            crypto.x25519(secret, public)
    else:  # valid, and acceptable ones with a usable result (twist, non-canonical)
        assert crypto.x25519(secret, public) == shared


AEADS = {
    "chacha20-poly1305": (crypto.chacha_encrypt, crypto.chacha_decrypt, 12),
    "xchacha20-poly1305": (crypto.xchacha_encrypt, crypto.xchacha_decrypt, crypto.XNONCE_SIZE),
}


@pytest.mark.parametrize("v", _of("chacha20-poly1305") + _of("xchacha20-poly1305"))
def test_wycheproof_aead(v: Vector) -> None:
    encrypt, decrypt, nonce_size = AEADS[v.kind]
    c = v.case
    key, nonce, msg, aad, ct, tag = (
        bytes.fromhex(c[name]) for name in ("key", "iv", "msg", "aad", "ct", "tag")
    )
    if c["result"] == "valid":
        assert encrypt(key, nonce, msg, aad) == ct + tag
        assert decrypt(key, nonce, ct + tag, aad) == msg
    elif len(key) != crypto.KEY_SIZE or len(nonce) != nonce_size:
        # Sizes libsodium cannot take: refused before reaching it.
        with pytest.raises((AuthenticationError, ValueError)):
            decrypt(key, nonce, ct + tag, aad)
    else:
        with pytest.raises(AuthenticationError):
            decrypt(key, nonce, ct + tag, aad)
