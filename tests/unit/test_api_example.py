"""The public API example from issue 2, exactly as written there (plus cheap key costs)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_issue_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from meshnode import (  # noqa: F401
        Bulletin,
        Channel,
        Identity,
        InvalidBulletin,
        MeshError,
        format_key,
        parse_key,
    )

    local12 = Identity.generate("Local 12")
    tenants = Identity.generate("Tenants United")
    local12.save("local12.key", passphrase="correct horse")  # mode 0600
    assert Identity.load("local12.key", passphrase="correct horse").public_key == local12.public_key
    assert parse_key(format_key(local12.public_key)) == local12.public_key

    strike = Channel.create("strike-support")
    code = strike.invite(by=local12)  # a text code, safe to paste anywhere
    joined = Channel.from_invite(code)  # what Tenants United does with it
    assert joined.id == strike.id

    b1 = Bulletin.create(local12, strike, "Strike vote Friday 6pm", seq=1)
    b2 = Bulletin.create(local12, strike, "Bring banners", seq=2, prev=b1.id)
    got = Bulletin.from_bytes(b2.to_bytes())  # verifies, or raises InvalidBulletin
    assert got.id == b2.id
    assert got.author == local12.public_key
    assert got.prev == b1.id
    assert got.open(joined).text == "Bring banners"

    d = Bulletin.from_bytes(
        Bulletin.create(local12, [tenants.public_key], "Can you bring 10 people?", seq=1).to_bytes()
    )
    assert d.open(tenants).text == "Can you bring 10 people?"
    assert d.open(local12).text == "Can you bring 10 people?"  # the sender reads its own

    p = Bulletin.create(tenants, None, "Solidarity with Local 12", seq=1)  # public
    assert Bulletin.from_bytes(p.to_bytes()).open().text == "Solidarity with Local 12"

    assert (tmp_path / "local12.key").stat().st_mode & 0o777 == 0o600
