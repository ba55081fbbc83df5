"""The node's archive over a real store file: sealing with the next seq, reading, key updates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.core import crypto
from meshnode.core.bulletin import PUBLIC_STREAM, Bulletin
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity, format_key
from meshnode.core.invite import make_code, parse_code, redeem_proof
from meshnode.core.membership import KeyUpdate, OpType
from meshnode.core.views import ChannelInfo
from meshnode.core.wire import Topic, Verdict
from meshnode.errors import AmbiguousChannel, BulletinTooLarge, UnknownChannel, UnknownContact
from meshnode.net.archive import Archive
from meshnode.store import Insert, Store
from tests.conftest import Rng, seeded_rng

NOW = 1_800_000_000
HASH = b"\x42" * 32


def archive_for(identity: Identity, path: Path) -> Archive:
    store = Store.open(path, seal_key=identity.store_seal_key(), owner=identity.public_key)
    return Archive(identity, store, clock=lambda: NOW, rng=seeded_rng(identity.name))


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


def join(inviter: Archive, invitee: Archive, channel: Channel) -> Channel:
    """``invitee`` redeems a one-time invite of ``inviter``'s, as over a session whose
    handshake hash is ``HASH``."""
    seed = bytes([len(inviter.memberships.log(channel.id) or ())]) * 32
    token = crypto.signing_keypair(seed)[0]
    inviter.memberships.write(channel, OpType.INVITE, token=token, expires_at=NOW + 99)
    proof = redeem_proof(seed, HASH, invitee.identity.public_key)
    verdict, grant, added = inviter.memberships.redeem(
        [channel], token=token, proof=proof, handshake_hash=HASH,
        invitee=invitee.identity.public_key,
    )
    assert verdict == Verdict.GRANTED
    assert grant is not None
    assert added is not None
    code = parse_code(
        make_code(inviter.identity, channel=channel, token_seed=seed, addresses=[],
                  now=NOW, expires_at=NOW + 99),
        now=NOW,
    )
    return invitee.joined(code, grant)


def test_a_granted_member_takes_key_updates_from_members_only(
    pair: tuple[Archive, Archive], tmp_path: Path
) -> None:
    a, b = pair
    channel, _ = a.found_channel("strike")
    held = join(a, b, channel)
    assert held.current == channel.current
    assert held.founding_secret is None  # the founder's first epoch keeps it home
    rekeyed, _, update = a.memberships.new_epoch(channel)
    got = b.ingest(Bulletin.from_bytes(a.key_update(update, [b.identity.public_key]).raw))
    assert got.channel_changed is not None
    assert got.channel_changed.current == rekeyed.current
    assert got.channel_changed.epoch == 2
    after = a.seal(a.keep(rekeyed), b"new epoch")
    b.ingest(Bulletin.from_bytes(after.raw))
    assert [r.text for r in b.history(got.channel_changed)] == ["new epoch"]
    # A stranger who somehow learned the channel sends a key update of its own.
    stranger = archive_for(Identity.from_seed(b"\x09" * 32, "Mallory"), tmp_path / "m")
    forged = KeyUpdate(channel.id, update.ops, b"\x07" * 32)
    bogus = stranger.key_update(forged, [b.identity.public_key])
    assert b.ingest(Bulletin.from_bytes(bogus.raw)).channel_changed is None
    assert b.channel(channel.id) == got.channel_changed


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


def test_one_resolution_for_records_ids_names_and_prefixes(
    pair: tuple[Archive, Archive], channel: Channel
) -> None:
    a, _ = pair
    a.add_channel(channel)
    info = ChannelInfo(id=channel.id, name="renamed", epoch=0, members=0, bulletins=0)
    hexid = channel.id.hex()
    for ref in (info, channel.id, " strike-support ", hexid, hexid.upper(), hexid[:8]):
        assert a.find_channel(ref) == channel, ref
    for ref in (hexid[:7], bytes(32), channel.id[:8], "strike"):
        assert a.find_channel(ref) is None, ref
    with pytest.raises(UnknownChannel, match=f"no channel {bytes(32).hex()} on"):
        a.require_channel(bytes(32))


def test_a_shared_name_is_ambiguous_and_the_id_settles_it(
    pair: tuple[Archive, Archive], channel: Channel, rng: Rng
) -> None:
    a, _ = pair
    a.add_channel(channel)
    namesake = a.add_channel(Channel.from_secret(channel.name, rng(32)))
    assert a.named(channel.name) == sorted([channel, namesake], key=lambda c: c.id)
    with pytest.raises(AmbiguousChannel, match="2 channels are named 'strike-support'") as e:
        a.require_channel(channel.name)
    assert channel.id.hex() in str(e.value)
    assert namesake.id.hex() in str(e.value)
    assert "by its id" in str(e.value)
    assert a.require_channel(namesake.id.hex()[:12]) == namesake
    assert a.require_channel(channel.id) == channel


def test_a_short_prefix_of_two_ids_is_ambiguous(pair: tuple[Archive, Archive]) -> None:
    a, _ = pair
    # Founding secrets found by search whose ids share their first 8 hex digits.
    first, second = (
        a.add_channel(Channel.from_secret(name, n.to_bytes(32, "big")))
        for name, n in (("one", 64528), ("two", 64748))
    )
    assert (first.id.hex()[:9], second.id.hex()[:9]) == ("476854077", "476854079")
    with pytest.raises(AmbiguousChannel, match=r"fits 2 channels.*more digits"):
        a.find_channel("47685407")
    assert a.find_channel("476854077") == first


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
