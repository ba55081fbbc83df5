"""Many nodes running the real gossip machine in one process, on a simulated lossy network.

Rules for this module: no sockets, no wall clock, no sleeps. Time is the
simulation's; every random choice comes from the seed, so each run repeats
exactly. Assertions on time are on simulated seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.core.gossip import GossipConfig, channel_keys
from meshnode.core.identity import Identity
from meshnode.core.sync import SyncConfig
from meshnode.core.wire import PUBLIC_TOPIC, PeerId, Topic
from meshnode.errors import LocalProtocolError
from sim import SeededRng, Simulation

T0 = 1_700_000_000


@dataclass
class World:
    sim: Simulation
    groups: list[Identity]
    channels: list[Channel]
    members: list[set[PeerId]]
    rng: SeededRng
    authors: dict[bytes, PeerId] = field(default_factory=dict)

    def post(self, when: float, author: Identity, channel: Channel | None, n: int) -> None:
        """``author`` posts ``n`` chained bulletins at ``when`` (in the channel or in public)."""
        bulletins: list[Bulletin] = []
        for i in range(n):
            bulletins.append(
                Bulletin.seal(
                    author,
                    channel,
                    f"{author.name} #{i}".encode(),
                    seq=i + 1,
                    prev=bulletins[-1].id if bulletins else None,
                    now=T0 + int(when),
                    rng=self.rng,
                )
            )
        for i, b in enumerate(bulletins):
            self.authors[b.id] = PeerId(author.public_key)
            self.sim.at(when + 0.2 * i, lambda b=b: self.sim.publish(author.public_key, b))


def build(
    n: int,
    *,
    seed: bytes,
    loss: float,
    channels: list[range],
    config: GossipConfig,
    dials: int = 3,
    member_dials: int = 2,
) -> World:
    """``n`` nodes; each dials ``dials`` random earlier nodes and ``member_dials`` earlier
    members of each of its channels (as rendezvous lookups would find them)."""
    rng = SeededRng(seed)
    sim = Simulation(seed=seed, loss=loss, config=config)
    groups = [Identity.from_seed(rng(32), f"group {i}") for i in range(n)]
    chans = [Channel.from_secret(f"channel {c}", rng(32)) for c in range(len(channels))]
    members: list[set[PeerId]] = [set() for _ in channels]
    for i, group in enumerate(groups):
        topics: dict[Topic, tuple[bytes, ...]] = {PUBLIC_TOPIC: ()}
        for c, span in enumerate(channels):
            if i in span:
                topics[Topic(chans[c].id)] = channel_keys(chans[c])
                members[c].add(PeerId(group.public_key))
        sim.add_node(group.public_key, topics)
    keys = [PeerId(g.public_key) for g in groups]
    for i in range(1, n):
        for peer in rng.sample(keys[:i], dials):
            sim.connect(keys[i], peer)
        for span in channels:
            if i in span:
                earlier = [keys[j] for j in span if j < i]
                for peer in rng.sample(earlier, member_dials):
                    sim.connect(keys[i], peer)
    return World(sim, groups, chans, members, rng)


def offences(sim: Simulation) -> int:
    return sum(node.gossip.statistics().offences for node in sim.nodes.values())


def test_two_hundred_nodes_with_loss_all_get_everything() -> None:
    config = GossipConfig(sync=SyncConfig(interval=20.0))
    world = build(
        200, seed=b"two hundred", loss=0.10, channels=[range(0, 140), range(60, 200)], config=config
    )
    sim = world.sim
    posters = world.rng.sample([PeerId(g.public_key) for g in world.groups], 60)
    by_key = {PeerId(g.public_key): g for g in world.groups}
    for k, key in enumerate(posters):
        author = by_key[key]
        mine = [ch for ch, m in zip(world.channels, world.members, strict=True) if key in m]
        world.post(0.1 * k, author, mine[k % len(mine)], 2)
        world.post(0.1 * k + 0.05, author, None, 1)
    done = sim.run(600.0, stop=lambda: sim.now > 8 and sim.converged())
    assert done, f"{sim.missing()} deliveries missing at t={sim.now}"
    assert sum(len(ids) for ids in sim.published.values()) == 180
    for channel, members in zip(world.channels, world.members, strict=True):
        ids = set(sim.published[Topic(channel.id)])
        for key, node in sim.nodes.items():
            held = node.holdings.ids(Topic(channel.id))
            assert held == (ids if key in members else set())
    assert all(not node.drops and not node.forks for node in sim.nodes.values())
    assert offences(sim) == 0
    stats = sim.statistics()
    assert stats.payloads_lost > 0.05 * stats.payloads_sent
    latencies = sorted(sim.latencies())
    assert latencies[len(latencies) // 2] < 1.0  # simulated seconds: most arrive by push


def test_the_same_seed_replays_the_same_run() -> None:
    def run() -> tuple[object, ...]:
        config = GossipConfig(sync=SyncConfig(interval=15.0))
        world = build(30, seed=b"replay", loss=0.2, channels=[range(0, 30)], config=config)
        for k, group in enumerate(world.groups[:10]):
            world.post(0.3 * k, group, world.channels[0], 2)
        world.sim.run(120.0, stop=lambda: world.sim.now > 5 and world.sim.converged())
        arrivals = tuple(tuple(sorted(node.arrivals.values())) for node in world.sim.nodes.values())
        return world.sim.now, world.sim.statistics(), arrivals

    first = run()
    assert run() == first


def test_a_partition_heals_by_sync() -> None:
    config = GossipConfig(sync=SyncConfig(interval=600.0))
    world = build(40, seed=b"partition", loss=0.0, channels=[range(0, 40)], config=config)
    sim = world.sim
    keys = [PeerId(g.public_key) for g in world.groups]
    left, right = keys[::2], keys[1::2]
    cut = sim.partition([left, right])
    assert cut > 0
    for k, group in enumerate(world.groups[:10]):
        world.post(1.0 + k, group, world.channels[0], 2)
        world.post(1.5 + k, group, None, 1)
    sim.run(30.0)
    side_of = {k: 0 for k in left} | {k: 1 for k in right}
    for topic in (Topic(world.channels[0].id), PUBLIC_TOPIC):
        for side in (left, right):
            mine = side_of[side[0]]
            own = {b for b in sim.published[topic] if side_of[world.authors[b]] == mine}
            assert len(own) == (5 if topic == PUBLIC_TOPIC else 10)
            assert all(sim.nodes[k].holdings.ids(topic) == own for k in side)
    assert not sim.converged()
    healed_at = sim.now
    assert sim.heal() == cut
    assert sim.run(healed_at + 30.0, stop=sim.converged)
    # sessions reopened after the partition reconciled and found what the other side had
    found = [s for node in sim.nodes.values() for s in node.syncs if s.missing > 0]
    assert found
    assert offences(sim) == 0


def test_simulation_building_blocks() -> None:
    rng = SeededRng(b"blocks")
    assert SeededRng(b"blocks")(40) == rng(40)
    assert rng.fork(b"a")(8) != rng.fork(b"b")(8)
    assert 0 <= rng.random() < 1
    assert rng.below(1) == 0
    assert sorted(rng.sample([PeerId(b"x"), PeerId(b"y")], 5)) == [b"x", b"y"]
    with pytest.raises(ValueError, match="loss"):
        Simulation(seed=b"", loss=1.0)
    sim = Simulation(seed=b"s", jitter=0.0)
    alice, bob = Identity.from_seed(b"\x01" * 32, "a"), Identity.from_seed(b"\x02" * 32, "b")
    for group in (alice, bob):
        sim.add_node(group.public_key, {PUBLIC_TOPIC: ()})
    with pytest.raises(LocalProtocolError):
        sim.add_node(alice.public_key, {})
    assert sim.connect(alice.public_key, bob.public_key)
    assert not sim.connect(alice.public_key, bob.public_key)
    assert not sim.connect(alice.public_key, alice.public_key)
    assert sim.connected(bob.public_key, alice.public_key)
    assert sim.neighbours(alice.public_key) == [bob.public_key]
    direct = Bulletin.seal(alice, [bob.public_key], b"dm", seq=1, prev=None, now=T0, rng=rng)
    with pytest.raises(LocalProtocolError):
        sim.publish(alice.public_key, direct)
    post = Bulletin.seal(alice, None, b"hi", seq=1, prev=None, now=T0, rng=rng)
    sim.at(1.0, lambda: sim.publish(alice.public_key, post))
    assert sim.run(5.0)
    assert sim.nodes[PeerId(bob.public_key)].holdings.has(post.id)
    assert sim.subscribers(PUBLIC_TOPIC) == list(sim.nodes.values())
    fork = Bulletin.seal(alice, None, b"also one", seq=1, prev=None, now=T0, rng=rng)
    sim.at(6.0, lambda: sim.publish(alice.public_key, fork))
    assert sim.run(10.0)
    (reported,) = sim.nodes[PeerId(bob.public_key)].forks
    assert (reported.held, reported.received) == (post.id, fork.id)
    forged = post.raw[:-1] + bytes([post.raw[-1] ^ 1])
    sim.send_raw(alice.public_key, bob.public_key, wire.encode_bulletins([forged]))
    assert sim.run(15.0)
    (drop,) = sim.nodes[PeerId(bob.public_key)].drops
    assert drop.peer == alice.public_key
    assert not sim.connected(alice.public_key, bob.public_key)
    with pytest.raises(LocalProtocolError):
        sim.send_raw(alice.public_key, bob.public_key, b"")
    assert sim.connect(alice.public_key, bob.public_key)
    assert sim.disconnect(alice.public_key, bob.public_key)
    assert not sim.disconnect(alice.public_key, bob.public_key)
    assert sim.now == 15.0
