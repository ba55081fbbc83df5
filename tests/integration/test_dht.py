"""The hardened DHT over real UDP sockets on loopback.

Network-test rules for this module:
1. Real sockets on 127.0.0.x only (Linux routes all of 127/8 to loopback);
   each node binds its own 127.0.0.N, port 0, so tests never collide.
2. Every test runs under ``trio.fail_after``; every wait is on the DHT's own
   signal (``DHTNode.wait_until``: a condition checked after each datagram,
   answer, expiry or publish), never a fixed sleep standing in for a
   synchronisation. The only sleep waits past a timeout to prove that nothing
   fires late (the cancellation test).
3. Timeouts and intervals come from :data:`FAST`, so a lost datagram costs a
   fraction of a second instead of kademlia's fixed 5 s.
4. The stock kademlia node runs unmodified in its own process
   (``stock_kademlia_node.py`` beside this file).
5. Randomness is seeded (``random.Random``); identities come from fixed seeds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio_asyncio
from kademlia.node import Node

from meshnode.core import codec, crypto, records
from meshnode.core.records import ContactRecord, make_contact
from meshnode.core.session import OPEN_MESH_KEY
from meshnode.errors import InvalidRecord
from meshnode.net.dht import (
    DEFAULT_HOST,
    MAX_DATAGRAM,
    DHTConfig,
    DHTNode,
    RecordStore,
    estimate_size,
    open_dht,
    open_dht_thread,
)
from meshnode.net.dht.config import _Counters
from meshnode.net.dht.protocol import _HardenedProtocol
from meshnode.net.dht.storage import _RecordStorage
from meshnode.store import Store
from tests.conftest import make_identity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterator

    from meshnode.core.identity import Identity

FAST = DHTConfig(rpc_timeout=0.4, refresh_interval=600, republish_interval=600, save_interval=600)
STOCK_NODE = Path(__file__).with_name("stock_kademlia_node.py")
PRIVATE_KEY = crypto.blake2b_256(b"a private mesh")
RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())


class MemoryStore:
    """A RecordStore in a dict, as ``meshnode.store.Store`` keeps it in SQLite."""

    def __init__(self) -> None:
        self.records: dict[bytes, tuple[bytes, int]] = {}
        self.meta: dict[str, bytes] = {}

    def dht_records(self) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, (v, _) in self.records.items()]

    def dht_put(self, key: bytes, value: bytes, expires_at: int) -> None:
        self.records[key] = (value, expires_at)

    def dht_delete(self, key: bytes) -> None:
        self.records.pop(key, None)

    def get_meta(self, name: str) -> bytes | None:
        return self.meta.get(name)

    def set_meta(self, name: str, value: bytes) -> None:
        self.meta[name] = value


def _dropped_at_least(dht: DHTNode, count: int) -> bool:
    return sum(dht.statistics().dropped.values()) >= count


def _addr(dht: DHTNode, host: str) -> str:
    return f"{host}:{dht.port}"


def _raw(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def _request(name: str, *args: object, msg_id: bytes | None = None) -> bytes:
    return b"\x00" + (msg_id or os.urandom(20)) + codec.pack([name, list(args)])


@asynccontextmanager
async def _nodes(
    count: int,
    *,
    first_host: int = 20,
    config: DHTConfig = FAST,
    network_key: bytes = OPEN_MESH_KEY,
    seed: int = 1,
) -> AsyncIterator[list[DHTNode]]:
    """``count`` nodes on 127.0.0.{first_host}.., each bootstrapped from a random earlier one."""
    rng = random.Random(seed)
    async with AsyncExitStack() as stack:
        nodes: list[DHTNode] = []
        for i in range(count):
            host = f"127.0.0.{first_host + i}"
            boot = []
            if nodes:
                j = rng.randrange(len(nodes))
                boot = [_addr(nodes[j], f"127.0.0.{first_host + j}")]
            nodes.append(
                await stack.enter_async_context(
                    open_dht(
                        make_identity(f"group {first_host + i}"),
                        host,
                        bootstrap=boot,
                        network_key=network_key,
                        config=config,
                    )
                )
            )
        yield nodes


def _host(nodes: list[DHTNode], node: DHTNode, first_host: int = 20) -> str:
    return f"127.0.0.{first_host + nodes.index(node)}"


# --- datagrams that used to crash the node ---------------------------------------------------


async def test_the_22_byte_datagram_is_counted_and_ignored() -> None:
    """rpcudp decodes ``00 || 20 bytes || c1`` without a guard; under trio-asyncio it killed us."""
    with trio.fail_after(10):
        async with _nodes(2, first_host=30) as (a, b):
            with _raw("127.0.0.39") as attacker:
                attacker.sendto(b"\x00" + bytes(20) + b"\xc1", ("127.0.0.30", a.port))
                await a.wait_until(lambda: a.statistics().dropped.get("malformed", 0) == 1)
            assert await b.ping(_addr(a, "127.0.0.30")) == a.node_id


async def test_garbage_flood_while_answering_honest_lookups() -> None:
    """10,000 random, truncated, oversized and ill-shaped datagrams; the node keeps serving."""
    config = DHTConfig(
        rpc_timeout=0.4,
        rate_per_source=1e9,
        rate_burst=1e9,
        refresh_interval=600,
        republish_interval=600,
    )
    rng = random.Random(7)
    with trio.fail_after(120):
        async with _nodes(3, first_host=40, config=config) as (target, helper, client):
            await target.publish_contact([_addr(target, "127.0.0.40")])
            await helper.publish_contact([_addr(helper, "127.0.0.41")])
            valid = [
                _request("ping", helper.node_id),
                _request("find_node", helper.node_id, bytes(20)),
                _request("store", helper.node_id, bytes(20), b"x"),
            ]
            shapes = [
                codec.pack("ping"),
                codec.pack(["ping"]),
                codec.pack(["ping", [b"short"]]),
                codec.pack(["ping", [bytes(20), 1]]),
                codec.pack(["no_such_rpc", [bytes(20)]]),
                codec.pack(["store", [bytes(20), bytes(20)]]),
                codec.pack(["find_value", [bytes(20), "key"]]),
                codec.pack({"value": 1}),
                codec.pack([1.5, {b"k": None}]),
            ]
            sent = 0
            found: list[bool] = []

            async def honest() -> None:
                while sent < 10_000:
                    record = await client.lookup_contact(make_identity("group 40").public_key)
                    found.append(record is not None)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(honest)
                socks = [_raw(f"127.0.0.{50 + i}") for i in range(4)]
                try:
                    while sent < 10_000:
                        for _ in range(250):
                            kind = sent % 6
                            if kind == 0:
                                blob = rng.randbytes(rng.randrange(0, 400))
                            elif kind == 1:
                                v = rng.choice(valid)
                                blob = v[: rng.randrange(0, len(v))]
                            elif kind == 2:
                                blob = rng.randbytes(rng.randrange(MAX_DATAGRAM + 1, 20_000))
                            elif kind == 3:
                                blob = bytes([rng.randrange(3)]) + rng.randbytes(20)
                                blob += rng.choice(shapes)
                            elif kind == 4:
                                blob = b"\x01" + rng.randbytes(20) + codec.pack([bytes(20), "x", 1])
                            else:
                                blob = b"\x00" + bytes(20) + b"\xc1"
                            socks[sent % 4].sendto(blob, ("127.0.0.40", target.port))
                            sent += 1
                        behind = functools.partial(_dropped_at_least, target, sent - 50)
                        await target.wait_until(behind)
                    await target.wait_until(functools.partial(_dropped_at_least, target, 10_000))
                finally:
                    for s in socks:
                        s.close()
            stats = target.statistics()
            assert sum(stats.dropped.values()) == 10_000
            assert set(stats.dropped) <= {
                "too_short", "oversized", "malformed", "unknown_kind", "bad_request",
                "unknown_rpc", "bad_arguments", "unsolicited_response",
            }  # fmt: skip
            assert "handler_error" not in stats.dropped
            assert found
            assert all(found)
            assert stats.pending_requests <= config.max_pending
            assert stats.background_tasks <= config.max_pending
            assert stats.rate_limited_sources <= config.max_sources
            assert stats.stored_bytes <= config.storage_cap
            assert await client.lookup_contact(make_identity("group 41").public_key) is not None


async def test_rate_limit_per_source() -> None:
    config = DHTConfig(rpc_timeout=0.4, rate_per_source=10, rate_burst=20)
    with trio.fail_after(20):
        async with _nodes(2, first_host=60, config=config) as (a, b):
            with _raw("127.0.0.69") as flooder:
                for _ in range(300):
                    flooder.sendto(_request("ping", bytes(20)), ("127.0.0.60", a.port))
                await a.wait_until(lambda: a.statistics().dropped.get("rate_limited", 0) >= 250)
            stats = a.statistics()
            assert stats.requests_answered < 60
            assert await b.ping(_addr(a, "127.0.0.60")) == a.node_id


async def test_receive_buffer_survives_a_burst_of_joins() -> None:
    """2,000 pings queued while the node cannot read: all answered (the default buffer drops)."""
    with trio.fail_after(30):
        async with _nodes(1, first_host=70) as (a,):
            assert a.statistics().receive_buffer >= min(FAST.receive_buffer, RMEM_MAX)
            socks = [_raw(f"127.0.0.{71 + i}") for i in range(8)]
            try:
                for i in range(2000):  # no checkpoint: the node reads nothing meanwhile
                    socks[i % 8].sendto(_request("ping", os.urandom(20)), ("127.0.0.70", a.port))
                await a.wait_until(lambda: a.statistics().requests_answered >= 2000)
            finally:
                for s in socks:
                    s.close()


# --- defects of kademlia and rpcudp ----------------------------------------------------------


async def test_cancelled_lookups_leave_nothing_behind() -> None:
    """``move_on_after`` around ping and get: no InvalidStateError later, no pending entry."""
    with trio.fail_after(20):
        async with _nodes(3, first_host=80) as (a, b, c):
            await c.publish_contact([_addr(c, "127.0.0.82")])
            with _raw("127.0.0.89") as dead:  # bound, never answers
                dead_addr = f"127.0.0.89:{dead.getsockname()[1]}"
                for _ in range(5):
                    with trio.move_on_after(0.02):
                        await a.ping(dead_addr)
                # b's routing table now points at a node that does not answer.
                await b.bootstrap([dead_addr])
            await a.wait_until(lambda: a.statistics().pending_requests == 0)
            for _ in range(3):
                with trio.move_on_after(0.001):
                    await b.lookup_contact(make_identity("nobody").public_key)
            await b.wait_until(lambda: b.statistics().pending_requests == 0)
            await trio.sleep(FAST.rpc_timeout * 2)  # past every timer rpcudp would have set
            assert a.statistics().pending_requests == 0
            assert await a.ping(_addr(b, "127.0.0.81")) == b.node_id
            assert await b.lookup_contact(make_identity("group 82").public_key) is not None


async def test_publish_with_every_neighbour_dead() -> None:
    """Stock ``set`` raised ValueError (``max()`` of nothing); we hold the record and return 0."""
    with trio.fail_after(20):
        async with open_dht(make_identity("lonely"), "127.0.0.90", config=FAST) as a:
            async with open_dht(
                make_identity("leaver"),
                "127.0.0.91",
                config=FAST,
                bootstrap=[_addr(a, "127.0.0.90")],
            ):
                await a.wait_until(lambda: len(a.routing_snapshot()) == 1)
            assert await a.publish_contact(["127.0.0.90:7447"]) == 0
            assert a.routing_snapshot() == []
            found = await a.lookup_contact(make_identity("lonely").public_key)
            assert found is not None
            assert found.addresses == ("127.0.0.90:7447",)
            assert a.statistics().pending_requests == 0


async def test_oversized_and_invalid_stores_are_refused() -> None:
    with trio.fail_after(20):
        async with _nodes(2, first_host=100) as (a, b):
            key = records.contact_key(make_identity("x").public_key)
            with _raw("127.0.0.109") as s:
                s.sendto(_request("store", bytes(20), key, bytes(9000)), ("127.0.0.100", a.port))
                s.sendto(_request("store", bytes(20), key, bytes(7500)), ("127.0.0.100", a.port))
                await a.wait_until(lambda: a.statistics().dropped.get("oversized", 0) == 1)
                await a.wait_until(lambda: a.statistics().refused.get("invalid", 0) == 1)
            assert a.statistics().stored_records == 0
            with pytest.raises(InvalidRecord):
                await b.publish_contact([f"127.0.0.1:{p}" for p in range(1, 6)])
            assert await b.ping(_addr(a, "127.0.0.100")) == a.node_id


def _distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


async def test_welcome_if_new_pushes_records_to_the_right_neighbour() -> None:
    """A new node closer to a held key gets it; the stock code computed closeness for sha1(key)."""
    owner = make_identity("welcome owner")
    key = records.contact_key(owner.public_key)
    stock_key = hashlib.sha1(key).digest()
    far = next(
        i
        for i in (make_identity(f"far {n}") for n in range(200))
        if _distance(records.node_id(i.public_key), key)
        > _distance(records.node_id(owner.public_key), key)
    )
    far_id = records.node_id(far.public_key)

    def pushes(newcomer: bytes, k: bytes) -> bool:
        return _distance(newcomer, k) < _distance(far_id, k) and _distance(
            records.node_id(owner.public_key), k
        ) < _distance(far_id, k)

    newcomer = next(
        i
        for i in (make_identity(f"newcomer {n}") for n in range(500))
        if pushes(records.node_id(i.public_key), key)
        and not pushes(records.node_id(i.public_key), stock_key)
    )
    with trio.fail_after(20):
        async with (
            open_dht(far, "127.0.0.110", config=FAST) as c,
            open_dht(owner, "127.0.0.111", config=FAST, bootstrap=[_addr(c, "127.0.0.110")]) as a,
        ):
            assert await a.publish_contact(["127.0.0.111:7447"]) == 1
            async with open_dht(newcomer, "127.0.0.112", config=FAST) as b:
                assert b.statistics().stored_records == 0
                # b contacts a, so a welcomes it; b never asks anyone for the key.
                assert await b.ping(_addr(a, "127.0.0.111")) == a.node_id
                await b.wait_until(lambda: b.statistics().stored_records == 1)


def test_the_push_shortcut_decides_as_the_whole_walk() -> None:
    """``_push_records`` skips kademlia's walk when a node of the key's bucket is nearer
    than we are; on random tables it pushes exactly what the walk for every key pushed."""
    rng = random.Random(13)
    loop = asyncio.new_event_loop()
    decisions: set[bool] = set()
    try:
        for _ in range(20):
            me = Node(rng.randbytes(20), "127.0.0.1", 7000)
            protocol = _HardenedProtocol(
                me,
                _RecordStorage(FAST, None, _Counters()),
                loop=loop,
                config=FAST,
                sealer=None,
                counters=_Counters(),
            )
            for n in range(rng.randrange(5, 150)):
                protocol.router.add_contact(Node(rng.randbytes(20), "127.0.0.2", 1 + n))
            # Keys near our own ID, as the keys a node holds are.
            held = [(_near(me.id, rng), b"value") for _ in range(40)]
            protocol.storage = held
            newcomer = Node(_near(me.id, rng), "127.0.0.3", 9)
            pushed: list[bytes] = []

            def record_push(coro: Coroutine[object, object, object], out: list[bytes]) -> None:
                out.append(coro.cr_frame.f_locals["key"])  # type: ignore[attr-defined]
                coro.close()

            protocol.spawn = functools.partial(record_push, out=pushed)  # type: ignore[method-assign]
            protocol._push_records(newcomer)
            assert pushed == [key for key, _ in held if _walk_pushes(protocol, newcomer, key)]
            decisions |= {key in pushed for key, _ in held}
    finally:
        loop.close()
    assert decisions == {True, False}


def _near(node_id: bytes, rng: random.Random) -> bytes:
    """An ID sharing ``node_id``'s first 4 to 12 bits."""
    bits = rng.randrange(4, 13)
    mask = (1 << 160) - (1 << (160 - bits))
    value = (int.from_bytes(node_id, "big") & mask) | (rng.getrandbits(160) & ~mask)
    return value.to_bytes(20, "big")


def _walk_pushes(protocol: _HardenedProtocol, node: Node, key: bytes) -> bool:
    """The decision with kademlia's walk for the key, as the stock welcome makes it."""
    keynode = Node(key)
    neighbours = protocol.router.find_neighbors(keynode, exclude=node)
    if not neighbours:
        return True
    return bool(
        node.distance_to(keynode) < neighbours[-1].distance_to(keynode)
        and protocol.source_node.distance_to(keynode) < neighbours[0].distance_to(keynode)
    )


def test_validation_is_remembered_per_second_and_refusals_are_not() -> None:
    """The same record under the same key in the same second is checked once; a new
    second checks it again, and an invalid value is checked every time."""
    owner = make_identity("validated")
    now = int(time.time())
    record = make_contact(owner, ["127.0.0.1:7447"], seq=1, now=now)
    key = records.contact_key(owner.public_key)
    validate = _RecordStorage(FAST, None, _Counters()).validate
    checks: list[bytes] = []
    real = records.validate

    def counting(k: bytes, value: bytes, when: int) -> records.Record:
        checks.append(value)
        return real(k, value, when)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "validate", counting)
        for _ in range(3):
            assert validate(key, record.encode(), now) == record
        assert len(checks) == 1
        assert validate(key, record.encode(), now + 1) == record
        assert len(checks) == 2
        forged = record.encode()[:-1] + bytes([record.encode()[-1] ^ 1])
        for _ in range(2):
            with pytest.raises(InvalidRecord):
                validate(key, forged, now)
        assert len(checks) == 4


# --- the mesh --------------------------------------------------------------------------------


async def test_thirty_nodes_find_every_contact_record() -> None:
    config = DHTConfig(ksize=8, rpc_timeout=0.5, refresh_interval=600, republish_interval=600)
    with trio.fail_after(240):
        async with _nodes(30, first_host=120, config=config, seed=30) as nodes:
            for n in nodes:
                await n.publish_contact([_addr(n, _host(nodes, n, 120))])
            groups = {n.node_id: make_identity(f"group {120 + i}") for i, n in enumerate(nodes)}
            failures: list[tuple[int, int]] = []
            unrouted = 0

            async def find_all(i: int, me: DHTNode) -> None:
                nonlocal unrouted
                routed = {entry[0] for entry in me.routing_snapshot()}
                for j, other in enumerate(nodes):
                    if other is me:
                        continue
                    unrouted += other.node_id not in routed
                    record = await me.lookup_contact(groups[other.node_id].public_key)
                    if record is None or record.addresses != (
                        _addr(other, _host(nodes, other, 120)),
                    ):
                        failures.append((i, j))

            async with trio.open_nursery() as nursery:
                for i, me in enumerate(nodes):
                    nursery.start_soon(find_all, i, me)
            assert failures == []
            assert unrouted > 0  # some lookups found groups absent from the finder's table
            for n in nodes:
                assert n.statistics().pending_requests == 0


async def test_rendezvous_lookup_takes_the_union() -> None:
    tag = crypto.blake2b_256(b"channel tag of the day")
    with trio.fail_after(60):
        async with _nodes(8, first_host=160, seed=8) as nodes:
            members = nodes[:5]
            for m in members:
                await m.publish_contact([_addr(m, _host(nodes, m, 160))])
                await m.publish_rendezvous(tag)
            contacts = [m.contact for m in members]
            for reader in nodes:
                found = await reader.lookup_rendezvous(tag)
                assert sorted(c.group_key for c in found) == sorted(
                    c.group_key for c in contacts if c is not None
                )
            assert await nodes[7].lookup_rendezvous(crypto.blake2b_256(b"other")) == []
            # The nodes closest to a group's node ID by XOR distance, but for its own.
            group = make_identity("group 163").public_key
            target = records.node_id(group)
            candidates = [n for n in nodes[1:] if n.node_id != target]
            others = sorted(candidates, key=lambda n: _distance(n.node_id, target))[:3]
            expected = {_addr(n, _host(nodes, n, 160)) for n in others}
            assert {a for _, a in await nodes[0].closest(group, 3)} == expected


# --- interop with the stock package ----------------------------------------------------------


class StockNode:
    """The stock kademlia node in its own process, one JSON line per command."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._buffer = b""
        self.port = 0
        self.node_id = b""

    async def _line(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self._process.stdout.receive_some(65536)
            assert chunk, "the stock node exited"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def __call__(self, op: str, **args: object) -> dict[str, Any]:
        assert self._process.stdin is not None
        await self._process.stdin.send_all(json.dumps({"op": op, **args}).encode() + b"\n")
        return await self._line()


@asynccontextmanager
async def _stock(host: str, rpc_timeout: float = 0.5) -> AsyncIterator[StockNode]:
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(STOCK_NODE), host, str(rpc_timeout)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                check=False,
            )
        )
        node = StockNode(process)
        hello = await node._line()
        node.port = int(hello["port"])
        node.node_id = bytes.fromhex(str(hello["id"]))
        try:
            yield node
        finally:
            assert process.stdin is not None
            await process.stdin.send_all(b'{"op": "quit"}\n')
            with trio.move_on_after(5):
                await process.wait()
            nursery.cancel_scope.cancel()


async def test_stock_kademlia_interoperates_on_the_open_mesh() -> None:
    with trio.fail_after(60):
        async with _nodes(2, first_host=170) as (m1, m2), _stock("127.0.0.175") as stock:
            await m2.publish_contact([_addr(m2, "127.0.0.171")])
            m1_addr = ["127.0.0.170", m1.port]
            reply = await stock("ping", addr=m1_addr)
            assert reply == {"ok": True, "id": m1.node_id.hex()}
            joined = await stock("bootstrap", addrs=[m1_addr])
            assert {bytes.fromhex(n[0]) for n in joined["found"]} >= {m1.node_id, m2.node_id}
            # FIND_NODE never returns the target itself: ask for a neighbour of m2.
            target = (int.from_bytes(m2.node_id, "big") ^ 1).to_bytes(20, "big")
            nodes = await stock("find_node", addr=m1_addr, target=target.hex())
            assert nodes["ok"]
            assert m2.node_id.hex() in {n[0] for n in nodes["nodes"]}
            held = m1.statistics().stored_records + m2.statistics().stored_records
            refused = m1.statistics().refused.get("invalid", 0)
            assert await stock("set", key="foo", value="bar") == {"stored": True}  # stock's any()
            await m1.wait_until(lambda: m1.statistics().refused.get("invalid", 0) > refused)
            assert m1.statistics().stored_records + m2.statistics().stored_records == held
            # A meshnode node that knows only the stock node routes through it.
            async with open_dht(
                make_identity("via stock"),
                "127.0.0.176",
                config=FAST,
                bootstrap=[f"127.0.0.175:{stock.port}"],
            ) as m3:
                routed = {entry[0] for entry in m3.routing_snapshot()}
                assert stock.node_id in routed
                found = await m3.lookup_contact(make_identity("group 171").public_key)
                assert found is not None
                assert found.addresses == (_addr(m2, "127.0.0.171"),)


async def test_a_stock_node_cannot_query_a_private_mesh() -> None:
    with trio.fail_after(60):
        async with (
            _nodes(3, first_host=180, network_key=PRIVATE_KEY) as nodes,
            _stock("127.0.0.185") as stock,
        ):
            a, _, c = nodes
            await c.publish_contact([_addr(c, "127.0.0.182")])
            found = await a.lookup_contact(make_identity("group 182").public_key)
            assert found is not None  # the private mesh works for its members
            a_addr = ["127.0.0.180", a.port]
            assert await stock("ping", addr=a_addr) == {"ok": False, "id": None}
            assert await stock("find_node", addr=a_addr, target=c.node_id.hex()) == {
                "ok": False,
                "nodes": None,
            }
            assert (await stock("bootstrap", addrs=[a_addr]))["found"] == []
            assert a.statistics().dropped.get("unsealable", 0) >= 3
            async with open_dht(make_identity("open outsider"), "127.0.0.186", config=FAST) as o:
                assert await o.ping(_addr(a, "127.0.0.180")) is None
                assert await o.bootstrap([_addr(a, "127.0.0.180")]) == 0


# --- restarts --------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def record_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    """The test's dict store, and the real one (``meshnode.store.Store``)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    store = Store.open(tmp_path / "store.db", seal_key=bytes(32))
    try:
        yield store
    finally:
        store.close()


async def test_restart_rejoins_from_the_saved_routing_table(record_store: RecordStore) -> None:
    store = record_store
    me = make_identity("restarter")
    with trio.fail_after(60):
        async with _nodes(4, first_host=190) as others:
            async with open_dht(
                me,
                "127.0.0.199",
                store=store,
                config=FAST,
                bootstrap=[_addr(others[0], "127.0.0.190")],
            ) as first:
                assert await first.publish_contact(["127.0.0.199:7447"]) > 0
                for o in others:
                    await o.publish_contact([_addr(o, _host(others, o, 190))])
                port = first.port
            saved = codec.unpack(store.get_meta("dht/routing") or b"")
            assert isinstance(saved, list)
            assert {bytes(e[0]) for e in saved} <= {o.node_id for o in others}
            assert saved
            assert store.dht_records()  # records it held persist
            async with open_dht(me, "127.0.0.199", port, store=store, config=FAST) as again:
                assert again.statistics().stored_records >= 1
                assert len(again.routing_snapshot()) >= 1
                for i in range(len(others)):
                    record = await again.lookup_contact(
                        make_identity(f"group {190 + i}").public_key
                    )
                    assert isinstance(record, ContactRecord)
                # Its sequence numbers keep growing across the restart.
                await again.publish_contact(["127.0.0.199:7448"])
                assert again.contact is not None
                mine = await others[3].lookup_contact(me.public_key)
                assert mine is not None
                assert mine.addresses == ("127.0.0.199:7448",)


@pytest.mark.parametrize("host", ["thread", "trio-asyncio"])
async def test_each_host_serves_the_same_dht(host: str) -> None:
    """Both hosts of the asyncio island (``meshnode.net.dht.hosts``): one asyncio thread
    shared by the nodes of the block, or a trio-asyncio loop; nodes opened outside
    either get their own thread. Lookups, waiters and closing behave the same."""
    opened = open_dht_thread() if host == "thread" else trio_asyncio.open_loop()
    with trio.fail_after(30):
        async with opened, _nodes(5, first_host=230) as nodes:
            assert {n.asyncio_host for n in nodes} == {host}
            for n in nodes:
                await n.publish_contact([_addr(n, _host(nodes, n, 230))])
            for i, other in enumerate(nodes[1:], start=1):
                record = await nodes[0].lookup_contact(make_identity(f"group {230 + i}").public_key)
                assert record is not None
                assert record.addresses == (_addr(other, _host(nodes, other, 230)),)
            await nodes[0].wait_until(lambda: nodes[0].statistics().pending_requests == 0)
        async with _nodes(1, first_host=236) as (alone,):
            assert alone.asyncio_host == DEFAULT_HOST


def test_network_key_is_the_published_open_mesh_key() -> None:
    assert crypto.blake2b_256(b"meshnode/v1/open-mesh") == OPEN_MESH_KEY


async def test_bad_arguments_to_open_dht() -> None:
    ident: Identity = make_identity("x")
    with pytest.raises(ValueError, match="32 bytes"):
        async with open_dht(ident, "127.0.0.200", network_key=b"short"):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="IPv4"):
        async with open_dht(ident, "localhost"):
            pass  # pragma: no cover
    async with open_dht(ident, "127.0.0.200", config=FAST) as d:
        with pytest.raises(ValueError, match="IPv4"):
            await d.bootstrap(["example.org:7447"])


def test_size_estimate_from_the_routing_table() -> None:
    rng = random.Random(7)
    own = rng.randbytes(20)
    everyone = [rng.randbytes(20) for _ in range(5000)]
    assert estimate_size(own, everyone[:5], 20) == 6  # fewer than k: we know them all
    # A node knows its k nearest neighbours and a few farther ones per bucket.
    nearest = sorted(everyone, key=lambda i: int.from_bytes(i, "big") ^ int.from_bytes(own, "big"))
    known = nearest[:20] + rng.sample(everyone, 60)
    assert 2500 <= estimate_size(own, known, 20) <= 10000


async def test_stores_are_bounded_per_source_and_in_total() -> None:
    """One source cannot make a node hold more than its quota, nor all sources together
    more than the cap: each refusal is counted, and what fits is kept."""
    now = int(time.time())
    values = [
        (records.contact_key(g.public_key), make_contact(g, ["127.0.0.1:7447"], seq=1, now=now))
        for g in (make_identity(f"quota {n}") for n in range(8))
    ]
    size = len(values[0][1].encode())
    config = dataclasses.replace(FAST, quota_per_source=2 * size, storage_cap=3 * size)
    with trio.fail_after(20):
        async with _nodes(1, first_host=120, config=config) as (a,):
            for source, batch in (("127.0.0.128", values[:4]), ("127.0.0.129", values[4:])):
                with _raw(source) as s:
                    for key, record in batch:
                        s.sendto(_request("store", bytes(20), key, record.encode()),
                                 ("127.0.0.120", a.port))
            # The first source: 2 kept, 2 over its quota; the second: 1 kept, then the
            # cap is reached.
            await a.wait_until(lambda: a.statistics().refused.get("full", 0) == 3)
            assert a.statistics().refused.get("quota", 0) == 2
            assert a.statistics().stored_records == 3


async def test_a_forged_value_in_a_find_value_reply_is_refused() -> None:
    """A neighbour answering FIND_VALUE with a record whose signature is broken: the
    lookup finds nothing rather than the forgery."""
    owner = make_identity("forged owner")
    genuine = make_contact(owner, ["127.0.0.1:7447"], seq=1, now=int(time.time())).encode()
    forged = genuine[:-1] + bytes([genuine[-1] ^ 1])
    with trio.fail_after(20):
        async with _nodes(2, first_host=124) as (a, b):
            protocol = b._server.protocol  # the hostile neighbour, scripted
            protocol._handlers["find_value"] = lambda addr, args: {"value": forged}
            assert await a.lookup_contact(owner.public_key) is None
            assert a.statistics().refused.get("invalid", 0) >= 1
