"""The worked examples in docs/spec/ are checked against the code, byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "bulletin.md"


def _inputs(text: str) -> dict[str, str]:
    return dict(re.findall(r"^- ([a-z-]+): `([^`]*)`$", text, re.M))


def _hex_block(text: str, name: str) -> bytes:
    match = re.search(rf"```hex {name}\n(.*?)```", text, re.S)
    assert match, f"no hex block {name} in {SPEC.name}"
    return bytes.fromhex("".join(match.group(1).split()))


def _stated_id(text: str, heading: str) -> bytes:
    section = text.split(heading, 1)[1]
    return bytes.fromhex(re.search(r"^id: `([0-9a-f]{64})`$", section, re.M).group(1))  # type: ignore[union-attr]


def test_bulletin_worked_example_matches_code() -> None:
    text = SPEC.read_text()
    given = _inputs(text)
    author = Identity.from_seed(bytes.fromhex(given["author-seed"]), given["author-name"])
    assert author.public_key.hex() == given["author-key"]
    channel = Channel.from_secret(given["channel-name"], bytes.fromhex(given["channel-secret"]))
    assert channel.id.hex() == given["channel-id"]
    assert channel.epoch_key().hex() == given["epoch-key"]

    public_raw = _hex_block(text, "public-bulletin")
    public = Bulletin.seal(
        author,
        None,
        b"Strike vote Friday 6pm",
        seq=1,
        prev=None,
        now=int(given["public-created-at"]),
        rng=bytes,
    )
    assert public.raw == public_raw
    decoded = Bulletin.from_bytes(public_raw)
    assert decoded.kind is Kind.PUBLIC
    assert decoded.open().text == "Strike vote Friday 6pm"
    assert decoded.id == _stated_id(text, "### A public bulletin")

    nonce = bytes.fromhex(given["channel-nonce"])
    channel_raw = _hex_block(text, "channel-bulletin")
    sealed = Bulletin.seal(
        author,
        channel,
        b"Bring banners",
        seq=2,
        prev=public.id,
        now=int(given["channel-created-at"]),
        rng=lambda n: nonce[:n],
    )
    assert sealed.raw == channel_raw
    decoded = Bulletin.from_bytes(channel_raw)
    assert decoded.ad_size == 116
    assert decoded.open(channel).text == "Bring banners"
    assert decoded.id == _stated_id(text, "### A channel bulletin")


def test_channel_derivation_example_matches_code() -> None:
    given = _inputs((SPEC.parent / "channel.md").read_text())
    channel = Channel.from_secret("example", bytes.fromhex(given["channel-secret"]))
    assert channel.id.hex() == given["channel-id"]
    assert channel.epoch_key().hex() == given["epoch-key"]
    assert channel.rendezvous_tag(int(given["rendezvous-day"])).hex() == given["rendezvous-tag"]
