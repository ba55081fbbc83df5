"""The store's budget (docs/spec/store.md, "Budget"): shares, trust-based admission,
eviction and the bounds on what strangers and the peers relaying them make a node hold.

Each attack is written as the flood an attacker with free keys would send."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from meshnode.archive import Archive
from meshnode.core.bulletin import PUBLIC_STREAM, Bulletin
from meshnode.core.wire import Topic
from meshnode.store import Budget, Insert, Origin, Share, Store, Trust, schema, share_of
from meshnode.store import budget as budget_module
from tests.conftest import Rng, make_identity, seeded_rng
from tests.unit.test_store import KEY, NOW, post

if TYPE_CHECKING:
    from pathlib import Path

    from meshnode.core.channel import Channel
    from meshnode.core.identity import Identity

SIZE = 169
"""The encoded size of :func:`post`'s public bulletins, at most (asserted below)."""


def open_store(
    path: Path,
    *,
    public: int,
    channels: int = 10**9,
    owner: bytes | None = None,
    per_stranger: int = 10**9,
    per_source: int = 10**9,
) -> Store:
    budget = Budget(
        channels=channels,
        public=public,
        mail=10**6,
        per_stranger=per_stranger,
        per_source=per_source,
    )
    return Store.open(path / "meshnode.db", seal_key=KEY, owner=owner, budget=budget)


@pytest.fixture
def rng() -> Rng:
    return seeded_rng("budget")


@pytest.fixture(scope="module")
def strangers() -> list[Identity]:
    return [make_identity(f"throw-away {n}") for n in range(40)]


def totals(s: Store) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """The running totals per (share, trust), and the same computed from the rows."""
    kept = {
        (share, trust): n
        for share, trust, n in s._db.execute("SELECT share, trust, bytes FROM share_usage")
        if n
    }
    computed = {
        (share, trust): n
        for share, trust, n in s._db.execute(
            "SELECT share, trust, sum(CASE WHEN kind = 5 THEN 0 ELSE length(raw) END) "
            "FROM bulletins GROUP BY share, trust"
        )
        if n
    }
    return kept, computed


def sources(s: Store) -> tuple[dict[bytes, int], dict[bytes, int]]:
    kept = {bytes(k): n for k, n in s._db.execute("SELECT source, bytes FROM source_usage")}
    computed: dict[bytes, int] = {}
    for via, net, size in s._db.execute(
        "SELECT via, net, length(raw) FROM bulletins WHERE via IS NOT NULL OR net IS NOT NULL"
    ):
        for tag, value in ((b"p", via), (b"n", net)):
            if value is not None:
                computed[tag + bytes(value)] = computed.get(tag + bytes(value), 0) + size
    return kept, computed


def flood(authors: list[Identity], rng: Rng, per_author: int, *, start: int = 1) -> list[Bulletin]:
    return [post(a, None, seq, rng) for seq in range(start, start + per_author) for a in authors]


def feed(s: Store, bulletins: list[Bulletin], origins: list[Origin]) -> list[Insert]:
    """``add_unsynced`` in passes of four, as a node's store passes take what arrived:
    bulletins of one pass never displace each other."""
    return [
        r
        for n in range(0, len(bulletins), 4)
        for r in s.add_unsynced(bulletins[n : n + 4], now=NOW, origins=origins[n : n + 4])
    ]


def stranger(n: int) -> Origin:
    """A stranger's bulletin relayed by peer ``n`` from network ``n``."""
    return Origin(Trust.STRANGER, peer=bytes([n]) * 32, network=b"4" + bytes([10, 0, n]))


def test_the_public_share_fills_then_a_known_author_evicts_strangers_oldest_first(
    tmp_path: Path, rng: Rng, strangers: list[Identity], alice: Identity
) -> None:
    with open_store(tmp_path, public=40 * SIZE) as s:
        junk = flood(strangers[:20], rng, 4)
        assert max(len(b.raw) for b in junk) == SIZE
        origins = [stranger(n % 20) for n in range(len(junk))]
        results = feed(s, junk, origins)
        taken = [b for b, r in zip(junk, results, strict=True) if r is Insert.ADDED]
        # Strangers displace strangers, oldest first: the share never goes over.
        held, bound = s.budget_use()["public"]
        assert held <= bound
        assert s.evicted_count() > 0
        evicted = s.take_evictions()
        assert evicted
        assert all(s.known(i) and not s.has(i) for i in evicted)
        assert all(not s.has(b.id) for b in taken[: len(evicted)])  # the oldest went
        assert s.take_evictions() == []
        # A known group's bulletin is taken and evicts a stranger's, never the reverse.
        known = post(alice, None, 1, rng)
        assert s.add_unsynced([known], now=NOW, origins=[Origin(Trust.KNOWN)]) == [Insert.ADDED]
        assert s.budget_use()["public"][0] <= bound
        assert totals(s)[0] == totals(s)[1]
        assert sources(s)[0] == sources(s)[1]


def test_strangers_cannot_evict_what_known_groups_posted(
    tmp_path: Path, rng: Rng, strangers: list[Identity]
) -> None:
    known = [make_identity(f"contact {n}") for n in range(4)]
    with open_store(tmp_path, public=20 * SIZE) as s:
        mine = flood(known, rng, 5)
        assert s.add_unsynced(mine, now=NOW, origins=[Origin(Trust.KNOWN)] * 20).count(
            Insert.ADDED
        ) == len([b for b in mine if s.has(b.id)])
        kept = {b.id for b in mine if s.has(b.id)}
        junk = flood(strangers, rng, 1)
        results = feed(s, junk, [stranger(n) for n in range(40)])
        assert set(results) == {Insert.NO_ROOM}
        assert {b.id for b in mine if s.has(b.id)} == kept  # not one displaced
        # An endorsed author ranks between: it may not displace known groups either.
        endorsed = make_identity("endorsed")
        assert s.add_unsynced(
            [post(endorsed, None, 1, rng)], now=NOW, origins=[Origin(Trust.ENDORSED)]
        ) == [Insert.NO_ROOM]


def test_own_bulletins_are_always_taken_and_never_evicted(
    tmp_path: Path, rng: Rng, alice: Identity, bob: Identity, channel: Channel
) -> None:
    with open_store(tmp_path, public=4 * SIZE, channels=3 * SIZE, owner=alice.public_key) as s:
        ours = [post(alice, None, seq, rng) for seq in range(1, 9)]
        assert s.add_many(ours, now=NOW) == [Insert.ADDED] * 8  # past the share
        assert s.add_unsynced(
            [post(bob, None, 1, rng)], now=NOW, origins=[Origin(Trust.KNOWN)]
        ) == [Insert.NO_ROOM]
        assert all(s.has(b.id) for b in ours)
        # Channels: ours past the bound too; anyone else's refused, nothing evicted.
        in_channel = [post(alice, channel, seq, rng) for seq in range(1, 5)]
        assert s.add_many(in_channel, now=NOW) == [Insert.ADDED] * 4
        theirs = post(bob, channel, 1, rng)
        assert share_of(theirs) is Share.CHANNELS
        assert s.add(theirs, now=NOW) is Insert.NO_ROOM
        assert s.evicted_count() == 0


def test_one_peer_and_one_network_hold_a_bounded_part_of_the_share(
    tmp_path: Path, rng: Rng, strangers: list[Identity]
) -> None:
    with open_store(tmp_path, public=160 * SIZE, per_source=10 * SIZE) as s:
        per_source = s._budget.stranger_per_source
        junk = flood(strangers, rng, 1)
        one_peer = Origin(Trust.STRANGER, peer=b"\x01" * 32, network=b"4\x0a\x00\x01")
        results = feed(s, junk, [one_peer] * 40)
        held = sum(len(b.raw) for b, r in zip(junk, results, strict=True) if r.stored)
        assert 0 < held <= per_source
        assert Insert.NO_ROOM in results
        # Another key on the same /24 counts against the same network.
        other_key = Origin(Trust.STRANGER, peer=b"\x02" * 32, network=b"4\x0a\x00\x01")
        late = flood(strangers, rng, 1, start=2)
        assert s.add_unsynced(late[:1], now=NOW, origins=[other_key]) == [Insert.NO_ROOM]
        # Elsewhere, the same strangers are still heard: the bound is per source.
        elsewhere = Origin(Trust.STRANGER, peer=b"\x03" * 32, network=b"4\x0a\x00\x02")
        assert s.add_unsynced(late[:1], now=NOW, origins=[elsewhere]) == [Insert.ADDED]
        assert sources(s)[0] == sources(s)[1]


def test_a_stranger_holds_at_most_its_part_of_the_public_share(
    tmp_path: Path, rng: Rng, strangers: list[Identity]
) -> None:
    with open_store(tmp_path, public=640 * SIZE, per_stranger=10 * SIZE) as s:
        one = [post(strangers[0], None, seq, rng) for seq in range(1, 31)]
        results = s.add_unsynced(one, now=NOW, origins=[stranger(n) for n in range(30)])
        assert results.count(Insert.OVER_QUOTA) > 0
        assert s.usage(strangers[0].public_key) <= s._budget.stranger_per_author


def test_raised_trust_moves_held_bulletins_out_of_the_strangers_bounds(
    tmp_path: Path, rng: Rng, strangers: list[Identity], bob: Identity
) -> None:
    with open_store(tmp_path, public=40 * SIZE) as s:
        bobs = [post(bob, None, seq, rng) for seq in range(1, 4)]
        s.add_unsynced(bobs, now=NOW, origins=[stranger(1)] * 3)
        assert sources(s)[0]
        s.endorse(bob.public_key, now=NOW)
        assert s.endorsed(bob.public_key)
        assert sources(s) == ({}, {})
        endorsed = {(Share.PUBLIC, Trust.ENDORSED): s.usage(bob.public_key)}
        assert totals(s)[0] == totals(s)[1] == endorsed
        s.raise_trust([bob.public_key], Trust.KNOWN)
        assert set(totals(s)[0]) == {(Share.PUBLIC, Trust.KNOWN)}
        # Strangers now fill the share and cannot displace him.
        junk = flood(strangers, rng, 2)
        feed(s, junk, [stranger(n % 40) for n in range(80)])
        assert s.evicted_count() > 0
        assert all(s.has(b.id) for b in bobs)
        assert totals(s)[0] == totals(s)[1]


def test_expiry_and_eviction_keep_every_total_exact(
    tmp_path: Path, rng: Rng, strangers: list[Identity]
) -> None:
    with open_store(tmp_path, public=30 * SIZE) as s:
        soon = [post(a, None, 1, rng, expires_at=NOW + 100) for a in strangers[:10]]
        later = flood(strangers[10:], rng, 2)
        feed(s, [*soon, *later], [stranger(n % 7) for n in range(70)])
        assert totals(s)[0] == totals(s)[1]
        s.purge_expired(now=NOW + 100)
        assert totals(s)[0] == totals(s)[1]
        assert sources(s)[0] == sources(s)[1]
        usage = {bytes(a): n for a, n in s._db.execute("SELECT author, bytes FROM usage") if n}
        computed = {
            bytes(a): n
            for a, n in s._db.execute(
                "SELECT author, sum(length(raw)) FROM bulletins GROUP BY author"
            )
        }
        assert usage == computed


def test_evicted_ids_are_remembered_up_to_a_bound(
    tmp_path: Path, rng: Rng, strangers: list[Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_module, "EVICTED_KEPT", 10)
    with open_store(tmp_path, public=10 * SIZE) as s:
        feed(s, flood(strangers, rng, 1), [stranger(n) for n in range(40)])
        assert 0 < s.evicted_count() <= 10


def test_the_budget_is_split_by_percentages() -> None:
    budget = Budget.split(100, 50, 30, 20)
    assert (budget.channels, budget.public, budget.mail) == (50 << 20, 30 << 20, 20 << 20)
    with pytest.raises(ValueError, match="100"):
        Budget.split(100, 60, 30, 20)


def test_a_store_from_before_the_budget_counts_what_it_holds(
    tmp_path: Path, rng: Rng, alice: Identity, bob: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = [post(alice, None, 1, rng), post(bob, None, 1, rng)]
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        with Store.open(tmp_path / "meshnode.db", seal_key=KEY) as s:
            s._db.executemany(
                "INSERT INTO bulletins (id, author, stream, seq, kind, channel_id, created_at, "
                "expires_at, received_at, raw) VALUES (?, ?, ?, ?, ?, NULL, ?, NULL, ?, ?)",
                [(b.id, b.author, b.stream, b.seq, int(b.kind), b.created_at, NOW, b.raw)
                 for b in held],
            )  # fmt: skip
    with open_store(tmp_path, public=10**6, owner=alice.public_key) as s:
        assert (
            totals(s)[0]
            == totals(s)[1]
            == {
                (Share.PUBLIC, Trust.OWN): len(held[0].raw),
                (Share.PUBLIC, Trust.STRANGER): len(held[1].raw),
            }
        )
        trusts = {bytes(a): t for a, t in s._db.execute("SELECT author, trust FROM bulletins")}
        assert trusts == {alice.public_key: Trust.OWN, bob.public_key: Trust.STRANGER}


def test_evicted_bulletins_are_not_served_nor_fetched_again(
    tmp_path: Path, rng: Rng, strangers: list[Identity], alice: Identity
) -> None:
    """What the store evicted leaves the archive's index (so gossip and sync stop
    serving it), and the archive answers gossip's ``has`` for it, which is what keeps
    announcements and sync differences naming it from making wants."""
    store = open_store(tmp_path, public=10 * SIZE, owner=alice.public_key)
    archive = Archive(alice, store, clock=lambda: NOW, rng=rng)
    topic = Topic(PUBLIC_STREAM)
    junk = flood(strangers[:20], rng, 1)
    archive.index(topic)  # (built before, so the eviction must update it)
    for n in range(0, 20, 4):
        archive.taken(junk[n : n + 4], archive.store_relayed(junk[n : n + 4], [stranger(1)] * 4))
    gone = [b for b in junk if not store.has(b.id)]
    assert gone
    for b in gone:
        assert archive.has(b.id)
        assert b.id not in archive.index(topic)
        assert archive.get(topic, [b.id]) == []
    store.close()
