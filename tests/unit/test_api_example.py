"""The public API examples: the README's, run as written, and issue 2's.

Issue 2's example is kept as written there (plus cheap key costs): its keyfile
lines use ``Identity.save`` and ``Identity.load``, deprecated since 0.2.0, which
still work and warn until 0.3.0.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_example_runs_as_written_without_warnings() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using it from Python", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "Identity.generate" in example
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(example, "README.md", "exec"), {})


def test_the_api_page_examples_of_the_classes_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/api.md from its top to the node: identities, channels, bulletins, the clock."""
    monkeypatch.chdir(tmp_path)
    page = (ROOT / "docs" / "api.md").read_text().split("## A node in your program", 1)[0]
    blocks = [part.split("```", 1)[0] for part in page.split("```python\n")[1:]]
    assert len(blocks) == 4
    # The one change: a cheap Argon2id cost instead of the default second and 384 MiB.
    sealed = 'passphrase="correct horse")'
    assert sealed in blocks[0]
    cheap = 'passphrase="correct horse", opslimit=1, memlimit=8192)'
    blocks[0] = blocks[0].replace(sealed, cheap, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile("\n".join(blocks), "docs/api.md", "exec"), {})
    assert (tmp_path / "local12.key").stat().st_mode & 0o777 == 0o600


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
    with pytest.warns(DeprecationWarning, match="save_identity"):
        local12.save("local12.key", passphrase="correct horse")  # mode 0600
    with pytest.warns(DeprecationWarning, match="load_identity"):
        loaded = Identity.load("local12.key", passphrase="correct horse")
    assert loaded.public_key == local12.public_key
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
