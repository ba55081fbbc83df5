"""The internet-scale simulator (sim/internet.py, sim/scenarios.py), bounded to seconds.

Rules for this module: no sockets, no wall clock, no sleeps. Every figure
asserted is simulated (delivery ratios, simulated seconds, bytes); a seed
replays each run exactly. ``make sim`` runs the same scenarios at full size.
"""

from __future__ import annotations

import pytest

from meshnode.core.bulletin import Bulletin
from meshnode.core.identity import Identity
from meshnode.core.wire import PUBLIC_TOPIC, PeerId
from meshnode.errors import InvalidBulletin
from sim import report
from sim.internet import Internet, InternetConfig, forged, kademlia_rounds, shared_verdicts
from sim.scenarios import Result, Scenario, World, percentile, run

T0 = 1_700_000_000


def two_nodes(loss: float, *, rtt: float = 0.1) -> tuple[Internet, Identity, Identity]:
    net = Internet(seed=b"two", net=InternetConfig(loss=loss, rtt_low=rtt, rtt_high=rtt))
    alice, bob = Identity.from_seed(b"\x01" * 32, "a"), Identity.from_seed(b"\x02" * 32, "b")
    for group in (alice, bob):
        net.add_member(group, {PUBLIC_TOPIC: ()})
    assert net.link(alice.public_key, bob.public_key)
    return net, alice, bob


def test_a_bulletin_takes_half_a_round_trip_and_its_store_pass_runs_at_once() -> None:
    net, alice, bob = two_nodes(0.0)
    first = Bulletin.seal(alice, None, b"one", seq=1, prev=None, now=T0, rng=bytes)
    posts = [first, Bulletin.seal(alice, None, b"two", seq=2, prev=first.id, now=T0, rng=bytes)]
    net.at(1.0, lambda: net.publish(alice.public_key, posts[0]))
    net.at(1.01, lambda: net.publish(alice.public_key, posts[1]))
    assert net.run(5.0)
    arrivals = net.nodes[PeerId(bob.public_key)].arrivals
    # Each is stored by the pass that follows the read it came in, at once.
    assert arrivals[posts[0].id] == pytest.approx(1.05)
    assert arrivals[posts[1].id] == pytest.approx(1.06)


def test_loss_is_retransmission_delay_never_a_lost_payload() -> None:
    net, alice, bob = two_nodes(0.5, rtt=0.1)
    post = Bulletin.seal(alice, None, b"x" * 4000, seq=1, prev=None, now=T0, rng=bytes)
    net.at(1.0, lambda: net.publish(alice.public_key, post))
    assert net.run(30.0)
    stats = net.statistics()
    assert stats.payloads_lost > 0  # (segments retransmitted)
    when = net.nodes[PeerId(bob.public_key)].arrivals[post.id]
    assert when >= 1.0 + 0.05 + 0.2  # half a round trip and at least one 200 ms RTO


def test_kademlia_rounds_grow_with_the_log_of_n() -> None:
    assert [kademlia_rounds(n, 20) for n in (10, 100, 1000, 10_000, 1_000_000)] == [1, 2, 3, 4, 5]


def test_shared_verdicts_check_once_and_restore_the_decoder() -> None:
    alice = Identity.from_seed(b"\x01" * 32, "a")
    post = Bulletin.seal(alice, None, b"hi", seq=1, prev=None, now=T0, rng=bytes)
    decode = Bulletin.from_bytes
    with shared_verdicts() as cache:
        assert Bulletin.from_bytes(post.raw) is Bulletin.from_bytes(bytes(post.raw))
        for _ in range(2):
            with pytest.raises(InvalidBulletin, match="signature"):
                Bulletin.from_bytes(forged(post))
        assert len(cache) == 2
    assert Bulletin.from_bytes == decode
    assert percentile([], 0.5) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


def small(name: str, **kw: float) -> Result:
    return run(Scenario(name=name, nodes=120, members=80, bulletins=5, horizon=300.0, **kw))


@pytest.mark.slow
def test_with_loss_everyone_gets_everything_within_a_second() -> None:
    result = small("sweep-120")
    for topic in (result.public, result.channel):
        assert topic.delivered == 1.0
        assert topic.p95 < 1.0  # simulated seconds
        assert topic.bytes_per_node > 1024  # at least one copy of a 1 KiB bulletin
    assert result.segments_lost > 0
    assert result.drops == result.offences == 0


@pytest.mark.slow
def test_churners_and_their_mail_catch_up() -> None:
    world = World(Scenario(name="churn", nodes=120, members=80, bulletins=5, churn=0.1,
                           direct=4, horizon=300.0))
    result = world.run()
    assert result.public.delivered == result.channel.delivered == 1.0
    assert result.extra["direct_delivered"] == 1.0
    assert result.lookups > 0
    assert all(n.online for n in world.churners)
    # some churner was away while bulletins went out, so caught up by sync after
    assert result.extra["churner_max"] > 5.0
    assert any(s.missing > 0 for n in world.churners for s in n.syncs)


@pytest.mark.slow
def test_adversaries_cost_the_honest_little() -> None:
    baseline = small("sweep-120")
    world = World(Scenario(name="mixed", nodes=120, members=80, bulletins=5, silent=120,
                           flooders=120, eclipsers=120, horizon=300.0))
    attacked = world.run()
    for before, after in ((baseline.public, attacked.public),
                          (baseline.channel, attacked.channel)):
        assert after.delivered >= 0.99
        assert after.p99 <= 2 * before.p99
    assert attacked.drops > 0  # flooders were dropped by the gossip machine's scoring
    assert attacked.extra["eclipsed_mesh_sybils"] == attacked.extra["eclipsed_mesh"] > 0
    records = {"sweep-120": baseline.record(), "mixed": attacked.record()}
    (target,) = report.targets(records)
    assert target.met
    assert "| mixed | 120 + 360 | public |" in report.tables(records)


@pytest.mark.slow
def test_nodes_that_come_back_among_sybils_still_get_the_public_topic() -> None:
    world = World(Scenario(name="silent-churn", nodes=120, members=30, bulletins=5,
                           silent=480, churn=0.2, horizon=150.0))
    result = world.run()
    assert result.channel.delivered == 1.0  # members find members through the rendezvous
    assert result.public.delivered == 1.0
    # Some came back to Sybils only, and gave them up for peers that relay.
    assert result.extra["closed_idle"] > 0
