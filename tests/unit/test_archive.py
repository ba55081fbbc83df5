"""The node's archive over a real store file: sealing with the next seq, reading, key
updates, and bulletins that do not open."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.core import codec, crypto
from meshnode.core.bulletin import PUBLIC_STREAM, TEXT_PLAIN, Bulletin
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity, format_key
from meshnode.core.wire import Topic
from meshnode.errors import BulletinTooLarge, UnknownChannel, UnknownContact
from meshnode.net.archive import Archive
from meshnode.store import Insert, Store
from tests.conftest import corrupt_box, resigned, seeded_rng

NOW = 1_800_000_000


def archive_for(identity: Identity, path: Path, now: int = NOW) -> Archive:
    store = Store.open(path, seal_key=identity.store_seal_key(), owner=identity.public_key)
    return Archive(identity, store, clock=lambda: now, rng=seeded_rng(identity.name))


@pytest.fixture
def pair(tmp_path: Path, alice: Identity, bob: Identity) -> Iterator[tuple[Archive, Archive]]:
    a, b = archive_for(alice, tmp_path / "a.db"), archive_for(bob, tmp_path / "b.db")
    yield a, b
    a.store.close()
    b.store.close()


def test_own_bulletins_chain_per_stream(pair: tuple[Archive, Archive], channel: Channel) -> None:
    a, _ = pair
    a.add_channel(channel)
    first = a.seal(channel, b"one")
    second = a.seal(channel, b"two")
    public = a.seal(None, b"hello mesh")
    assert (first.seq, first.prev) == (1, None)
    assert (second.seq, second.prev) == (2, first.id)
    assert (public.seq, public.prev) == (1, None)
    assert a.has(second.id)
    assert second.id in a.index(Topic(channel.id))
    assert a.get(Topic(channel.id), [first.id, public.id]) == [first.raw]
    assert a.seq_id(Topic(PUBLIC_STREAM), a.identity.public_key, 1) == public.id


def test_records_only_for_what_we_can_open(
    pair: tuple[Archive, Archive], channel: Channel, carol: Identity
) -> None:
    a, b = pair
    a.add_channel(channel)
    posted = a.seal(channel, b"Strike vote Friday")
    direct = a.seal([carol.public_key], b"for carol only")
    for bulletin in (posted, direct):
        assert b.ingest(Bulletin.from_bytes(bulletin.raw)).result is Insert.ADDED
    assert b.history(None) == []  # not a member, not a recipient
    b.add_channel(channel)
    (record,) = b.history(channel)
    assert (record.text, record.channel, record.author) == (
        "Strike vote Friday",
        channel.name,
        a.identity.public_key,
    )
    assert record.author_name == a.identity.fingerprint
    b.store.add_contact("local12", a.identity.public_key, now=NOW)
    assert b.history(channel)[0].author_name == "local12"
    assert [r.text for r in a.history(None)] == ["Strike vote Friday", "for carol only"]


def test_key_update_gives_the_new_epoch(
    pair: tuple[Archive, Archive], channel: Channel, rng: object
) -> None:
    a, b = pair
    a.add_channel(channel)
    b.add_channel(channel)
    rekeyed = a.add_channel(channel.next_epoch(seeded_rng("rekey")))
    update = a.key_update(rekeyed, [b.identity.public_key])
    got = b.ingest(Bulletin.from_bytes(update.raw))
    assert got.channel_changed is not None
    assert got.channel_changed.epoch == rekeyed.epoch
    held = b.channel(channel.id)
    assert held is not None
    assert held.epoch == 1
    after = a.seal(rekeyed, b"new epoch")
    b.ingest(Bulletin.from_bytes(after.raw))
    assert [r.text for r in b.history(held)] == ["new epoch"]


def test_lookups_and_errors(pair: tuple[Archive, Archive], channel: Channel, bob: Identity) -> None:
    a, _ = pair
    a.add_channel(channel)
    assert a.find_channel("strike-support") == channel
    assert a.find_channel(channel.id.hex()[:10]) == channel
    with pytest.raises(UnknownChannel, match="channel list"):
        a.require_channel("nope")
    assert a.resolve_group(format_key(bob.public_key)) == bob.public_key
    a.store.add_contact("tenants", bob.public_key, now=NOW)
    assert a.resolve_group("tenants") == bob.public_key
    with pytest.raises(UnknownContact, match="contact add"):
        a.resolve_group("strangers")
    with pytest.raises(BulletinTooLarge, match="too long"):
        a.seal(channel, b"x" * 70_000)


def test_state_survives_reopening(tmp_path: Path, alice: Identity, channel: Channel) -> None:
    a = archive_for(alice, tmp_path / "a.db")
    a.add_channel(channel)
    first = a.seal(channel, b"one")
    a.store.close()
    again = archive_for(alice, tmp_path / "a.db")
    assert again.channels() == [channel]
    assert again.seal(channel, b"two").prev == first.id
    assert first.id in again.index(Topic(channel.id))
    again.store.close()


def _malformed(author: Identity, channel: Channel, b: Bulletin) -> Bulletin:
    """``b`` (in ``channel``) re-encrypted around text that is not UTF-8."""
    nonce = bytes(crypto.XNONCE_SIZE)
    plain = codec.pack([TEXT_PLAIN, b"\xff\xfe"])
    ad = b.raw[: b.ad_size]
    return resigned(
        author, b, nonce + crypto.xchacha_encrypt(channel.epoch_key(), nonce, plain, ad)
    )


def test_unreadable_bulletins_are_skipped_and_listed(
    pair: tuple[Archive, Archive],
    channel: Channel,
    carol: Identity,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="meshnode.archive")
    a, b = pair
    a.add_channel(channel)
    other = a.add_channel(Channel.from_secret("elsewhere", bytes(32)))
    readable = a.seal(channel, b"Strike vote Friday")
    altered = corrupt_box(a.identity, a.seal(channel, b"altered"))
    malformed = _malformed(a.identity, channel, a.seal(channel, b"malformed"))
    later = a.add_channel(channel.next_epoch(seeded_rng("rekey")))
    future = a.seal(later, b"epoch 1 news")
    not_ours = [
        a.seal(other, b"another channel's"),
        a.seal([carol.public_key], b"for carol only"),
        a.key_update(later, [carol.public_key]),
    ]
    for bulletin in (readable, altered, malformed, future, *not_ours):
        b.ingest(Bulletin.from_bytes(bulletin.raw))
    b.add_channel(channel)
    # Found by the first count's pass over the store...
    assert b.unreadable_count() == 3
    # ...then as they arrive.
    broken_direct = corrupt_box(a.identity, a.seal([b.identity.public_key], b"boxed"))
    direct = a.seal([b.identity.public_key], b"for bob")
    b.ingest(broken_direct)
    b.ingest(Bulletin.from_bytes(direct.raw))
    assert [r.text for r in b.history(None)] == ["Strike vote Friday", "for bob"]
    assert [r.text for r in b.history(channel)] == ["Strike vote Friday"]
    listed = b.unreadable()
    assert b.unreadable_count() == len(listed) == 4
    assert {u.id: (u.kind, u.channel, u.reason, u.author_at_fault) for u in listed} == {
        altered.id: ("channel", channel.name, "channel content does not decrypt: altered", True),
        malformed.id: ("channel", channel.name, "text content is not valid UTF-8", True),
        future.id: ("channel", channel.name, "unknown epoch 1", False),
        broken_direct.id: ("direct", None, "direct content does not decrypt: altered", True),
    }
    assert all(u.author == a.identity.public_key for u in listed)
    assert [u.created_at for u in listed] == sorted(u.created_at for u in listed)
    # The author is flagged: it signed boxes that do not open (logged once, not per box).
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["bad content"]


def test_unreadable_follows_the_keys_held(
    tmp_path: Path, pair: tuple[Archive, Archive], channel: Channel
) -> None:
    a, b = pair
    earlier = archive_for(a.identity, tmp_path / "earlier.db", now=NOW - 120)
    a.add_channel(channel)
    b.add_channel(channel)
    later = a.add_channel(channel.next_epoch(seeded_rng("rekey")))
    future = earlier.seal(earlier.add_channel(later), b"epoch 1 news", expires_in=60)
    earlier.store.close()
    b.ingest(Bulletin.from_bytes(future.raw))
    assert [u.reason for u in b.unreadable()] == ["unknown epoch 1"]
    b.ingest(Bulletin.from_bytes(a.key_update(later, [b.identity.public_key]).raw))
    assert b.unreadable_count() == 0
    assert [r.text for r in b.history(channel)] == ["epoch 1 news"]
    b.remove_channel(channel)
    b.add_channel(channel)  # rejoined without the new epoch: its bulletin is unreadable again
    assert [u.id for u in b.unreadable()] == [future.id]
    b.remove_channel(channel)
    assert b.unreadable_count() == 0
    b.add_channel(channel)
    assert b.unreadable_count() == 1
    assert b.purge_expired() == 1  # it expired a minute ago
    assert b.unreadable_count() == 0
