"""Range-based set reconciliation: the index, the protocol, the machine, the 16 KiB figure."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.core.gossip import BulletinReceived, Gossip, GossipConfig, SyncCompleted, channel_keys
from meshnode.core.identity import Identity
from meshnode.core.sync import (
    MemoryHoldings,
    RangeIndex,
    SyncConfig,
    SyncMachine,
    SyncStep,
    demands_answer,
    fingerprint,
    opening,
    reconcile,
    topic_of,
)
from meshnode.core.wire import INFINITY, BulletinId, PeerId, RangeMode, SyncRange, Topic
from meshnode.errors import LocalProtocolError
from sim import SeededRng

if TYPE_CHECKING:
    from collections.abc import Iterator

TOPIC = Topic(b"\x07" * 32)
CFG = SyncConfig()


def fake_items(
    n: int, seed: bytes, *, start: int = 1_700_000_000, spread: int = 1
) -> list[tuple[int, bytes]]:
    """``n`` items with distinct pseudo-random ids; ``spread`` items share each timestamp."""
    return [
        (start + i // spread, hashlib.blake2b(seed + i.to_bytes(4, "big"), digest_size=32).digest())
        for i in range(n)
    ]


def run_pair(
    a: RangeIndex, b: RangeIndex, config: SyncConfig = CFG
) -> tuple[set[bytes], set[bytes], int, int, list[bytes]]:
    """Reconcile a (opener) with b; returns (ids a lacks, ids b lacks, bytes, messages, frames)."""
    lacks: dict[int, set[bytes]] = {0: set(), 1: set()}
    sides = (a, b)
    ranges = opening(a, config)
    sender, total, frames = 0, 0, []
    while True:
        data = wire.encode(wire.Sync(topic=TOPIC, opened_by_sender=sender == 0, ranges=ranges))
        frames.append(data)
        total += len(data)
        message = wire.decode(data)
        assert isinstance(message, wire.Sync)
        receiver = 1 - sender
        answer, missing = reconcile(sides[receiver], message.ranges, config)
        lacks[receiver].update(missing)
        if not demands_answer(message.ranges):
            assert answer == ()
            return lacks[0], lacks[1], total, len(frames), frames
        ranges, sender = answer, receiver
        assert len(frames) < 1000


def ids_of(items: list[tuple[int, bytes]]) -> set[bytes]:
    return {i for _, i in items}


# -- RangeIndex -------------------------------------------------------------------


def naive_fingerprint(items: list[bytes]) -> bytes:
    return fingerprint(sum(int.from_bytes(i, "little") for i in items), len(items))


def test_index_fingerprints_match_a_naive_sum() -> None:
    rng = SeededRng(b"index")
    index = RangeIndex()
    reference: list[bytes] = []
    for step in range(400):
        ts = 1000 + rng.below(50)
        bid = rng(32)
        assert index.add(ts, bid)
        assert not index.add(ts, bid)
        reference.append(ts.to_bytes(8, "big") + bid)
        if step % 7 == 3:
            gone = reference.pop(rng.below(len(reference)))
            assert index.discard(gone[8:])
            assert not index.discard(gone[8:])
        reference.sort()
        if step % 13 == 0:
            lo = rng.below(len(reference) + 1)
            hi = lo + rng.below(len(reference) - lo + 1)
            assert index.fingerprint(lo, hi) == naive_fingerprint([k[8:] for k in reference[lo:hi]])
    assert len(index) == len(reference)
    assert index.ids(0, len(index)) == [k[8:] for k in reference]
    assert all(k[8:] in index for k in reference)
    assert b"\x00" * 32 not in index


def test_bound_before_is_the_shortest_separator() -> None:
    items = [
        (10, b"\x01" * 32),
        (10, b"\x01" * 5 + b"\x02" * 27),
        (11, b"\x00" * 32),
        (12, b"\xff" * 32),
    ]
    index = RangeIndex(items)
    keys = [ts.to_bytes(8, "big") + i for ts, i in sorted(items)]
    for pos in range(len(keys)):
        b = index.bound_before(pos)
        assert pos == 0 or keys[pos - 1] < b
        assert b <= keys[pos]
        assert index.position(b) == pos
    assert index.bound_before(1) == (10).to_bytes(8, "big") + b"\x01" * 5 + b"\x02"
    assert index.bound_before(2) == (11).to_bytes(8, "big")
    assert index.bound_before(0) == (10).to_bytes(8, "big")


def test_index_built_from_items_dedups() -> None:
    items = fake_items(50, b"x")
    index = RangeIndex(items + items[:10])
    assert len(index) == 50
    assert index.fingerprint(0, 50) == naive_fingerprint([i for _, i in sorted(items)])


# -- reconciliation ---------------------------------------------------------------


def test_one_missing_among_ten_thousand_costs_little() -> None:
    items = fake_items(10_000, b"big")
    lost = items[6_543]
    a = RangeIndex(items)
    b = RangeIndex([x for x in items if x != lost])
    a_lacks, b_lacks, total, messages, _ = run_pair(a, b)
    assert a_lacks == set()
    assert b_lacks == {lost[1]}
    assert total < 2048, total
    assert messages <= 6
    # and the other way round: the opener is the one that lacks it
    a_lacks, b_lacks, total, _, _ = run_pair(b, a)
    assert a_lacks == {lost[1]}
    assert b_lacks == set()
    assert total < 2048


def test_identical_sets_take_one_round_trip() -> None:
    items = fake_items(5000, b"same")
    a_lacks, b_lacks, total, messages, frames = run_pair(RangeIndex(items), RangeIndex(items))
    assert (a_lacks, b_lacks, messages) == (set(), set(), 2)
    assert len(frames[1]) < 40  # an empty answer: "in sync"
    assert total < 600


@pytest.mark.parametrize(("n_a", "n_b"), [(0, 0), (0, 5), (5, 0), (0, 10_000), (10_000, 0)])
def test_empty_against_full(n_a: int, n_b: int) -> None:
    items = fake_items(max(n_a, n_b), b"full")
    a, b = RangeIndex(items[:n_a]), RangeIndex(items[:n_b])
    a_lacks, b_lacks, _, messages, frames = run_pair(a, b)
    assert a_lacks == ids_of(items[n_a:n_b])
    assert b_lacks == ids_of(items[n_b:n_a])
    assert all(len(f) <= wire.MAX_MESSAGE for f in frames)
    # bounded batches: 1024 ids per message, so about n / 1024 round trips
    assert messages <= 2 * (max(n_a, n_b) // wire.MAX_SYNC_IDS + 2)


def test_disjoint_sets() -> None:
    a_items, b_items = fake_items(3000, b"left"), fake_items(3000, b"right", start=1_700_000_500)
    a_lacks, b_lacks, _, _, _ = run_pair(RangeIndex(a_items), RangeIndex(b_items))
    assert a_lacks == ids_of(b_items)
    assert b_lacks == ids_of(a_items)


@pytest.mark.parametrize("spread", [1, 7, 1000])
@pytest.mark.parametrize("seed", [b"r1", b"r2", b"r3"])
def test_random_differences(spread: int, seed: bytes) -> None:
    """Shared items plus some only on each side, with many items per timestamp."""
    rng = SeededRng(seed)
    items = fake_items(3000, seed, spread=spread)
    a_items, b_items = [], []
    for item in items:
        roll = rng.below(100)
        if roll < 90:
            a_items.append(item)
            b_items.append(item)
        elif roll < 95:
            a_items.append(item)
        else:
            b_items.append(item)
    a_lacks, b_lacks, _, _, _ = run_pair(RangeIndex(a_items), RangeIndex(b_items))
    assert a_lacks == ids_of(b_items) - ids_of(a_items)
    assert b_lacks == ids_of(a_items) - ids_of(b_items)


def test_small_limits_still_converge_in_bounded_messages() -> None:
    config = SyncConfig(branching=4, idlist_threshold=8, max_ids=16, max_ranges=8)
    items = fake_items(2000, b"small")
    a = RangeIndex(items[::2] + items[1:200])
    b = RangeIndex(items[1::2])
    a_lacks, b_lacks, _, _, frames = run_pair(a, b, config)
    assert a_lacks == ids_of(items[1::2]) - ids_of(items[::2] + items[1:200])
    assert b_lacks == ids_of(items[::2])
    for data in frames:
        message = wire.decode(data)
        assert isinstance(message, wire.Sync)
        assert len(message.ranges) <= config.max_ranges
        assert sum(len(r.ids) for r in message.ranges) <= config.max_ids


def test_reconcile_answers_every_range_kind() -> None:
    items = fake_items(100, b"kinds")
    index = RangeIndex(items[:60])
    bound = wire.make_bound(1_700_000_050)
    listed = tuple(BulletinId(i) for _, i in items[40:50])
    diff = tuple(BulletinId(i) for _, i in items[55:70])
    ranges = (
        SyncRange(upper=bound, mode=RangeMode.IDLIST, ids=listed),
        SyncRange(upper=INFINITY, mode=RangeMode.DIFF, ids=diff),
    )
    answer, missing = reconcile(index, ranges, CFG)
    assert set(missing) == ids_of(items[60:70])
    assert [r.mode for r in answer] == [RangeMode.DIFF]
    assert set(answer[0].ids) == ids_of(items[:40])
    assert not demands_answer(answer)


def test_sync_config_is_checked() -> None:
    with pytest.raises(ValueError, match="branching"):
        SyncConfig(branching=1)
    with pytest.raises(ValueError, match="idlist"):
        SyncConfig(branching=16, idlist_threshold=8)
    with pytest.raises(ValueError, match="max_ranges"):
        SyncConfig(max_ranges=10)
    with pytest.raises(ValueError, match="positive"):
        SyncConfig(timeout=0)


# -- the machine ------------------------------------------------------------------

A, B = PeerId(b"\x0a" * 32), PeerId(b"\x0b" * 32)


class FakeHoldings(MemoryHoldings):
    """MemoryHoldings with ids only, for the machine's tests."""

    def __init__(self, items: list[tuple[int, bytes]]) -> None:
        super().__init__()
        for ts, bid in items:
            self.index(TOPIC).add(ts, bid)


def machine_pair(
    a_items: list[tuple[int, bytes]], b_items: list[tuple[int, bytes]], config: SyncConfig = CFG
) -> tuple[SyncMachine, SyncMachine]:
    ma, mb = SyncMachine(FakeHoldings(a_items), config), SyncMachine(FakeHoldings(b_items), config)
    ma.add(B, TOPIC, initiator=True, now=0.0)
    mb.add(A, TOPIC, initiator=False, now=0.0)
    return ma, mb


def converse(
    ma: SyncMachine, mb: SyncMachine, first: list[tuple[PeerId, wire.Sync]], now: float = 0.0
) -> Iterator[tuple[str, SyncStep]]:
    """Deliver messages back and forth; yields (receiver, step)."""
    queue = [("b", m) for _, m in first]
    while queue:
        who, message = queue.pop(0)
        step = (mb if who == "b" else ma).receive(A if who == "b" else B, message, now)
        yield who, step
        if step.reply is not None:
            queue.append(("a" if who == "b" else "b", step.reply))


def test_machine_initiator_opens_and_completes() -> None:
    items = fake_items(500, b"m")
    ma, mb = machine_pair(items, items[:-3])
    assert mb.poll(0.0) == []
    opened = ma.poll(0.0)
    assert len(opened) == 1
    assert opened[0][0] == B
    assert opened[0][1].opened_by_sender
    assert ma.active == 1
    assert ma.poll(0.0) == []
    steps = list(converse(ma, mb, opened))
    found = {i for who, s in steps if who == "b" for i in s.missing}
    assert found == ids_of(items[-3:])
    done = [s for who, s in steps if s.completed]
    assert len(done) == 1
    assert done[0].rounds >= 1
    assert ma.active == 0
    # the next periodic reconciliation is one interval later
    assert ma.poll(CFG.interval - 1) == []
    assert len(ma.poll(CFG.interval + 1)) == 1


def test_machine_times_out_and_retries() -> None:
    ma, _ = machine_pair(fake_items(10, b"t"), [])
    assert len(ma.poll(0.0)) == 1
    assert ma.poll(CFG.timeout - 0.1) == []
    assert ma.poll(CFG.timeout) == []
    assert ma.active == 0
    assert len(ma.poll(CFG.timeout + CFG.retry)) == 1


def test_machine_ignores_late_answers_and_unknown_topics() -> None:
    ma, mb = machine_pair(fake_items(10, b"late"), fake_items(5, b"late"))
    ((_, opening_message),) = ma.poll(0.0)
    step = mb.receive(A, opening_message, 0.0)
    assert step.reply is not None
    ma.poll(100.0)  # timed out
    late = ma.receive(B, step.reply, 100.0)
    assert late.reply is None
    assert not late.completed
    assert late.known
    other = wire.Sync(topic=Topic(b"\x09" * 32), opened_by_sender=True, ranges=())
    assert not ma.receive(B, other, 0.0).known


def test_machine_answers_without_state_and_respects_max_sessions() -> None:
    config = SyncConfig(max_sessions=2)
    machine = SyncMachine(FakeHoldings(fake_items(100, b"s")), config)
    peers = [PeerId(bytes([i]) * 32) for i in range(5)]
    for peer in peers:
        machine.add(peer, TOPIC, initiator=True, now=0.0)
    assert len(machine.poll(0.0)) == 2
    assert machine.poll(1.0) == []
    machine.remove_peer(peers[0])
    assert machine.active == 1
    assert len(machine.poll(1.0)) == 1
    responder = SyncMachine(FakeHoldings(fake_items(100, b"s")), config)
    responder.add(A, TOPIC, initiator=False, now=0.0)
    final = wire.Sync(
        topic=TOPIC,
        opened_by_sender=True,
        ranges=(SyncRange(upper=INFINITY, mode=RangeMode.DIFF, ids=(BulletinId(b"\x01" * 32),)),),
    )
    step = responder.receive(A, final, 0.0)
    assert step.reply is None
    assert step.missing == (b"\x01" * 32,)
    assert responder.active == 0


def test_machine_stops_after_max_rounds() -> None:
    config = SyncConfig(max_rounds=2, branching=2, idlist_threshold=2, max_ids=2, max_ranges=6)
    items = fake_items(200, b"rounds")
    ma, mb = machine_pair(items[::2], items[1::2], config)
    steps = list(converse(ma, mb, ma.poll(0.0)))
    done = [s for who, s in steps if s.completed]
    assert len(done) == 1
    assert done[0].rounds == 2
    assert ma.active == 0
    assert len(ma.poll(config.retry)) == 1  # a stopped reconciliation retries soon


def test_schedule_makes_either_side_open() -> None:
    _ma, mb = machine_pair([], [])
    mb.schedule(A, TOPIC, 5.0)
    assert mb.poll(4.0) == []
    assert len(mb.poll(5.0)) == 1
    mb.schedule(PeerId(b"\x00" * 32), TOPIC, 5.0)  # unknown: ignored
    mb.remove(A, TOPIC)
    assert mb.active == 0


# -- holdings ----------------------------------------------------------------------


def test_memory_holdings() -> None:
    alice = Identity.from_seed(b"\x01" * 32, "Alice")
    channel = Channel.from_secret("c", b"\x02" * 32)
    rng = SeededRng(b"h")
    public = Bulletin.seal(alice, None, b"hi", seq=1, prev=None, now=100, rng=rng)
    inside = Bulletin.seal(alice, channel, b"in", seq=1, prev=None, now=101, rng=rng)
    bob = Identity.from_seed(b"\x03" * 32, "Bob")
    direct = Bulletin.seal(alice, [bob.public_key], b"dm", seq=1, prev=None, now=102, rng=rng)
    holdings = MemoryHoldings()
    assert holdings.add(public)
    assert holdings.add(inside)
    assert not holdings.add(public)
    assert len(holdings) == 2
    with pytest.raises(LocalProtocolError):
        holdings.add(direct)
    assert topic_of(direct) is None
    assert topic_of(inside) == channel.id
    assert holdings.get(Topic(channel.id), [inside.id, public.id, b"\x00" * 32]) == [inside.raw]
    assert holdings.seq_id(Topic(channel.id), alice.public_key, 1) == inside.id
    assert holdings.seq_id(Topic(channel.id), alice.public_key, 2) is None
    assert holdings.ids(wire.PUBLIC_TOPIC) == {public.id}
    assert len(holdings.index(Topic(channel.id))) == 1


# -- the required figure, end to end ---------------------------------------------------


@pytest.fixture(scope="module")
def ten_thousand() -> tuple[Channel, list[Bulletin]]:
    channel = Channel.from_secret("big", b"\x05" * 32)
    rng = SeededRng(b"ten-thousand")
    authors = [Identity.from_seed(rng(32), f"a{i}") for i in range(20)]
    bulletins: list[Bulletin] = []
    prev: dict[int, bytes | None] = dict.fromkeys(range(20))
    for n in range(10_000):
        k = n % 20
        b = Bulletin.seal(
            authors[k],
            channel,
            b"x" * 100,
            seq=n // 20 + 1,
            prev=prev[k],
            now=1_700_000_000 + n // 3,
            rng=rng,
        )
        prev[k] = b.id
        bulletins.append(b)
    return channel, bulletins


def test_ten_thousand_shared_one_missing_under_16_kib(
    ten_thousand: tuple[Channel, list[Bulletin]],
) -> None:
    """Issue 4's figure: everything exchanged but the bulletin itself is under 16 KiB."""
    channel, bulletins = ten_thousand
    lost = bulletins[4321]
    topic = Topic(channel.id)
    rng = SeededRng(b"pair")
    ka, kb = PeerId(b"\x01" * 32), PeerId(b"\x02" * 32)
    holdings = {ka: MemoryHoldings(), kb: MemoryHoldings()}
    for b in bulletins:
        holdings[ka].add(b)
        if b is not lost:
            holdings[kb].add(b)
    machines = {
        k: Gossip(local=k, holdings=holdings[k], rng=rng.fork(k), now=0.0, config=GossipConfig())
        for k in (ka, kb)
    }
    for k in (ka, kb):
        machines[k].subscribe(topic, channel_keys(channel), now=0.0)
    machines[ka].add_peer(kb, b"session", 0.0)
    machines[kb].add_peer(ka, b"session", 0.0)
    total = messages = 0
    completed: list[SyncCompleted] = []
    for _ in range(50):
        moved = False
        for src, dst in ((ka, kb), (kb, ka)):
            for peer, data in machines[src].data_to_send():
                assert peer == dst
                moved = True
                total += len(data)
                messages += 1
                for event in machines[dst].receive_data(src, data, 1.0):
                    if isinstance(event, BulletinReceived):
                        holdings[dst].add(event.bulletin)
                        machines[dst].accept(event.bulletin.id, 1.0)
                    elif isinstance(event, SyncCompleted):
                        completed.append(event)
        if not moved:
            break
    assert holdings[kb].has(lost.id)
    assert len(holdings[kb]) == len(holdings[ka]) == 10_000
    # the opener (the smaller key) lacked nothing; the answerer found the one it lacks
    assert completed
    assert completed[0].missing == 0
    besides = total - len(lost.raw)
    print(f"bytes exchanged besides the bulletin: {besides} in {messages} messages")
    assert besides < 16 * 1024, besides
    assert messages < 20


def test_an_id_list_that_does_not_fit_closes_the_message() -> None:
    config = SyncConfig(branching=2, idlist_threshold=4, max_ids=4, max_ranges=6)
    items = fake_items(6, b"fit")
    index = RangeIndex(items)
    middle = index.bound_before(3)
    ranges = (
        SyncRange(upper=middle, mode=RangeMode.IDLIST, ids=()),  # we answer 3 ids
        SyncRange(upper=INFINITY, mode=RangeMode.FINGERPRINT, fingerprint=b"\x00" * 16),
    )
    answer, _ = reconcile(index, ranges, config)
    assert [r.mode for r in answer] == [RangeMode.DIFF, RangeMode.FINGERPRINT]
    assert answer[-1].upper == INFINITY
    assert answer[-1].fingerprint == index.fingerprint(3, 6)
    # and an id list that arrives when the budget is spent
    full = SyncConfig(branching=2, idlist_threshold=3, max_ids=3, max_ranges=6)
    ranges = (
        SyncRange(upper=middle, mode=RangeMode.IDLIST, ids=()),
        SyncRange(upper=INFINITY, mode=RangeMode.IDLIST, ids=()),
    )
    answer, _ = reconcile(index, ranges, full)
    assert [r.mode for r in answer] == [RangeMode.DIFF, RangeMode.FINGERPRINT]
    assert answer[0].upper == middle


def test_a_reconciliation_asked_for_during_another_runs_after_it() -> None:
    items = fake_items(100, b"again")
    ma, mb = machine_pair(items, items)
    opened = ma.poll(0.0)
    ma.schedule(B, TOPIC, 2.0)
    list(converse(ma, mb, opened, now=1.0))
    assert ma.active == 0
    assert ma.poll(1.5) == []
    assert len(ma.poll(2.0)) == 1
