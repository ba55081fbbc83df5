"""The node's archive over a real store file: sealing with the next seq, reading, key
updates, and bulletins that do not open."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from meshnode.archive import Archive
from meshnode.core import codec, crypto
from meshnode.core.bulletin import PUBLIC_STREAM, TEXT_PLAIN, Bulletin
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity, format_key
from meshnode.core.invite import make_code, parse_code, redeem_proof
from meshnode.core.membership import KeyUpdate, Post
from meshnode.core.operation import Frontier, OpType
from meshnode.core.views import ChannelInfo
from meshnode.core.wire import Topic, Verdict
from meshnode.errors import AmbiguousChannel, BulletinTooLarge, UnknownChannel, UnknownContact
from meshnode.store import Insert, Store
from tests.conftest import Rng, corrupt_box, resigned, seeded_rng

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NOW = 1_800_000_000
HASH = b"\x42" * 32


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


def test_an_expired_bulletin_held_is_not_served(
    tmp_path: Path, alice: Identity, channel: Channel
) -> None:
    a = archive_for(alice, tmp_path / "a.db")
    a.add_channel(channel)
    soon = a.seal(channel, b"until noon", expires_in=100)
    topic = Topic(channel.id)
    assert a.get(topic, [soon.id]) == [soon.raw]
    a.store.close()
    later = archive_for(alice, tmp_path / "a.db", now=NOW + 100)
    assert later.has(soon.id)  # until the next purge
    assert later.get(topic, [soon.id]) == []
    assert soon.id not in later.index(topic)
    assert later.purge_expired() == 1
    later.store.close()


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
        a.key_update(KeyUpdate(later.id, (b"an operation",), bytes(32)), [carol.public_key]),
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


def test_unreadable_follows_the_keys_held(tmp_path: Path, pair: tuple[Archive, Archive]) -> None:
    a, b = pair
    channel, _ = a.found_channel("strike")
    joined = join(a, b, channel)
    later, _, update = a.memberships.new_epoch(channel)
    earlier = archive_for(a.identity, tmp_path / "earlier.db", now=NOW - 120)
    future = earlier.seal(earlier.add_channel(later), b"epoch 2 news", expires_in=180)
    earlier.store.close()
    b.ingest(Bulletin.from_bytes(future.raw))
    assert [u.reason for u in b.unreadable()] == ["unknown epoch 2"]
    b.ingest(Bulletin.from_bytes(a.key_update(update, [b.identity.public_key]).raw))
    assert b.unreadable_count() == 0
    assert [r.text for r in b.history(later)] == ["epoch 2 news"]
    b.remove_channel(later)
    b.add_channel(joined)  # held again without the new epoch: its bulletin is unreadable again
    assert [u.id for u in b.unreadable()] == [future.id]
    b.remove_channel(joined)
    assert b.unreadable_count() == 0
    b.add_channel(joined)
    assert b.unreadable_count() == 1
    b.store.close()
    b = archive_for(b.identity, tmp_path / "b.db", now=NOW + 60)  # when it expires
    assert b.unreadable_count() == 1  # (held until purged)
    assert b.purge_expired() == 1
    assert b.unreadable_count() == 0
    b.store.close()


def test_a_mutual_removal_ends_the_same_whatever_arrives_first(
    tmp_path: Path, pair: tuple[Archive, Archive]
) -> None:
    a, b = pair
    c = archive_for(Identity.from_seed(b"\x0c" * 32, "Bakers"), tmp_path / "c.db")
    channel, _ = a.found_channel("strike")
    held_b = join(a, b, channel)
    held_c = join(a, c, channel)
    log_a = a.memberships.log(channel.id)
    assert log_a is not None
    b.memberships.take(held_b, [o.raw for o in log_a.ops()])  # (b learns that c joined)
    gone_c = (Frontier(c.identity.public_key, 0, None),)
    gone_b = (Frontier(b.identity.public_key, 0, None),)
    b_removes_c = b.memberships.write(held_b, OpType.REMOVE, targets=gone_c)
    c_removes_b = c.memberships.write(held_c, OpType.REMOVE, targets=gone_b)
    # a hears the junior's removal first, c has written it: both still end with b, the
    # senior (added first), and without c.
    a.memberships.take(channel, [c_removes_b.raw])
    a.memberships.take(channel, [b_removes_c.raw])
    c.memberships.take(held_c, [b_removes_c.raw])
    for archive in (a, b, c):
        log = archive.memberships.log(channel.id)
        assert log is not None
        if archive is b:
            archive.memberships.take(held_b, [c_removes_b.raw])
        assert set(log.members()) == {a.identity.public_key, b.identity.public_key}
        assert c_removes_b.id in log.state().void


def test_a_removed_group_is_heard_up_to_its_frontier_and_not_its_forks(
    pair: tuple[Archive, Archive],
) -> None:
    a, b = pair
    channel, _ = a.found_channel("strike")
    held_b = join(a, b, channel)
    first = b.seal(held_b, b"one")
    second = b.seal(held_b, b"two")
    for bulletin in (first, second):
        a.ingest(Bulletin.from_bytes(bulletin.raw))
    frontier = Frontier(b.identity.public_key, second.seq, second.id)
    a.memberships.write(channel, OpType.REMOVE, targets=(frontier,))
    rng = seeded_rng("fork")
    fork = Bulletin.seal(b.identity, held_b, b"rewritten", seq=first.seq, prev=first.prev,
                         now=NOW, rng=rng)
    later = Bulletin.seal(b.identity, held_b, b"after", seq=second.seq + 1, prev=second.id,
                          now=NOW, rng=rng)
    admit = a.memberships.admit
    assert [admit(x) for x in (first, second)] == [Post.ACCEPT, Post.ACCEPT]
    assert [admit(x) for x in (fork, later)] == [Post.REFUSE, Post.REFUSE]


def test_key_updates_arriving_out_of_order_all_apply(pair: tuple[Archive, Archive]) -> None:
    """Mail comes in any order: an update for epoch 3 that arrives before the one for
    epoch 2 waits for it instead of being lost."""
    a, b = pair
    channel, _ = a.found_channel("strike")
    join(a, b, channel)
    second, _, to_2 = a.memberships.new_epoch(channel)
    third, _, to_3 = a.memberships.new_epoch(a.keep(second))
    me = [b.identity.public_key]
    assert b.ingest(Bulletin.from_bytes(a.key_update(to_3, me).raw)).channel_changed is None
    got = b.ingest(Bulletin.from_bytes(a.key_update(to_2, me).raw)).channel_changed
    assert got is not None
    assert (got.epoch, got.current) == (3, third.current)
