"""The node API of issue 3 over real sockets and real stores, in one process.

Network rules: every node binds its own 127.0.0.N (N from 40 up) with port 0;
nothing is sent anywhere else. Every test runs under ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.wire import PeerId
from meshnode.errors import PeerDisconnected, StorageFull
from meshnode.launch import open_node
from meshnode.net.dht import DHTConfig
from meshnode.net.interfaces import default_interface
from meshnode.net.node import Node, NodeConfig
from tests.conftest import make_identity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection
    from pathlib import Path

CONFIG = NodeConfig(dht=DHTConfig(rpc_timeout=0.5), overlay_interval=0.5, mail_interval=1.0)


@pytest.fixture(autouse=True)
def _quiet_kademlia() -> None:
    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.WARNING)


@asynccontextmanager
async def node(
    tmp_path: Path,
    n: int,
    *bootstrap: Node,
    network_key: bytes | None = None,
    config: NodeConfig = CONFIG,
) -> AsyncIterator[Node]:
    async with open_node(
        tmp_path / f"node{n}",
        name=f"Group {n}",
        listen=f"127.0.0.{40 + n}:0",
        bootstrap=[b.address for b in bootstrap],
        network_key=network_key,
        config=config,
    ) as opened:
        yield opened


@asynccontextmanager
async def relay_chain(tmp_path: Path, name: str) -> AsyncIterator[tuple[Node, Node, Node]]:
    """Nodes a, b and c in channel ``name``, c joined through b: c hears a through b."""
    config = NodeConfig(dht=CONFIG.dht, overlay_interval=3600.0)
    async with (
        node(tmp_path, 1, config=config) as a,
        node(tmp_path, 2, config=config) as b,
        node(tmp_path, 3, config=config) as c,
    ):
        await a.create_channel(name)
        await b.join(await a.invite(name))
        await c.join(await b.invite(name))
        assert [p.key for p in c.peers()] == [b.identity.public_key]
        yield a, b, c


async def settle(until: Callable[[], bool], *nodes: Node) -> None:
    """Wait on the nodes' status streams (sessions, channels, syncs, deliveries, held
    mail) until ``until`` holds; the test's ``fail_after`` bounds the wait."""
    async with trio.open_nursery() as watchers:

        async def watch(n: Node) -> None:
            async with aclosing(n.changes()) as changes:
                async for _ in changes:
                    if until():
                        watchers.cancel_scope.cancel()

        for n in nodes:
            watchers.start_soon(watch, n)


async def arrived(n: Node, ids: Collection[bytes]) -> None:
    """Wait until ``n`` has stored every bulletin of ``ids`` (its arrivals stream)."""
    missing = {i for i in ids if not n.archive.store.has(i)}
    if not missing:
        return
    async with aclosing(n.bulletins(since=None)) as arrivals:
        async for record in arrivals:
            missing.discard(record.id)
            missing = {i for i in missing if not n.archive.store.has(i)}
            if not missing:
                return


async def test_first_node_binds_one_port_for_tcp_and_udp(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with node(tmp_path, 1) as a:
            host, port = a.address.rsplit(":", 1)
            assert host == "127.0.0.41"
            assert int(port) == a.dht.port
            assert a.announce == a.address
            assert a.peers() == []
            await a.dht.publish_contact([a.announce])  # (alone: it holds its record itself)
            own = await a.lookup(a.identity.public_key)
            assert own is not None
            assert own.group_key == a.identity.public_key
            assert list(own.addresses) == [a.announce]


async def test_connect_peers_and_lookup_through_the_dht(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a, node(tmp_path, 2, a) as b, node(tmp_path, 3, b) as c:
            await c.dht.wait_until(lambda: c.dht.contact is not None)
            await a.dht.wait_until(lambda: a.dht.contact is not None)
            assert [p.key for p in b.peers()] == [a.identity.public_key, c.identity.public_key]
            assert c.identity.public_key not in [p.key for p in a.peers()]
            found = None
            with trio.fail_after(10):
                while found is None:
                    found = await a.lookup(c.identity.public_key)
            assert found.addresses == (c.announce,)
            info = await a.connect(found.addresses[0])
            assert info.key == c.identity.public_key
            assert a.identity.public_key in [p.key for p in c.peers()]
            again = await a.connect(c.address)  # the session already open is kept
            assert again.key == c.identity.public_key
            assert len(a.peers()) == 2


async def test_wrong_network_key_gets_no_session(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a, node(tmp_path, 2, network_key=bytes(32)) as stranger:
            with pytest.raises(PeerDisconnected):
                await stranger.connect(a.address)
            assert a.peers() == []
            async with node(tmp_path, 3, a) as member:
                assert [p.key for p in a.peers()] == [member.identity.public_key]


async def test_restart_rejoins_from_the_saved_routing_table(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with node(tmp_path, 1) as a:
            async with node(tmp_path, 2, a) as b:
                await b.dht.wait_until(lambda: b.dht.routing_snapshot() != [])
                b.dht.save_routing()
            async with AsyncExitStack() as stack:
                again = await stack.enter_async_context(node(tmp_path, 2))  # no bootstrap
                assert again.dht.routing_snapshot() != []
                found = None
                with trio.fail_after(10):
                    while found is None:
                        found = await again.lookup(a.identity.public_key)
                assert found.addresses == (a.announce,)


async def test_announce_must_be_dialable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"0\.0\.0\.0"):
        async with open_node(tmp_path / "x", listen="127.0.0.49:0", announce="0.0.0.0:7447"):
            pass


async def test_simultaneous_dials_keep_one_shared_session(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a, node(tmp_path, 2) as b:
            for _ in range(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.connect, b.address)
                    nursery.start_soon(b.connect, a.address)
                await settle(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, a, b)
                (ab,) = a.peers()
                (ba,) = b.peers()
                smaller = min(a.identity.public_key, b.identity.public_key)
                # Both kept the connection the smaller key dialled.
                assert ab.outbound == (a.identity.public_key == smaller)
                assert ba.outbound == (b.identity.public_key == smaller)
                await a._peers.close(b.identity.public_key)
                await settle(lambda: a.peers() == [] and b.peers() == [], a, b)


async def test_a_bulletin_is_stored_then_relayed(tmp_path: Path) -> None:
    """a posts, b stores and relays it, c (connected to b only) reads it."""
    with trio.fail_after(30):
        async with relay_chain(tmp_path, "relay") as (a, b, c):
            posted = await a.post("relay", "through b")
            async with aclosing(c.bulletins("relay")) as arrivals:
                record = await anext(arrivals)
            assert record.id == posted.id
            assert record.text == "through b"
            assert b.archive.has(posted.id)


async def test_an_expired_bulletin_is_neither_taken_nor_relayed(tmp_path: Path) -> None:
    """a (hostile here: it skips its own store) pushes b a channel bulletin that
    expired in 1970, hands b direct mail as old and deposits another with b: b
    refuses them, stores none and relays nothing to c, while a fresh post behind
    them arrives."""
    with trio.fail_after(30):
        async with relay_chain(tmp_path, "expiry") as (a, b, c):
            channel = a.archive.require_channel("expiry")
            seq = a.archive.store.frontiers(channel.id)[a.identity.public_key] + 1
            prev = a.archive.store.id_at(channel.id, a.identity.public_key, seq - 1)
            old = Bulletin.seal(
                a.identity, channel, b"1970", seq=seq, prev=prev, now=100, expires_at=200,
                rng=os.urandom,
            )  # fmt: skip
            a.gossip.publish(old, trio.current_time())
            member = b.identity.public_key
            mail, deposit = (
                Bulletin.seal(
                    a.identity, [member], text, seq=1, prev=None, now=100, expires_at=200,
                    rng=os.urandom,
                )
                for text in (b"mail from 1970", b"a deposit from 1970")
            )  # fmt: skip
            a.gossip.send(PeerId(member), wire.Mail(raws=(mail.raw,), more=False))
            async with aclosing(a.changes()) as changes:  # (b reads a's messages in order)
                assert await a._delivery.deposit_with(member, member, deposit.raw)
                async for _ in changes:  # until b's DEPOSIT_ACK
                    if deposit.id not in a._delivery.machine.awaiting(member):
                        break
            posted = await a.post("expiry", "fresh")  # the same seq: no fork, old was refused
            async with aclosing(c.bulletins("expiry")) as arrivals:
                async for record in arrivals:
                    if record.id == posted.id:
                        break
            assert not b.archive.has(old.id)
            assert not c.archive.has(old.id)
            assert not b.archive.has(mail.id)
            assert not b.archive.has(deposit.id)
            assert b.status().held_mail == 0


async def test_standing_for_mail_comes_from_contacts_and_shared_channels(
    tmp_path: Path,
) -> None:
    """Mail a holder keeps from a contact, or between members of a channel it is in,
    may use the half of the mail bounds that throw-away keys cannot reach."""
    stranger, other = bytes(range(32)), bytes(range(1, 33))
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a, node(tmp_path, 2, a) as b:
            me, member = a.identity.public_key, b.identity.public_key
            assert not a._delivery.standing(member, me)
            await a.create_channel("standing")
            await b.join(await a.invite("standing"))
            assert a._delivery.standing(member, me)
            assert a._delivery.standing(me, member)
            assert not a._delivery.standing(member, other)  # other is in no channel of ours
            assert not a._delivery.standing(stranger, me)
            a.add_contact("known", stranger)
            assert a._delivery.standing(stranger, other)


async def test_a_full_store_refuses_without_charging_and_recovers(tmp_path: Path) -> None:
    """b's store hits SQLite's page limit (a full disk, cheaply): b stays up, keeps its
    session with a, announces ``full``, refuses a's bulletin at no cost to a, refuses
    its own post, and takes new data again, announcing ``ok``, once there is room."""
    text = "x" * 30_000  # needs new pages whatever space the last page has free
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a, node(tmp_path, 2, a) as b:
            db = b.archive.store._db
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            async with aclosing(b.changes()) as changes:
                assert (await anext(changes)).storage == "ok"
                await a.post_public(text)
                async for status in changes:
                    if status.storage == "full":
                        break
                assert status.peers == 1
                assert b.gossip.score(PeerId(a.identity.public_key)) >= 0
                with pytest.raises(StorageFull):
                    await b.post_public(text)

                async def background_write() -> None:  # a key handover, say
                    b.archive.store.set_meta("job", text.encode())

                b._ctx.spawn(background_write)  # ends that job alone, not the node
                await trio.testing.wait_all_tasks_blocked()
                db.execute(f"PRAGMA max_page_count = {pages * 100}")
                posted = await b.post_public(text)
                async for status in changes:
                    if status.storage == "ok":
                        break
            assert b.archive.has(posted.id)


def test_the_default_route_interface_is_read_from_the_route_table() -> None:
    table = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "wlan0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert default_interface(table) == "eth0"
    assert default_interface(table.splitlines()[0]) is None
    assert default_interface("") is None


async def test_direct_bulletins_not_addressed_to_us_are_not_kept(tmp_path: Path) -> None:
    """A deposit made out to b but sealed for someone else, and mail handed to b that is
    not b's: b keeps neither (it acknowledges the mail, so the holder forgets it)."""
    carol = make_identity("carol, elsewhere")
    with trio.fail_after(30):
        async with node(tmp_path, 1) as a, node(tmp_path, 2, a) as b:
            member = b.identity.public_key
            deposit, mail, mine = (
                Bulletin.seal(make_identity(f"sender {n}"), [to], text, seq=1, prev=None,
                              now=int(time.time()), rng=os.urandom)
                for n, (to, text) in enumerate(
                    ((carol.public_key, b"not b's"), (carol.public_key, b"nor this"),
                     (member, b"b's own")))
            )  # fmt: skip
            a.gossip.send(PeerId(member), wire.Mail(raws=(mail.raw, mine.raw), more=False))
            async with aclosing(a.changes()) as changes:  # (b reads a's messages in order)
                assert await a._delivery.deposit_with(member, member, deposit.raw)
                async for _ in changes:  # until b's DEPOSIT_ACK
                    if deposit.id not in a._delivery.machine.awaiting(member):
                        break
            assert b.archive.has(mine.id)
            assert not b.archive.has(mail.id)
            assert not b.archive.has(deposit.id)


@pytest.mark.parametrize("discover", [True, False])
async def test_members_found_at_rendezvous_are_dialled_only_when_discovering(
    tmp_path: Path, discover: bool
) -> None:
    """c joins through b; a round of ``find_members`` finds a at the channel's
    rendezvous and dials it, unless c runs with ``discover_peers`` off (a fixed
    topology), which still publishes c's rendezvous."""
    quiet = NodeConfig(dht=CONFIG.dht, overlay_interval=3600.0)
    fixed = NodeConfig(dht=CONFIG.dht, overlay_interval=3600.0, discover_peers=discover)
    with trio.fail_after(30):
        async with (
            node(tmp_path, 1, config=quiet) as a,
            node(tmp_path, 2, config=quiet) as b,
            node(tmp_path, 3, config=fixed) as c,
        ):
            created = await a.create_channel("strike")
            # (a's rendezvous is published)
            await a._presence.find_members(a.archive.require_channel(created))
            await b.join(await a.invite("strike"))
            joined = await c.join(await b.invite("strike"))
            await c._presence.find_members(c.archive.require_channel(joined))
            keys = {p.key for p in c.peers()}
            assert (a.identity.public_key in keys) is discover
            assert b.identity.public_key in keys
