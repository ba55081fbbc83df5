"""The SQLite store: real files in a temporary directory, no network."""

from __future__ import annotations

import hashlib
import inspect
import sqlite3
import stat
from typing import TYPE_CHECKING

import pytest

from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.channel import Channel
from meshnode.errors import StorageFull, StoreError
from meshnode.store import MAIL_PER_SENDER, MIGRATIONS, Budget, Insert, StorageState, Store, schema
from meshnode.store import budget as budget_module
from tests.conftest import Rng, make_identity, seeded_rng

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from meshnode.core.identity import Identity

KEY = bytes(range(32))
NOW = 1_800_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "meshnode.db", seal_key=KEY) as s:
        yield s


def post(author: Identity, channel: Channel | None, seq: int, rng: Rng, **kw: object) -> Bulletin:
    return Bulletin.seal(
        author, channel, f"bulletin {seq}".encode(), seq=seq, prev=_prev(seq), now=NOW + seq,
        rng=rng,
        **kw,  # type: ignore[arg-type]  # the tests pass expires_at only
    )  # fmt: skip


def _prev(seq: int) -> bytes | None:
    # The store does not follow chains; any 32 bytes satisfy the envelope.
    return None if seq == 1 else hashlib.blake2b(bytes([seq % 256]), digest_size=32).digest()


def test_files_are_private_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "meshnode.db"
    with Store.open(path, seal_key=KEY) as s:
        s.set_meta("name", b"Local 12")
        assert s.schema_version == len(MIGRATIONS)
        for f in tmp_path.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    with Store.open(path, seal_key=KEY) as s:
        assert s.get_meta("name") == b"Local 12"
        assert s.get_meta("missing") is None


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "meshnode.db"
    Store.open(path, seal_key=KEY).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer meshnode"):
        Store.open(path, seal_key=KEY)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "meshnode.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a meshnode store"):
        Store.open(path, seal_key=KEY)


def test_same_bulletin_twice_is_one_row(store: Store, alice: Identity, channel: Channel) -> None:
    b = post(alice, channel, 1, seeded_rng())
    assert store.add(b, now=NOW) is Insert.ADDED
    assert store.add(b, now=NOW) is Insert.DUPLICATE
    assert store.count() == 1
    got = store.get(b.id)
    assert got is not None
    assert got.raw == b.raw
    assert Bulletin.from_bytes(got.raw).id == b.id


def test_fork_keeps_both_and_flags_the_author(
    store: Store, alice: Identity, channel: Channel
) -> None:
    first = post(alice, channel, 1, seeded_rng("a"))
    second = post(alice, channel, 1, seeded_rng("b"))
    assert first.id != second.id
    assert store.add(first, now=NOW) is Insert.ADDED
    assert store.add(second, now=NOW) is Insert.FORK
    assert store.has(first.id)
    assert store.has(second.id)
    (fork,) = store.forks(alice.public_key)
    assert (fork.first_id, fork.second_id, fork.seq) == (first.id, second.id, 1)
    assert fork.stream == channel.id


@pytest.mark.parametrize("unsynced", [False, True])
def test_one_batch_does_what_one_at_a_time_does(
    tmp_path: Path, alice: Identity, bob: Identity, channel: Channel, unsynced: bool
) -> None:
    """Duplicates, forks (against a held bulletin and inside the batch) and the quota
    come out the same whether the bulletins are stored in one batch or one by one."""
    rng = seeded_rng()
    held = [post(bob, channel, s, rng) for s in (1, 2)]
    batch = [
        post(bob, channel, 3, rng),
        held[0],  # held already: a duplicate
        post(bob, channel, 2, seeded_rng("rival")),  # a fork of a held bulletin
        post(bob, channel, 5, rng),
        post(bob, channel, 5, seeded_rng("twin")),  # a fork inside the batch
        post(alice, channel, 1, rng),
    ]
    batch.insert(4, batch[3])  # the same bulletin twice in one batch
    batch += [post(bob, channel, s, rng) for s in range(6, 12)]  # the quota fills up
    outcomes = []
    for one_by_one in (True, False):
        with Store.open(
            tmp_path / f"{one_by_one}.db", seal_key=KEY, owner=alice.public_key,
            author_quota=sum(len(b.raw) for b in held) + 6 * len(batch[0].raw),
        ) as s:  # fmt: skip
            s.add_many(held, now=NOW)
            if one_by_one:
                results = [s.add(b, now=NOW) for b in batch]
            elif unsynced:
                results = s.add_unsynced(batch, now=NOW)
            else:
                results = s.add_many(batch, now=NOW)
            outcomes.append(
                (
                    results,
                    [(f.seq, f.first_id, f.second_id) for f in s.forks()],
                    s.usage(bob.public_key),
                    s.frontiers(channel.id),
                    [a.id for a in s.arrivals()],
                    s.gaps(channel.id, bob.public_key),
                )
            )
    assert outcomes[0] == outcomes[1]
    results = outcomes[0][0]
    assert results[:7] == [
        Insert.ADDED, Insert.DUPLICATE, Insert.FORK, Insert.ADDED, Insert.DUPLICATE,
        Insert.FORK, Insert.ADDED,
    ]  # fmt: skip
    assert Insert.OVER_QUOTA in results


def test_channel_order_frontiers_gaps_and_after(
    store: Store, alice: Identity, bob: Identity, channel: Channel
) -> None:
    rng = seeded_rng()
    mine = [post(alice, channel, s, rng) for s in (1, 2, 4, 5)]
    theirs = [post(bob, channel, s, rng) for s in (1, 2, 3)]
    assert all(r is Insert.ADDED for r in store.add_many([*mine, *theirs], now=NOW))
    assert store.frontiers(channel.id) == {alice.public_key: 5, bob.public_key: 3}
    assert store.gaps(channel.id, alice.public_key) == [3]
    assert store.gaps(channel.id, bob.public_key) == []
    assert [s.id for s in store.after(channel.id, alice.public_key, 2)] == [
        mine[2].id,
        mine[3].id,
    ]
    ordered = [Bulletin.from_bytes(s.raw) for s in store.channel_bulletins(channel.id)]
    assert [(b.created_at, b.author, b.seq) for b in ordered] == sorted(
        (b.created_at, b.author, b.seq) for b in [*mine, *theirs]
    )
    assert len(store.channel_bulletins(channel.id, limit=2)) == 2
    assert len(store.channel_bulletins(channel.id, since=NOW + 4)) == 2
    arrivals = store.arrivals()
    assert [a.cursor for a in arrivals] == sorted(a.cursor for a in arrivals)
    assert store.arrivals(after=store.last_cursor()) == []


def test_quota_refuses_a_noisy_author_but_not_the_owner(
    tmp_path: Path, alice: Identity, bob: Identity, channel: Channel
) -> None:
    rng = seeded_rng()
    with Store.open(
        tmp_path / "q.db", seal_key=KEY, owner=alice.public_key, author_quota=1000
    ) as s:
        results = [s.add(post(bob, channel, n, rng), now=NOW) for n in range(1, 10)]
        assert Insert.OVER_QUOTA in results
        assert s.usage(bob.public_key) <= 1000
        assert all(s.add(post(alice, channel, n, rng), now=NOW).stored for n in range(1, 10))
        # Membership operations are never charged, even to a full quota.
        carrier = Bulletin.seal(
            bob, channel, b"an operation", seq=20, prev=b"\x00" * 32, now=NOW, rng=rng,
            content_type="application/vnd.meshnode.membership-op", kind=Kind.MEMBERSHIP,
        )
        used = s.usage(bob.public_key)
        assert s.add(carrier, now=NOW).stored
        assert s.usage(bob.public_key) == used


def test_purge_expired(store: Store, alice: Identity, channel: Channel) -> None:
    rng = seeded_rng()
    keep = post(alice, channel, 1, rng)
    gone = post(alice, channel, 2, rng, expires_at=NOW + 100)
    store.add_many([keep, gone], now=NOW)
    assert store.purge_expired(now=NOW + 99) == 0
    assert store.purge_expired(now=NOW + 100) == 1
    assert store.has(keep.id)
    assert not store.has(gone.id)
    assert store.usage(alice.public_key) == len(keep.raw)
    assert store.frontiers(channel.id) == {alice.public_key: 2}


def test_nothing_expired_is_stored_served_or_reconciled(
    store: Store, alice: Identity, channel: Channel
) -> None:
    rng = seeded_rng()
    keep = post(alice, channel, 1, rng)
    old = Bulletin.seal(
        alice, channel, b"1970", seq=2, prev=_prev(2), now=100, expires_at=200, rng=rng
    )
    soon = post(alice, channel, 3, rng, expires_at=NOW + 100)
    added = store.add_many([keep, old, soon], now=NOW)
    assert added == [Insert.ADDED, Insert.EXPIRED, Insert.ADDED]
    assert store.add_unsynced([old], now=NOW) == [Insert.EXPIRED]
    assert not Insert.EXPIRED.stored
    assert not store.has(old.id)
    assert store.usage(alice.public_key) == len(keep.raw) + len(soon.raw)
    ids = [keep.id, soon.id]
    assert [s.id for s in store.get_many(ids, now=NOW)] == ids
    assert [s.id for s in store.get_many(ids, now=NOW + 100)] == [keep.id]  # held, not served
    assert [i for _, i in store.items(channel.id, now=NOW + 100)] == [keep.id]


def test_channels_round_trip_sealed(tmp_path: Path, rng: Rng) -> None:
    path = tmp_path / "meshnode.db"
    strike = Channel.from_secret("strike-support", rng(32)).next_epoch(rng)
    with Store.open(path, seal_key=KEY) as s:
        s.save_channel(strike, now=NOW)
        s.save_channel(strike, now=NOW)  # idempotent
        namesake = Channel.from_secret("strike-support", rng(32))
        s.save_channel(namesake, now=NOW)  # names are labels: the id tells them apart
        assert {c.id for c in s.channels()} == {strike.id, namesake.id}
        assert s.delete_channel(namesake.id)
    raw = path.read_bytes()
    assert strike.founding_secret not in raw
    assert strike.epochs[1] not in raw
    with Store.open(path, seal_key=KEY) as s:
        (got,) = s.channels()
        assert (got.id, got.name, dict(got.epochs)) == (strike.id, strike.name, strike.epochs)
        assert s.channel(strike.id) is not None
        assert s.delete_channel(strike.id)
        assert s.channels() == []
        assert s.channel(strike.id) is None
        s.save_channel(strike, now=NOW)
    with (
        Store.open(path, seal_key=bytes(32)) as s,
        pytest.raises(StoreError, match="another identity"),
    ):
        s.channels()


def test_a_version_1_store_keeps_its_channels_and_lets_names_repeat(
    tmp_path: Path, rng: Rng, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "meshnode.db"
    strike = Channel.from_secret("strike-support", rng(32)).next_epoch(rng)
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", MIGRATIONS[:1])
        with Store.open(path, seal_key=KEY) as s:
            assert s.schema_version == 1
            # As 0.1.0 wrote a channel: one sealed secret per epoch number.
            s._db.execute(
                "INSERT INTO channels (id, name, joined_at) VALUES (?, ?, ?)",
                (strike.id, strike.name, NOW),
            )
            s._db.executemany(
                "INSERT INTO channel_epochs (channel_id, epoch, sealed_secret) VALUES (?, ?, ?)",
                [(strike.id, e, s._seal(k, strike.id, e)) for e, k in strike.epochs.items()],
            )
    namesake = Channel.from_secret("strike-support", rng(32))
    with Store.open(path, seal_key=KEY) as s:
        assert s.schema_version == len(MIGRATIONS)
        (got,) = s.channels()
        assert (got.id, got.name, dict(got.epochs)) == (strike.id, strike.name, strike.epochs)
        s.save_channel(namesake, now=NOW)
        assert s.delete_channel(strike.id)
        assert s.channels() == [namesake]
    db = sqlite3.connect(path)
    held = db.execute("SELECT DISTINCT channel_id FROM channel_secrets").fetchall()
    db.close()
    assert held == [(namesake.id,)]  # the epochs still go with their channel


def test_contacts(store: Store, bob: Identity, carol: Identity) -> None:
    store.add_contact("tenants", bob.public_key, now=NOW)
    with pytest.raises(StoreError, match="already a contact"):
        store.add_contact("tenants", carol.public_key, now=NOW)
    with pytest.raises(StoreError, match="already a contact"):
        store.add_contact("other", bob.public_key, now=NOW)
    store.add_contact("food bank", carol.public_key, now=NOW)
    assert [c.petname for c in store.contacts()] == ["food bank", "tenants"]
    updated = store.update_contact(bob.public_key, verified=True)
    assert updated is not None
    assert updated.verified
    assert not updated.blocked
    blocked = store.update_contact(bob.public_key, blocked=True)
    assert blocked is not None
    assert blocked.blocked
    found = store.contact_by_name("tenants")
    assert found is not None
    assert found.key == bob.public_key
    assert store.update_contact(bytes(32), verified=True) is None


def test_dht_records(store: Store) -> None:
    store.dht_put(b"k1", b"v1", NOW)
    store.dht_put(b"k1", b"v2", NOW + 1)
    store.dht_put(b"k2", b"v3", NOW)
    assert sorted(store.dht_records()) == [(b"k1", b"v2"), (b"k2", b"v3")]
    store.dht_delete(b"k1")
    assert store.dht_records() == [(b"k2", b"v3")]


def test_get_many_keeps_order_and_skips_unknown(
    store: Store, alice: Identity, channel: Channel
) -> None:
    rng = seeded_rng()
    bs = [post(alice, channel, s, rng) for s in range(1, 700)]
    store.add_many(bs, now=NOW)
    ids = [b.id for b in reversed(bs)]
    got = store.get_many([*ids, bytes(32)], now=NOW)
    assert [g.id for g in got] == ids


def test_mail_is_bounded_per_sender_and_handed_out_in_order(
    store: Store, alice: Identity, bob: Identity
) -> None:
    rng = seeded_rng()
    direct = [
        Bulletin.seal(alice, [bob.public_key], b"m", seq=s, prev=_prev(s), now=NOW + s, rng=rng)
        for s in range(1, MAIL_PER_SENDER + 3)
    ]
    kept = [store.hold_mail(bob.public_key, b, now=NOW, standing=False) for b in direct]
    assert kept.count(True) == MAIL_PER_SENDER
    assert store.mail_count() == MAIL_PER_SENDER
    first, more = store.mail_for(bob.public_key, now=NOW, limit=10)
    assert more
    assert first == [b.raw for b in direct[:10]]
    store.forget_mail(bob.public_key, [b.id for b in direct[:10]])
    assert store.mail_count() == MAIL_PER_SENDER - 10
    assert store.mail_for(alice.public_key, now=NOW, limit=10) == ([], False)
    late = NOW + 8 * 86400
    assert store.mail_for(bob.public_key, now=late, limit=10) == ([], False)
    store.purge_expired(now=late)
    assert store.mail_count() == 0


def test_outbox_until_delivered(
    store: Store, alice: Identity, bob: Identity, carol: Identity
) -> None:
    b = Bulletin.seal(
        alice, [bob.public_key, carol.public_key], b"hi", seq=1, prev=None, now=NOW,
        rng=seeded_rng(),
    )  # fmt: skip
    store.queue_delivery(b, [bob.public_key, carol.public_key])
    assert len(store.pending_deliveries(now=NOW)) == store.pending_count(now=NOW) == 2
    store.delivered(b.id, bob.public_key)
    store.held_by_one_more(b.id, carol.public_key)
    assert store.pending_deliveries(now=NOW) == [(b.id, carol.public_key, 1)]
    assert store.pending_deliveries(now=NOW + 8 * 86400) == []
    assert store.pending_count(now=NOW + 8 * 86400) == 0


def test_purge_expired_forgets_what_expired_in_every_room(
    store: Store, alice: Identity, bob: Identity, channel: Channel
) -> None:
    rng = seeded_rng()
    end = NOW + 100
    store.add(post(alice, channel, 1, rng, expires_at=end), now=NOW)
    direct = mail(alice, bob, 1, rng, expires_at=end)
    assert store.hold_mail(bob.public_key, direct, now=NOW, standing=True)
    store.queue_delivery(direct, [bob.public_key])
    store.dht_put(b"k", b"v", end)
    tables = ("bulletins", "mail", "mail_usage", "outbox", "dht_records")

    def rows() -> list[int]:
        return [store._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables]

    assert store.purge_expired(now=end - 1) == 0
    assert all(rows())
    assert store.purge_expired(now=end) == 1
    assert rows() == [0] * len(tables)


def mail(author: Identity, recipient: Identity, seq: int, rng: Rng, **kw: object) -> Bulletin:
    return Bulletin.seal(
        author, [recipient.public_key], b"m", seq=seq, prev=_prev(seq), now=NOW + seq, rng=rng,
        **kw,  # type: ignore[arg-type]  # the tests pass expires_at only
    )  # fmt: skip


def mail_totals(s: Store) -> tuple[dict[tuple[bytes, bytes], tuple[int, int, int]], ...]:
    """The running totals, and the same computed from the mail table itself."""
    kept = {
        (bytes(r), bytes(a)): (c, b, x)
        for r, a, c, b, x in s._db.execute("SELECT * FROM mail_usage")
    }
    computed: dict[tuple[bytes, bytes], tuple[int, int, int]] = {}
    rows = s._db.execute("SELECT recipient, author, size, standing FROM mail").fetchall()
    for r, a, size, standing in rows:
        for key in ((r, a), (b"", a), (r, b""), (b"", b"")):
            c, b, x = computed.get(key, (0, 0, 0))
            computed[key] = (c + 1, b + size, x + (0 if standing else size))
    return kept, computed


def test_holding_mail_reads_as_much_however_much_is_held(
    store: Store, alice: Identity, bob: Identity
) -> None:
    rng = seeded_rng()
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    statements: list[str] = []
    store._db.execute("PRAGMA synchronous=OFF")  # (the filling only: fsyncs cost time)
    store._db.set_progress_handler(step, 1)  # one call per SQLite VM instruction
    store._db.set_trace_callback(statements.append)
    costs = []
    senders = [make_identity(f"sender {n}") for n in range(10)]
    for held in (10, 2000):
        store._db.execute("DELETE FROM mail")
        store._db.execute("DELETE FROM mail_usage")
        for n in range(held):
            recipient = n.to_bytes(32)  # (the store takes any key as a recipient)
            b = mail(senders[n % 10], alice, n + 1, rng)
            assert store.hold_mail(recipient, b, now=NOW, standing=True)
        assert store.mail_count() == held
        steps, statements[:] = 0, []
        assert store.hold_mail(bob.public_key, mail(alice, bob, 1, rng), now=NOW, standing=False)
        costs.append((steps, len(statements)))
        plans = [
            detail
            for sql in statements
            if sql.startswith(("SELECT", "INSERT", "DELETE"))
            for *_, detail in store._db.execute(f"EXPLAIN QUERY PLAN {sql}")
        ]
        assert plans
        assert not [p for p in plans if p.startswith("SCAN")], plans
    assert costs[0] == costs[1]


@pytest.mark.parametrize("bound", ["MAIL_BYTES_PER_RECIPIENT", "mail share"])
def test_throw_away_senders_fill_half_a_share_and_half_of_all(
    tmp_path: Path, alice: Identity, bob: Identity, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    rng = seeded_rng()
    size = len(mail(alice, bob, 1, rng).raw)  # every mail below has this size
    budget = Budget()
    if bound == "mail share":
        budget = Budget(mail=10 * size)
    else:
        monkeypatch.setattr(budget_module, bound, 10 * size)
    store = Store.open(tmp_path / "meshnode.db", seal_key=KEY, budget=budget)
    # Twenty throw-away keys, to one recipient or (for the total) to twenty.
    one = bound == "MAIL_BYTES_PER_RECIPIENT"
    recipients = [bob.public_key if one else n.to_bytes(32) for n in range(20)]
    strangers = [make_identity(f"throw-away {n}") for n in range(20)]
    kept = [
        store.hold_mail(r, mail(s, bob, 1, rng), now=NOW, standing=False)
        for r, s in zip(recipients, strangers, strict=True)
    ]
    assert kept == [True] * 5 + [False] * 15
    members = [make_identity(f"member {n}") for n in range(6)]  # contacts, say
    kept = [
        store.hold_mail(r, mail(m, bob, 1, rng), now=NOW, standing=True)
        for r, m in zip(recipients, members, strict=False)
    ]
    assert kept == [True] * 5 + [False]  # the other half, and then the bound is reached
    if one:  # another recipient has a share of its own
        assert store.hold_mail(alice.public_key, mail(bob, alice, 1, rng), now=NOW, standing=False)


def test_mail_totals_follow_holding_forgetting_and_expiry(
    store: Store, alice: Identity, bob: Identity, carol: Identity
) -> None:
    rng = seeded_rng()
    soon = [mail(alice, bob, s, rng, expires_at=NOW + 100) for s in (1, 2)]
    later = [mail(alice, bob, 3, rng), mail(carol, bob, 1, rng), mail(bob, carol, 1, rng)]
    to = [bob, bob, bob, bob, carol]
    for n, (r, b) in enumerate(zip(to, [*soon, *later], strict=True)):
        assert store.hold_mail(r.public_key, b, now=NOW, standing=n % 2 == 0)
    assert store.hold_mail(bob.public_key, later[0], now=NOW, standing=True)  # held already
    kept, computed = mail_totals(store)
    assert kept == computed
    assert kept[(b"", b"")][0] == store.mail_count() == 5
    store.forget_mail(bob.public_key, [later[0].id, later[2].id])  # the second is not his
    kept, computed = mail_totals(store)
    assert kept == computed
    assert store.mail_count() == 4
    store.purge_expired(now=NOW + 100)
    kept, computed = mail_totals(store)
    assert kept == computed
    assert set(kept) == {
        (bob.public_key, carol.public_key), (carol.public_key, bob.public_key),
        (bob.public_key, b""), (carol.public_key, b""),
        (b"", carol.public_key), (b"", bob.public_key), (b"", b""),
    }  # fmt: skip
    store.forget_mail(bob.public_key, [later[1].id])
    store.forget_mail(carol.public_key, [later[2].id])
    assert mail_totals(store) == ({}, {})
    assert store.mail_count() == 0


def test_migration_3_totals_the_mail_held(
    tmp_path: Path, alice: Identity, bob: Identity, carol: Identity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    rng = seeded_rng()
    path = tmp_path / "meshnode.db"
    held = [mail(alice, bob, 1, rng), mail(alice, bob, 2, rng), mail(carol, bob, 1, rng)]
    held.append(mail(alice, carol, 3, rng))
    to = [bob, bob, bob, carol]
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", MIGRATIONS[:2])
        with Store.open(path, seal_key=KEY) as s:
            s._db.executemany(
                "INSERT INTO mail (recipient, id, author, size, expires_at, received_at, raw) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.public_key, b.id, b.author, len(b.raw), NOW + 86400, NOW, b.raw)
                 for r, b in zip(to, held, strict=True)],
            )  # fmt: skip
    with Store.open(path, seal_key=KEY) as s:
        assert s.schema_version == len(MIGRATIONS)
        kept, computed = mail_totals(s)
        assert kept == computed
        assert kept[(bob.public_key, b"")] == (3, *[sum(len(b.raw) for b in held[:3])] * 2)
        assert s.mail_count() == 4
        s.purge_expired(now=NOW + 86400)
        assert mail_totals(s) == ({}, {})
    with Store.open(tmp_path / "empty.db", seal_key=KEY) as s:
        assert mail_totals(s) == ({}, {})


def _limit_pages(store: Store, pages: int) -> None:
    # SQLite answers SQLITE_FULL past max_page_count, as on a full disk (no root needed).
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_refuses_writes_keeps_reads_and_recovers(
    store: Store, alice: Identity, channel: Channel
) -> None:
    rng = seeded_rng()
    kept = post(alice, channel, 1, rng)
    store.add(kept, now=NOW)
    seen: list[StorageState] = []
    store.watch(lambda: seen.append(store.state))
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    _limit_pages(store, pages)
    refused = None
    for seq in range(2, 1000):
        bulletin = post(alice, channel, seq, rng)
        try:
            store.add(bulletin, now=NOW)
        except StorageFull:
            refused = bulletin
            break
    assert refused is not None
    assert store.state is StorageState.FULL
    with pytest.raises(StorageFull, match="disk holding the store is full"):
        store.add_unsynced([refused], now=NOW)
    assert not store._db.in_transaction
    # What the store holds is still served, and the refused bulletin left no trace.
    assert store.get(kept.id) is not None
    assert not store.has(refused.id)
    assert store.count() == refused.seq - 1
    _limit_pages(store, pages * 100)
    assert store.add(refused, now=NOW) is Insert.ADDED
    assert store.state is StorageState.OK
    assert seen == [StorageState.FULL, StorageState.OK]


def test_other_sqlite_errors_are_store_errors(store: Store) -> None:
    store._db.execute("PRAGMA query_only = 1")
    with pytest.raises(StoreError, match="readonly") as caught:
        store.set_meta("x", b"y")
    assert not isinstance(caught.value, StorageFull)
    assert store.state is StorageState.ERROR
    assert store.get_meta("x") is None
    store._db.execute("PRAGMA query_only = 0")
    store.set_meta("x", b"y")
    assert store.state is StorageState.OK


def test_a_closed_store_raises_store_errors(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "meshnode.db", seal_key=KEY)
    s.close()
    with pytest.raises(StoreError, match="closed database"):
        _ = s.schema_version
    with pytest.raises(StoreError, match="closed database"):
        s.count()


def test_every_room_s_public_methods_raise_store_errors(tmp_path: Path) -> None:
    """Rule 6 covers the methods and properties Store gets from its rooms (mixins)
    as well as its own: each one is wrapped on Store itself."""
    public = {
        name
        for name in dir(Store)
        if not name.startswith("_")
        and (
            inspect.isfunction(getattr(Store, name))
            or isinstance(inspect.getattr_static(Store, name), property)
        )
    }
    typed = {
        name
        for name, attr in vars(Store).items()
        if hasattr(attr.fget if isinstance(attr, property) else attr, "__wrapped__")
        and not isinstance(attr, classmethod)  # open() types its errors itself
    }
    assert public == typed
    assert {"add", "save_channel", "contacts", "hold_mail", "dht_put", "known"} <= typed
    s = Store.open(tmp_path / "meshnode.db", seal_key=KEY)
    s.close()
    for call in (s.channels, s.contacts, s.mail_count, s.dht_records, s.evicted_count, s.count):
        with pytest.raises(StoreError, match="closed database"):
            call()


def test_a_rollback_sqlite_did_already_does_not_mask_the_error(store: Store) -> None:
    def fail_after_sqlite_rolled_back() -> None:
        with store._transaction():
            store._db.execute("ROLLBACK")  # as SQLite does itself after some errors
            raise ValueError("first")

    with pytest.raises(ValueError, match="first"):
        fail_after_sqlite_rolled_back()
    assert not store._db.in_transaction



def test_the_relay_group_is_read_at_once_and_committed_later(
    tmp_path: Path, alice: Identity, rng: Rng
) -> None:
    """Relayed bulletins are readable as soon as they are written to the relay group;
    another connection sees them only once it is committed; a durable write commits
    the group first, and so does closing."""
    path = tmp_path / "meshnode.db"
    store = Store.open(path, seal_key=KEY)
    b1, b2, b3, b4, b5 = (post(alice, None, seq, rng) for seq in range(1, 6))
    other = sqlite3.connect(path)

    def committed() -> int:
        count: int = other.execute("SELECT count(*) FROM bulletins").fetchone()[0]
        return count

    assert store.add_relayed([b1], now=NOW) == [Insert.ADDED]
    assert store.has(b1.id)
    assert committed() == 0
    store.add_relayed([b2], now=NOW)
    store.add(b3, now=NOW)
    assert committed() == 3
    store.add_relayed([b4], now=NOW)
    store.commit_relayed()
    assert committed() == 4
    store.add_relayed([b5], now=NOW)
    store.close()
    assert committed() == 5
    other.close()


def test_a_failed_relay_group_commit_hands_its_bulletins_back(
    tmp_path: Path, alice: Identity, rng: Rng
) -> None:
    """A commit that fails rolls the whole group back; its bulletins come back from
    ``take_evictions`` so the indexes above let go of them, and the store goes on."""
    with Store.open(tmp_path / "meshnode.db", seal_key=KEY) as store:
        b1, b2, b3 = (post(alice, None, seq, rng) for seq in range(1, 4))
        store.add_relayed([b1, b2], now=NOW)
        # A foreign key checked only at COMMIT makes the commit itself fail.
        store._db.execute("PRAGMA defer_foreign_keys=ON")
        store._db.execute("INSERT INTO channel_secrets VALUES (x'00', 0, x'00')")
        with pytest.raises(StoreError):
            store.commit_relayed()
        assert sorted(store.take_evictions()) == sorted([b1.id, b2.id])
        assert not store.has(b1.id)
        assert store.state is StorageState.ERROR
        assert store.add_unsynced([b3], now=NOW) == [Insert.ADDED]
        assert store.state is StorageState.OK
