"""kademlia's protocol and server, hardened: every datagram checked, every call bounded.

Rules 2, 3 and 5 of the package docstring: :class:`_HardenedProtocol` replaces
rpcudp's receive path, calls and timers; :class:`_RecordCrawl` gathers records
from a quorum of nodes; :class:`_HardenedServer` is the stock ``Server`` with
them, our storage, publishing and lookups. All of it runs on the asyncio loop
that :mod:`.host` bridges into trio.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse, ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from meshnode import redact
from meshnode.core import codec, records
from meshnode.errors import AuthenticationError, InvalidRecord
from meshnode.net.dht.datagrams import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_PAYLOAD,
    MSG_ID_SIZE,
    REQUEST,
    RESPONSE,
    SEAL_OVERHEAD,
    Address,
    Reply,
    _ids,
    _is_id,
    _node_entry,
    _Sealer,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Coroutine

    from meshnode.core.records import Record
    from meshnode.net.dht.config import DHTConfig, _Counters
    from meshnode.net.dht.storage import _RecordStorage

LOG: Final = logging.getLogger("meshnode.net.dht")

AMPLIFICATION: Final = 3
"""Until an address has answered one of our requests, no reply to it is more than this
many times the size of its request (nobody can aim our answers at a third party)."""
MAX_VERIFIED: Final = 4096
"""Addresses remembered as having answered us (oldest forgotten first)."""


class _RateLimiter:
    """A token bucket per source IP, remembering at most ``max_sources`` sources.

    Keyed by IP rather than IP and port, so cycling ports buys nothing; the
    least recently seen source is forgotten first.
    """

    def __init__(self, rate: float, burst: float, max_sources: int) -> None:
        self._rate = rate
        self._burst = burst
        self._max = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return allowed


class _HardenedProtocol(KademliaProtocol):  # type: ignore[misc]  # kademlia ships no type hints
    """KademliaProtocol with rpcudp's receive path, calls and timers replaced (rules 2, 3)."""

    def __init__(
        self,
        source_node: Node,
        storage: _RecordStorage,
        *,
        loop: asyncio.AbstractEventLoop,
        config: DHTConfig,
        sealer: _Sealer | None,
        counters: _Counters,
    ) -> None:
        super().__init__(source_node, storage, config.ksize)
        self._loop = loop
        self._config = config
        self._sealer = sealer
        self._counters = counters
        self._limiter = _RateLimiter(config.rate_per_source, config.rate_burst, config.max_sources)
        self._pending: dict[bytes, tuple[asyncio.Future[Reply], asyncio.TimerHandle, Address]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed: asyncio.Future[None] = loop.create_future()
        """Done once asyncio has closed the socket."""
        self._max_datagram = MAX_DATAGRAM + (SEAL_OVERHEAD if sealer else 0)
        self._verified: OrderedDict[Address, None] = OrderedDict()
        """Addresses that answered one of our requests: their source is not forged."""
        self._verifying: dict[Address, asyncio.Future[bool]] = {}
        """Addresses pinged to verify them, and whether each answered, once known."""
        self._welcoming: set[Address] = set()
        """New neighbours waiting for their verification to be pushed records."""
        self._handlers = {
            "ping": self._on_ping,
            "store": self._on_store,
            "find_node": self._on_find_node,
            "find_value": self._on_find_value,
        }

    def __getattr__(self, name: str) -> Any:
        # rpcudp turns every unknown attribute into a remote call; a typo must not.
        raise AttributeError(name)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def background_tasks(self) -> int:
        return len(self._tasks)

    @property
    def rate_limited_sources(self) -> int:
        return len(self._limiter)

    # --- receiving -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Every datagram enters here: one guard, so nothing reaches the asyncio loop."""
        self._counters.received += 1
        try:
            self._receive(data, addr)
        except Exception:
            # The checks below are meant to make this unreachable; if a case was
            # missed, one datagram is lost instead of the whole node (rule 2).
            LOG.exception("DHT datagram from %s raised; dropped", redact.peer(addr[0]))
            self._counters.drop("handler_error")
        finally:
            self._counters.pulse()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Return once asyncio has closed the socket (so its port can be bound again)."""
        await asyncio.shield(self._closed)

    def error_received(self, exc: Exception) -> None:
        LOG.debug("DHT socket error: %s", exc)

    def _receive(self, data: bytes, addr: Address) -> None:
        if len(data) > self._max_datagram:
            return self._counters.drop("oversized")
        if not self._limiter.allow(addr[0], self._loop.time()):
            return self._counters.drop("rate_limited")
        if self._sealer is not None:
            try:
                data = self._sealer.open(data)
            except AuthenticationError:
                return self._counters.drop("unsealable")
        if len(data) < HEADER_SIZE + 1:
            return self._counters.drop("too_short")
        kind, msg_id = data[0], data[1:HEADER_SIZE]
        try:
            body = codec.unpack(
                data[HEADER_SIZE:],
                max_size=MAX_PAYLOAD,
                max_str=64,
                max_bin=MAX_PAYLOAD,
                max_array=max(64, self._config.ksize),
                max_map=1,
            )
        except codec.DecodeError:
            return self._counters.drop("malformed")
        if kind == REQUEST:
            return self._request(msg_id, body, addr, len(data))
        if kind == RESPONSE:
            return self._response(msg_id, body, addr)
        return self._counters.drop("unknown_kind")

    def _request(self, msg_id: bytes, body: object, addr: Address, size: int) -> None:
        if not (
            isinstance(body, list)
            and len(body) == 2
            and isinstance(body[0], str)
            and isinstance(body[1], list)
        ):
            return self._counters.drop("bad_request")
        handler = self._handlers.get(body[0])
        if handler is None:
            return self._counters.drop("unknown_rpc")
        answer = handler(addr, body[1])
        if answer is None:
            return self._counters.drop("bad_arguments")
        self._counters.answered += 1
        datagram = bytes([RESPONSE]) + msg_id + codec.pack(answer)
        budget = AMPLIFICATION * size
        if len(datagram) > budget and addr not in self._verified:
            datagram = self._within(msg_id, body[0], body[1], addr, budget)
            self._verify(addr)
        self._send(datagram, addr)

    def _within(
        self, msg_id: bytes, rpc: str, args: list[object], addr: Address, budget: int
    ) -> bytes:
        """The answer to an unverified address, cut to ``budget`` bytes: a value
        becomes the neighbours it would otherwise get, and as few of those as fit.
        (The address is verified meanwhile; its next request gets everything.)"""
        self._counters.drop("amplification_cut")
        nodes = self._on_find_node(addr, args) if rpc in ("find_node", "find_value") else None
        entries = nodes if isinstance(nodes, list) else []
        while entries:
            datagram = bytes([RESPONSE]) + msg_id + codec.pack(entries)
            if len(datagram) <= budget:
                return datagram
            entries = entries[:-1]
        return bytes([RESPONSE]) + msg_id + codec.pack(entries)

    def _verify(self, addr: Address) -> asyncio.Future[bool] | None:
        """Ping ``addr`` unless a ping is already on its way: an answer proves the address
        is its own. Whether it answered, once known (None: too many at once)."""
        verdict = self._verifying.get(addr)
        if verdict is None and len(self._verifying) < self._config.max_pending:
            verdict = self._loop.create_future()
            self._verifying[addr] = verdict
            if not self.spawn(self._ping_to_verify(addr, verdict)):
                del self._verifying[addr]
                return None
        return verdict

    async def _ping_to_verify(self, addr: Address, verdict: asyncio.Future[bool]) -> None:
        answered = False
        try:
            answered, _ = await self.ping(addr, self.source_node.id)
        finally:
            del self._verifying[addr]
            verdict.set_result(bool(answered))

    def _response(self, msg_id: bytes, body: object, addr: Address) -> None:
        entry = self._pending.get(msg_id)
        if entry is None or entry[2] != addr or entry[0].done():
            return self._counters.drop("unsolicited_response")
        self._verified[addr] = None
        self._verified.move_to_end(addr)
        while len(self._verified) > MAX_VERIFIED:
            self._verified.popitem(last=False)
        entry[0].set_result((True, body))

    def _welcome(self, node_id: bytes, addr: Address) -> Node:
        node = Node(node_id, addr[0], addr[1])
        if node_id != self.source_node.id:
            self.welcome_if_new(node)
        return node

    # Handlers: None means the arguments were wrong (counted, no answer sent).

    def _on_ping(self, addr: Address, args: list[object]) -> object:
        ids = _ids(args, 1)
        if ids is None or len(args) != 1:
            return None
        self._welcome(ids[0], addr)
        return self.source_node.id

    def _on_store(self, addr: Address, args: list[object]) -> object:
        ids = _ids(args, 2)
        if ids is None or len(args) != 3:
            return None
        self._welcome(ids[0], addr)
        return self.storage.offer(ids[1], args[2], addr[0], int(time.time()))

    def _on_find_node(self, addr: Address, args: list[object]) -> object:
        ids = _ids(args, 2)
        if ids is None or len(args) != 2:
            return None
        source = self._welcome(ids[0], addr)
        neighbours = self.router.find_neighbors(Node(ids[1]), exclude=source)
        return [[n.id, n.ip, n.port] for n in neighbours]

    def _on_find_value(self, addr: Address, args: list[object]) -> object:
        ids = _ids(args, 2)
        if ids is None or len(args) != 2:
            return None
        value = self.storage.get(ids[1])
        if value is None:
            return self._on_find_node(addr, args)
        self._welcome(ids[0], addr)
        return {"value": value}

    def welcome_if_new(self, node: Node) -> None:
        """Add a new neighbour, first pushing it the records it should hold.

        The stock method hashes each storage key again (``digest(key)``), but
        keys are already digests, so it pushed values to the wrong neighbours.
        """
        if not self.router.is_new_node(node):
            return
        address = (node.ip, node.port)
        if address not in self._verified:
            # No record is pushed to an address that has not answered us: a forged
            # source would turn one PING into a flood of STOREs at a third party.
            self.router.add_contact(node)
            self.spawn(self._welcome_once_verified(node))
            return
        self._push_records(node)
        self.router.add_contact(node)

    async def _welcome_once_verified(self, node: Node) -> None:
        """Push ``node`` its records once its address answers: the ping that verifies it
        may be ours or already on its way (a request whose answer was cut sent one)."""
        addr = (node.ip, node.port)
        if addr in self._welcoming:
            return
        self._welcoming.add(addr)
        try:
            verdict = self._verify(addr)
            if verdict is not None and await asyncio.shield(verdict):
                self._push_records(node)
        finally:
            self._welcoming.discard(addr)

    def _push_records(self, node: Node) -> None:
        """Push ``node`` the records it should hold: it is closer to the key than the
        farthest of our neighbours of that key, and we are closer than the nearest.

        Our neighbours are kademlia's ``find_neighbors``: a walk outward from the
        key's bucket, which always takes that whole bucket in. So a node of that
        bucket nearer the key than we are already answers no, without the walk
        (touching the bucket as the walk would). Most held keys end there; walking
        for each of them took a third of a lookup's CPU in ``bench/dht.py``.
        """
        router = self.router
        for key, value in self.storage:
            keynode = Node(key)
            ours = self.source_node.distance_to(keynode)
            bucket = router.buckets[router.get_bucket_for(keynode)]
            if any(
                n.distance_to(keynode) < ours
                for n in bucket.get_nodes()
                if n.id != key and not n.same_home_as(node)
            ):
                bucket.touch_last_updated()
                continue
            neighbours = router.find_neighbors(keynode, exclude=node)
            if neighbours:
                new_is_closer = node.distance_to(keynode) < neighbours[-1].distance_to(keynode)
                we_are_closest = self.source_node.distance_to(keynode) < neighbours[0].distance_to(
                    keynode
                )
            if not neighbours or (new_is_closer and we_are_closest):
                self.spawn(self.call_store(node, key, value))

    def spawn(self, coro: Coroutine[object, object, object]) -> bool:
        """Run ``coro`` in the background, bounded, never leaking an exception to the loop;
        whether it runs (False: too many tasks already, and ``coro`` is closed unstarted)."""
        if len(self._tasks) >= self._config.max_pending:
            coro.close()
            return False
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return True

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("DHT background task failed", exc_info=task.exception())

    # --- calling ---------------------------------------------------------------------------

    def _send(self, datagram: bytes, addr: Address) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._sealer is not None:
            datagram = self._sealer.seal(datagram)
        self.transport.sendto(datagram, addr)

    def _call(self, addr: Address, name: str, *args: object) -> asyncio.Future[Reply]:
        """Send one request; the future resolves to rpcudp's (answered, answer).

        It never raises: a request that cannot be sent (table full, too big)
        resolves at once to (False, None), as a timeout does.
        """
        future: asyncio.Future[Reply] = self._loop.create_future()
        payload = codec.pack([name, list(args)])
        if len(self._pending) >= self._config.max_pending or len(payload) > MAX_PAYLOAD:
            future.set_result((False, None))
            return future
        msg_id = os.urandom(MSG_ID_SIZE)
        timer = self._loop.call_later(self._config.rpc_timeout, self._expire, future)
        self._pending[msg_id] = (future, timer, addr)
        future.add_done_callback(functools.partial(self._forget, msg_id))
        self._send(bytes([REQUEST]) + msg_id + payload, addr)
        return future

    @staticmethod
    def _expire(future: asyncio.Future[Reply]) -> None:
        if not future.done():
            future.set_result((False, None))

    def _forget(self, msg_id: bytes, _future: asyncio.Future[Reply]) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is not None:
            entry[1].cancel()
            self._counters.pulse()

    def cancel_all(self) -> None:
        """Cancel every request and background task (the node is closing)."""
        for future, _timer, _addr in list(self._pending.values()):
            future.cancel()
        for task in list(self._tasks):
            task.cancel()

    # rpcudp's names for the four calls; kademlia's call_* and crawls use them.

    def ping(self, addr: Address, node_id: bytes) -> asyncio.Future[Reply]:
        return self._call(addr, "ping", node_id)

    def store(
        self, addr: Address, node_id: bytes, key: bytes, value: bytes
    ) -> asyncio.Future[Reply]:
        return self._call(addr, "store", node_id, key, value)

    def find_node(self, addr: Address, node_id: bytes, key: bytes) -> asyncio.Future[Reply]:
        return self._call(addr, "find_node", node_id, key)

    def find_value(self, addr: Address, node_id: bytes, key: bytes) -> asyncio.Future[Reply]:
        return self._call(addr, "find_value", node_id, key)

    # kademlia's call_*, with every answer checked before the crawls see it.

    def _bad(self) -> Reply:
        self._counters.drop("bad_response")
        return (False, None)

    def _nodes(self, answer: object) -> Reply:
        if not isinstance(answer, list):
            return self._bad()
        nodes = [entry for entry in map(_node_entry, answer) if entry is not None]
        return (True, nodes)

    async def call_ping(self, node_to_ask: Node) -> Reply:
        ok, answer = await self.ping((node_to_ask.ip, node_to_ask.port), self.source_node.id)
        result = (ok, answer) if not ok or _is_id(answer) else self._bad()
        return self.handle_call_response(result, node_to_ask)  # type: ignore[no-any-return]

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> Reply:
        addr = (node_to_ask.ip, node_to_ask.port)
        ok, answer = await self.store(addr, self.source_node.id, key, value)
        result = (ok, answer) if not ok or isinstance(answer, bool) else self._bad()
        return self.handle_call_response(result, node_to_ask)  # type: ignore[no-any-return]

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> Reply:
        addr = (node_to_ask.ip, node_to_ask.port)
        ok, answer = await self.find_node(addr, self.source_node.id, node_to_find.id)
        result = self._nodes(answer) if ok else (ok, answer)
        return self.handle_call_response(result, node_to_ask)  # type: ignore[no-any-return]

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> Reply:
        """FIND_VALUE; a value comes back as a checked :class:`Record`, or not at all."""
        addr = (node_to_ask.ip, node_to_ask.port)
        ok, answer = await self.find_value(addr, self.source_node.id, node_to_find.id)
        if not ok:
            result: Reply = (ok, answer)
        elif isinstance(answer, dict):
            try:
                value = answer.get("value")
                if not isinstance(value, bytes):
                    raise InvalidRecord("not bytes")
                record = self.storage.validate(node_to_find.id, value, int(time.time()))
                result = (True, {"value": record})
            except InvalidRecord:
                self._counters.refuse("invalid")
                result = (True, [])
        else:
            result = self._nodes(answer)
        return self.handle_call_response(result, node_to_ask)  # type: ignore[no-any-return]


class _RecordCrawl(ValueSpiderCrawl):  # type: ignore[misc]  # kademlia ships no type hints
    """A value lookup that gathers valid records from ``quorum`` nodes and combines them.

    The stock crawl stops at the first round with any value and returns the
    most common one, so one node could answer a stale or partial value.
    """

    def __init__(
        self, protocol: _HardenedProtocol, node: Node, peers: list[Node], config: DHTConfig
    ) -> None:
        super().__init__(protocol, node, peers, config.ksize, config.alpha)
        self._quorum = config.value_quorum
        self.found: list[Record] = []

    async def _nodes_found(self, responses: dict[bytes, Reply]) -> Record | None:
        unreachable = []
        for peer_id, reply in responses.items():
            response = RPCFindResponse(reply)
            if not response.happened():
                unreachable.append(peer_id)
            elif response.has_value():
                self.found.append(response.get_value())
            else:
                peer = self.nearest.get_node(peer_id)
                if peer is not None:
                    self.nearest_without_value.push(peer)
                self.nearest.push(response.get_node_list())
        self.nearest.remove(unreachable)
        if len(self.found) >= self._quorum or self.nearest.have_contacted_all():
            return await self._settle()
        return await self.find()  # type: ignore[no-any-return]

    async def _settle(self) -> Record | None:
        best = records.combine(self.found, int(time.time()))
        if best is not None:
            # As stock kademlia does: cache at the nearest node that lacked it.
            peer = self.nearest_without_value.popleft()
            if peer is not None:
                await self.protocol.call_store(peer, self.node.id, best.encode())
        return best


class _HardenedServer(Server):  # type: ignore[misc]  # kademlia ships no type hints
    """kademlia's Server with our protocol, storage, publish and lookup."""

    def __init__(
        self,
        node_id: bytes,
        storage: _RecordStorage,
        *,
        config: DHTConfig,
        sealer: _Sealer | None,
        counters: _Counters,
    ) -> None:
        super().__init__(ksize=config.ksize, alpha=config.alpha, node_id=node_id)
        self.storage = storage  # not ``storage=``: Server tests it for truth, and empty is falsy
        self._config = config
        self._sealer = sealer
        self._counters = counters

    def _create_protocol(self) -> _HardenedProtocol:
        return _HardenedProtocol(
            self.node,
            self.storage,
            loop=asyncio.get_running_loop(),
            config=self._config,
            sealer=self._sealer,
            counters=self._counters,
        )

    async def listen_on(self, sock: socket.socket) -> None:
        """Serve on a bound socket (stock ``listen`` also starts asyncio timers; we use trio's)."""
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            self._create_protocol, sock=sock
        )

    async def bootstrap_node(self, addr: Address) -> Node | None:
        ok, answer = await self.protocol.ping(addr, self.node.id)
        return Node(answer, addr[0], addr[1]) if ok and _is_id(answer) else None

    async def publish(self, record: Record, now: int) -> int:
        """Hold our own (checked) record, then store what we hold on the closest nodes."""
        self.storage.offer_record(record.key, record, None, now)
        held = self.storage.record(record.key, now) or record
        return await self.set_digest(record.key, held.encode())

    async def republish_held(self, now: int, interval: float) -> None:
        """Forget what expired, then store again what we have held for ``interval``."""
        self.storage.cull(now)
        for key, value in self.storage.iter_older_than(interval):
            await self.set_digest(key, value)

    async def shutdown(self) -> None:
        """Cancel our requests and tasks, close the socket and wait until it is closed."""
        self.protocol.cancel_all()
        self.stop()
        await self.protocol.wait_closed()

    async def set_digest(self, dkey: bytes, value: bytes) -> int:
        """Store a checked record on the nodes closest to ``dkey``; how many accepted it.

        Unlike the stock method it neither raises when every neighbour is dead
        (``max()`` of nothing) nor counts a refusal as a success.
        """
        target = Node(dkey)
        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            return 0
        spider = NodeSpiderCrawl(self.protocol, target, nearest, self.ksize, self.alpha)
        nodes = await spider.find()
        replies = await asyncio.gather(*(self.protocol.call_store(n, dkey, value) for n in nodes))
        return sum(1 for ok, answer in replies if ok and answer is True)

    async def lookup(self, dkey: bytes) -> Record | None:
        """The combined view of ``dkey`` from ``value_quorum`` nodes and our own storage."""
        now = int(time.time())
        local = self.storage.record(dkey, now)
        target = Node(dkey)
        nearest = self.protocol.router.find_neighbors(target)
        found: list[Record] = [local] if local is not None else []
        if nearest:
            crawl = _RecordCrawl(self.protocol, target, nearest, self._config)
            remote = await crawl.find()
            if remote is not None:
                found.append(remote)
        return records.combine(found, now)

    async def closest(self, dkey: bytes, count: int) -> list[Node]:
        """Up to ``count`` live nodes closest to ``dkey``, found by a FIND_NODE crawl."""
        target = Node(dkey)
        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            return []
        spider = NodeSpiderCrawl(self.protocol, target, nearest, self.ksize, self.alpha)
        found = await spider.find()
        return [n for n in found if n.id != self.node.id][:count]

    async def refresh(self, max_age: float) -> None:
        """Look up a random ID in every bucket not touched for ``max_age`` seconds."""
        cutoff = time.monotonic() - max_age
        crawls = []
        for bucket in self.protocol.router.buckets:
            if bucket.last_updated < cutoff:
                target = Node(random.randint(*bucket.range).to_bytes(20, "big"))
                nearest = self.protocol.router.find_neighbors(target, self.alpha)
                crawls.append(
                    NodeSpiderCrawl(self.protocol, target, nearest, self.ksize, self.alpha).find()
                )
        await asyncio.gather(*crawls)
