"""The DHT: the stock ``kademlia`` Server, hardened, hosted under trio by trio-asyncio.

This is the only module that imports asyncio, kademlia, rpcudp or
trio-asyncio (``tests/unit/test_layers.py``). Normative text: ``docs/spec/dht.md``.

Theory of operation:
1. Routing, lookups and replication are kademlia 2.2.3's (``Server``,
   ``KademliaProtocol``, the spider crawls), so on the open mesh we speak the
   stock rpcudp wire format and stock nodes interoperate with us.
2. Everything that touches the network is replaced, because rpcudp trusts
   every datagram: :class:`_HardenedProtocol` decodes each datagram inside one
   guard, bounded (:mod:`meshnode.core.codec`), after a per-source rate limit
   and, on a private mesh, after opening its seal. Whatever is wrong is counted
   by reason (:meth:`DHTNode.statistics`) and ignored; no exception can reach
   the asyncio loop, where trio-asyncio would re-raise it out of ``open_loop``
   and take the node down.
3. Requests are answered synchronously in the datagram callback, so a flood
   creates no tasks. Our own requests live in a bounded table; each entry is
   removed by a done-callback whether it is answered, timed out or cancelled
   from trio, and its timer is cancelled with it (rpcudp's timer would call
   ``set_result`` on a cancelled future: ``InvalidStateError``).
4. Every value is a signed record (:mod:`meshnode.core.records`) and is checked
   on every path: STORE requests, FIND_VALUE replies and our own publishes.
   Storage charges each record to the source that wrote it (quota per source,
   a total cap) and persists through a :class:`RecordStore`.
5. Lookups do not take kademlia's most common value: they continue until
   ``value_quorum`` nodes answered with a valid record and combine the answers
   (highest ``seq``; the union of rendezvous entries).
6. Timers (refresh, republish, saving the routing table) are trio tasks with
   intervals from :class:`DHTConfig`; the routing table is saved as plain data,
   never with kademlia's own ``save_state``, whose format can run code when loaded.
7. Nothing here runs per bulletin: the node layer uses the DHT to find peers,
   then talks to them over sessions; trio-asyncio costs 2 to 3 times plain asyncio.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import random
import socket
import time
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeAlias, TypeGuard

import trio
import trio_asyncio
from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse, ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.storage import IStorage

from meshnode.core import codec, crypto, records
from meshnode.core.identity import Identity
from meshnode.core.records import ContactRecord, Record, RendezvousRecord
from meshnode.core.session import OPEN_MESH_KEY
from meshnode.errors import AuthenticationError, InvalidRecord, StaleRecord, StoreError
from meshnode.net import redact

LOG: Final = logging.getLogger(__name__)

SEAL_LABEL: Final = b"meshnode/v1/dht-seal"
SEAL_OVERHEAD: Final = crypto.XNONCE_SIZE + crypto.TAG_SIZE
REQUEST: Final = 0x00
RESPONSE: Final = 0x01
MSG_ID_SIZE: Final = 20
HEADER_SIZE: Final = 1 + MSG_ID_SIZE
MAX_PAYLOAD: Final = 8192
"""rpcudp refuses to send a request whose msgpack is longer; we refuse to receive one."""
MAX_DATAGRAM: Final = HEADER_SIZE + MAX_PAYLOAD
ROUTING_META: Final = "dht/routing"
SEQ_META: Final = "dht/contact-seq"
MAX_SAVED_ROUTES: Final = 256
AMPLIFICATION: Final = 3
"""Until an address has answered one of our requests, no reply to it is more than this
many times the size of its request (nobody can aim our answers at a third party)."""
MAX_VERIFIED: Final = 4096
"""Addresses remembered as having answered us (oldest forgotten first)."""

Address: TypeAlias = tuple[str, int]
Reply: TypeAlias = tuple[bool, object]
"""rpcudp's result of a call: (answered, the decoded answer or None)."""


class RecordStore(Protocol):
    """Where the DHT keeps its records and routing table across restarts.

    ``meshnode.store.Store`` implements it; values are opaque to the store
    (they are checked again when loaded).
    """

    def dht_records(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair put and not deleted."""
        ...

    def dht_put(self, key: bytes, value: bytes, expires_at: int) -> None:
        """Keep ``value`` under ``key`` (replacing any), until Unix time ``expires_at``."""
        ...

    def dht_delete(self, key: bytes) -> None:
        """Forget ``key`` (no error if absent)."""
        ...

    def get_meta(self, name: str) -> bytes | None:
        """A small named value, or None."""
        ...

    def set_meta(self, name: str, value: bytes) -> None:
        """Keep a small named value."""
        ...


@dataclass(frozen=True, kw_only=True)
class DHTConfig:
    """Every limit, timeout and interval of the DHT (seconds, bytes, counts).

    The defaults suit the internet; tests shrink the timeouts and intervals so
    that a lost datagram costs milliseconds rather than kademlia's fixed 5 s.
    """

    ksize: int = 20
    alpha: int = 3
    rpc_timeout: float = 2.0
    refresh_interval: float = 3600.0
    republish_interval: float = 3600.0
    save_interval: float = 600.0
    value_quorum: int = 3
    record_lifetime: int = records.DEFAULT_LIFETIME
    rate_per_source: float = 200.0
    rate_burst: float = 400.0
    max_sources: int = 4096
    max_pending: int = 1024
    quota_per_source: int = 64 * 1024
    storage_cap: int = 16 * 1024 * 1024
    receive_buffer: int = 4 * 1024 * 1024
    """SO_RCVBUF: the default (about 200 KiB) overflows when a few hundred nodes join at once."""

    def __post_init__(self) -> None:
        if not (1 <= self.ksize <= 64 and 1 <= self.alpha <= self.ksize):
            raise ValueError("ksize is 1 to 64 and alpha 1 to ksize")
        if min(self.rpc_timeout, self.refresh_interval, self.republish_interval) <= 0:
            raise ValueError("timeouts and intervals are positive")
        if not 0 < self.record_lifetime <= records.MAX_LIFETIME:
            raise ValueError("records live at most 7 days")


@dataclass(frozen=True, kw_only=True)
class DHTStatistics:
    """A snapshot of a DHT node's counters and table sizes."""

    node_id: bytes
    port: int
    routing_table_size: int
    pending_requests: int
    background_tasks: int
    stored_records: int
    stored_bytes: int
    rate_limited_sources: int
    receive_buffer: int
    datagrams_received: int
    requests_answered: int
    dropped: Mapping[str, int]
    """Datagrams ignored, by reason: too_short, oversized, unsealable, rate_limited,
    malformed, unknown_kind, bad_request, unknown_rpc, bad_arguments,
    unsolicited_response, bad_response, handler_error."""
    refused: Mapping[str, int]
    """Records not stored, by reason: invalid, stale, quota, full."""


class _Counters:
    """Named counters; the names are this module's constants, so the dict stays small."""

    def __init__(self) -> None:
        self.received = 0
        self.answered = 0
        self.dropped: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


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


class _Sealer:
    """Private meshes: XChaCha20-Poly1305 over every datagram, random nonce in front.

    Without the network key a datagram neither opens nor can be forged, so an
    outsider gets no answer at all: it can neither query nor enumerate the mesh.
    """

    def __init__(self, network_key: bytes) -> None:
        self._key = crypto.derive(network_key, SEAL_LABEL)

    def seal(self, datagram: bytes) -> bytes:
        nonce = os.urandom(crypto.XNONCE_SIZE)
        return nonce + crypto.xchacha_encrypt(self._key, nonce, datagram, SEAL_LABEL)

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < SEAL_OVERHEAD:
            raise AuthenticationError("too short to be sealed")
        nonce, box = sealed[: crypto.XNONCE_SIZE], sealed[crypto.XNONCE_SIZE :]
        return crypto.xchacha_decrypt(self._key, nonce, box, SEAL_LABEL)


def _ipv4(host: object) -> str | None:
    """``host`` as a routable IPv4 literal, or None (never a name: no DNS in a callback)."""
    if not isinstance(host, str) or len(host) > 15:
        return None
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return str(ip)


def _node_entry(entry: object) -> tuple[bytes, str, int] | None:
    """A FIND_NODE triple from a peer, checked, or None."""
    if not (isinstance(entry, list) and len(entry) == 3):
        return None
    node_id, host, port = entry
    ip = _ipv4(host)
    if not (isinstance(node_id, bytes) and len(node_id) == records.NODE_ID_SIZE and ip):
        return None
    if type(port) is not int or not 0 < port < 65536:
        return None
    return node_id, ip, port


def _is_id(value: object) -> TypeGuard[bytes]:
    return isinstance(value, bytes) and len(value) == records.NODE_ID_SIZE


def _ids(args: list[object], count: int) -> list[bytes] | None:
    """The first ``count`` arguments if each is a node ID or key, else None."""
    ids = [a for a in args[:count] if _is_id(a)]
    return ids if len(ids) == count else None


def parse_address(address: str) -> Address:
    """``"host:port"`` with an IPv4 literal host, as a socket address.

    Raises:
        ValueError: not ``host:port``, or the host is a name (the DHT does no DNS).
    """
    host, sep, port = address.rpartition(":")
    ip = _ipv4(host)
    if not sep or ip is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not an IPv4 host:port address: {address!r}")
    return ip, int(port)


@dataclass
class _Held:
    record: Record
    value: bytes
    source: str | None
    stored_at: float = field(default_factory=time.monotonic)


class _RecordStorage(IStorage):  # type: ignore[misc]  # kademlia ships no type hints
    """kademlia's storage interface over validated records, with quotas and persistence.

    Keys are the 20-byte DHT keys. ``source`` is the IP that wrote a record
    (None for our own and for records loaded from the store); each source may
    hold ``quota_per_source`` bytes, all records together ``storage_cap``.
    """

    def __init__(self, config: DHTConfig, store: RecordStore | None, counters: _Counters) -> None:
        self._config = config
        self._store = store
        self._counters = counters
        self._held: dict[bytes, _Held] = {}
        self._usage: dict[str, int] = {}
        self.total = 0

    def __len__(self) -> int:
        return len(self._held)

    def load(self, now: int) -> None:
        """Take back the records persisted in the store, dropping those no longer valid."""
        if self._store is None:
            return
        for key, value in self._store.dht_records():
            try:
                record = records.validate(key, value, now)
            except InvalidRecord:
                self._unpersist(key)
                continue
            self._put(key, record, None, persist=False)

    def offer(self, key: bytes, value: object, source: str | None, now: int) -> bool:
        """Validate, merge and keep a record; whether the key now holds it (or newer).

        ``True`` for a valid record already superseded (the network holds it),
        ``False`` when refused: invalid, over quota or over the cap.
        """
        if not isinstance(value, bytes):
            self._counters.refuse("invalid")
            return False
        try:
            record = records.validate(key, value, now)
        except InvalidRecord:
            self._counters.refuse("invalid")
            return False
        return self.offer_record(key, record, source, now)

    def offer_record(self, key: bytes, record: Record, source: str | None, now: int) -> bool:
        """:meth:`offer` for a record already validated under ``key``."""
        held = self._held.get(key)
        if held is not None:
            try:
                record = records.merge(held.record, record, now)
            except StaleRecord:
                self._counters.refuse("stale")
                return True
            except InvalidRecord:
                self._counters.refuse("invalid")
                return False
        size = len(record.encode())
        old_size = len(held.value) if held is not None else 0
        if source is not None:
            mine = old_size if held is not None and held.source == source else 0
            if self._usage.get(source, 0) - mine + size > self._config.quota_per_source:
                self._counters.refuse("quota")
                return False
            if self.total - old_size + size > self._config.storage_cap:
                self._counters.refuse("full")
                return False
        return self._put(key, record, source, persist=True)

    def _put(self, key: bytes, record: Record, source: str | None, *, persist: bool) -> bool:
        """Hold ``record`` (and persist it first): False if the store refused it (a
        full disk, say), which leaves what was held as it was."""
        value = record.encode()
        if persist and self._store is not None:
            try:
                self._store.dht_put(key, value, record.expires)
            except StoreError as exc:
                LOG.warning("refused a DHT record: %s", exc)
                self._counters.refuse("store")
                return False
        self._discard(key)
        self._held[key] = _Held(record, value, source)
        self.total += len(value)
        if source is not None:
            self._usage[source] = self._usage.get(source, 0) + len(value)
        return True

    def _unpersist(self, key: bytes) -> None:
        """Forget ``key`` on disk; if the store fails, the record stays there until it
        is found expired or invalid on a later load."""
        if self._store is not None:
            try:
                self._store.dht_delete(key)
            except StoreError as exc:
                LOG.warning("could not forget a DHT record: %s", exc)

    def _discard(self, key: bytes) -> _Held | None:
        held = self._held.pop(key, None)
        if held is not None:
            self.total -= len(held.value)
            if held.source is not None:
                left = self._usage[held.source] - len(held.value)
                if left:
                    self._usage[held.source] = left
                else:
                    del self._usage[held.source]
        return held

    def record(self, key: bytes, now: int) -> Record | None:
        """The record held under ``key``, if any and not expired."""
        held = self._held.get(key)
        if held is None:
            return None
        if held.record.expires <= now:
            self._discard(key)
            self._unpersist(key)
            return None
        return held.record

    def cull(self, now: int) -> None:
        """Forget expired records (and prune expired rendezvous entries)."""
        for key, held in list(self._held.items()):
            if held.record.expires <= now:
                self.record(key, now)
            elif isinstance(held.record, RendezvousRecord):
                live = held.record.checked(now)
                if live is not held.record:
                    self._put(key, live, held.source, persist=True)

    # kademlia's IStorage: the stock Server and protocol reach storage through these.

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if not self.offer(key, value, None, int(time.time())):
            raise InvalidRecord("refused to store an invalid record")

    def __getitem__(self, key: bytes) -> bytes:
        if self.record(key, int(time.time())) is None:
            raise KeyError(key)
        return self._held[key].value

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        if self.record(key, int(time.time())) is None:
            return default
        return self._held[key].value

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        cutoff = time.monotonic() - seconds_old
        return [(k, h.value) for k, h in self._held.items() if h.stored_at <= cutoff]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter([(k, h.value) for k, h in self._held.items()])


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
        self.closed = trio.Event()
        """Set once asyncio has closed the socket."""
        self._max_datagram = MAX_DATAGRAM + (SEAL_OVERHEAD if sealer else 0)
        self._verified: OrderedDict[Address, None] = OrderedDict()
        """Addresses that answered one of our requests: their source is not forged."""
        self._verifying: set[Address] = set()
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

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

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

    def _verify(self, addr: Address) -> None:
        """Ping ``addr`` (once at a time): an answer proves the address is its own."""
        if addr in self._verifying or len(self._verifying) >= self._config.max_pending:
            return
        self._verifying.add(addr)
        self.spawn(self._ping_to_verify(addr))

    async def _ping_to_verify(self, addr: Address) -> bool:
        try:
            answered, _ = await self.ping(addr, self.source_node.id)
        finally:
            self._verifying.discard(addr)
        return bool(answered)

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
        if self.storage.record(ids[1], int(time.time())) is None:
            return self._on_find_node(addr, args)
        self._welcome(ids[0], addr)
        return {"value": self.storage.get(ids[1])}

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
        if (node.ip, node.port) in self._verifying:
            return
        self._verifying.add((node.ip, node.port))
        if await self._ping_to_verify((node.ip, node.port)):
            self._push_records(node)

    def _push_records(self, node: Node) -> None:
        """Push ``node`` the records it should hold (it is closer than us to them)."""
        for key, value in self.storage:
            keynode = Node(key)
            neighbours = self.router.find_neighbors(keynode, exclude=node)
            if neighbours:
                new_is_closer = node.distance_to(keynode) < neighbours[-1].distance_to(keynode)
                we_are_closest = self.source_node.distance_to(keynode) < neighbours[0].distance_to(
                    keynode
                )
            if not neighbours or (new_is_closer and we_are_closest):
                self.spawn(self.call_store(node, key, value))

    def spawn(self, coro: Coroutine[object, object, object]) -> None:
        """Run ``coro`` in the background, bounded, never leaking an exception to the loop."""
        if len(self._tasks) >= self._config.max_pending:
            coro.close()
            return
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

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
                record = records.validate(node_to_find.id, value, int(time.time()))
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


def estimate_size(own: bytes, known: Sequence[bytes], k: int) -> int:
    """The network-size estimate of :meth:`DHTNode.size_estimate` (pure, for tests)."""
    if len(known) < k:
        return len(known) + 1
    me = int.from_bytes(own, "big")
    distances = sorted(me ^ int.from_bytes(i, "big") for i in known)
    span: int = 2 ** (8 * len(own))
    return max(len(known) + 1, round(k * span / max(distances[k - 1], 1)))


def _bind(host: str, port: int, receive_buffer: int) -> socket.socket:
    ip = _ipv4(host) if host != "0.0.0.0" else host
    if ip is None:
        raise ValueError(f"the DHT binds an IPv4 address, not {host!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((ip, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DHTNode:
    """A running DHT node, as the trio side sees it. Made by :func:`open_dht`.

    Every method is a trio function; the asyncio work runs on the node's
    trio-asyncio loop. Cancelling any of them (``trio.move_on_after``) is safe.
    """

    def __init__(
        self,
        identity: Identity,
        server: _HardenedServer,
        *,
        loop: trio_asyncio.TrioEventLoop,
        sock: socket.socket,
        store: RecordStore | None,
        config: DHTConfig,
        counters: _Counters,
    ) -> None:
        self._identity = identity
        self._server = server
        self._loop = loop
        self._sock = sock
        self._store = store
        self._config = config
        self._counters = counters
        self._contact: ContactRecord | None = None
        self._rendezvous: dict[bytes, RendezvousRecord] = {}

    @property
    def _protocol(self) -> _HardenedProtocol:
        return self._server.protocol

    async def _aio(self, coro: Coroutine[object, object, object]) -> object:
        return await trio_asyncio.aio_as_trio(coro, loop=self._loop)

    @property
    def port(self) -> int:
        """The bound UDP port (the node layer binds TCP on the same number)."""
        return self._sock.getsockname()[1]  # type: ignore[no-any-return]

    @property
    def node_id(self) -> bytes:
        """Our Kademlia node ID, derived from the identity's public key."""
        return records.node_id(self._identity.public_key)

    @property
    def contact(self) -> ContactRecord | None:
        """The contact record we publish, once :meth:`publish_contact` has run."""
        return self._contact

    def routing_snapshot(self) -> list[tuple[bytes, str, int]]:
        """Every routing-table entry as plain data: (node ID, IPv4 host, port)."""
        return [
            (n.id, n.ip, n.port)
            for bucket in self._protocol.router.buckets
            for n in bucket.get_nodes()
        ]

    def size_estimate(self) -> int:
        """How many nodes the mesh has, estimated from the routing table.

        Node IDs are uniform, so the k nodes closest to our own ID span about
        k / N of the ID space: N is about k * 2^160 / (distance to the k-th).
        With fewer than k known nodes we know them all (and ourselves).
        """
        return estimate_size(
            self.node_id, [i for i, _, _ in self.routing_snapshot()], self._config.ksize
        )

    def statistics(self) -> DHTStatistics:
        """Counters and sizes, for operators and for the tests' bounds."""
        c = self._counters
        return DHTStatistics(
            node_id=self.node_id,
            port=self.port,
            routing_table_size=len(self.routing_snapshot()),
            pending_requests=self._protocol.pending,
            background_tasks=self._protocol.background_tasks,
            stored_records=len(self._server.storage),
            stored_bytes=self._server.storage.total,
            rate_limited_sources=self._protocol.rate_limited_sources,
            receive_buffer=self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            datagrams_received=c.received,
            requests_answered=c.answered,
            dropped=dict(c.dropped),
            refused=dict(c.refused),
        )

    async def bootstrap(self, addresses: Sequence[str]) -> int:
        """Join through ``addresses`` (``"host:port"``, IPv4); how many nodes we now know.

        Unreachable addresses cost one ``rpc_timeout`` in parallel and are skipped.
        """
        addrs = list(dict.fromkeys(parse_address(a) for a in addresses))
        if addrs:
            await self._aio(self._server.bootstrap(addrs))
            self.save_routing()
        return len(self.routing_snapshot())

    async def ping(self, address: str) -> bytes | None:
        """The node ID answering at ``address``, or None if none answers in time."""
        node = await self._aio(self._server.bootstrap_node(parse_address(address)))
        return node.id if node is not None else None  # type: ignore[attr-defined]

    async def _publish(self, record: Record) -> int:
        """Check our own record as any other, hold it, and store it on the closest nodes."""
        now = int(time.time())
        record = records.validate(record.key, record.encode(), now)
        self._server.storage.offer_record(record.key, record, None, now)
        held = self._server.storage.record(record.key, now) or record
        stored = await self._aio(self._server.set_digest(record.key, held.encode()))
        return stored  # type: ignore[return-value]

    async def publish_contact(self, addresses: Sequence[str]) -> int:
        """Sign and publish where our node listens; how many nodes accepted it.

        The record is kept and republished before it expires. Zero means no
        neighbour answered (we hold it and will serve it to whoever asks).

        Raises:
            InvalidRecord: a wildcard or malformed address, or more than four.
        """
        self._contact = self._sign_contact(addresses)
        return await self._publish(self._contact)

    def _sign_contact(self, addresses: Sequence[str]) -> ContactRecord:
        now = int(time.time())
        seq = now
        if self._store is not None:
            saved = self._store.get_meta(SEQ_META)
            if saved is not None:
                seq = max(seq, int.from_bytes(saved, "big") + 1)
            self._store.set_meta(SEQ_META, seq.to_bytes(8, "big"))
        if self._contact is not None:
            seq = max(seq, self._contact.seq + 1)
        return records.make_contact(
            self._identity, addresses, seq=seq, now=now, lifetime=self._config.record_lifetime
        )

    async def lookup_contact(self, group_key: bytes) -> ContactRecord | None:
        """The newest valid contact record of a group, or None if nobody holds one."""
        found = await self._aio(self._server.lookup(records.contact_key(group_key)))
        return found if isinstance(found, ContactRecord) else None

    async def publish_rendezvous(self, tag: bytes, contact: ContactRecord | None = None) -> int:
        """Add a contact record (ours by default) to a channel's rendezvous for a tag.

        Storing nodes merge it with the other members' entries. Republished
        with our own records until it expires.

        Raises:
            InvalidRecord: no contact given and none published yet, or it has expired.
        """
        contact = contact or self._contact
        if contact is None:
            raise InvalidRecord("publish our contact record before a rendezvous")
        record = records.make_rendezvous(tag, [contact], now=int(time.time()))
        self._rendezvous[record.key] = record
        return await self._publish(record)

    async def closest(self, group_key: bytes, count: int) -> list[tuple[bytes, str]]:
        """(node ID, ``host:port``) of up to ``count`` live nodes closest to a group's node ID.

        They are the nodes that would hold that group's records, so the node
        layer leaves mail for an absent group with them. The group's own node
        is never among them (Kademlia's FIND_NODE leaves out its target). A
        node's sessions listen on its DHT port number, so these addresses serve both.
        """
        found = await self._aio(self._server.closest(records.node_id(group_key), count))
        return [(n.id, f"{n.ip}:{n.port}") for n in found]  # type: ignore[attr-defined]

    async def lookup_rendezvous(self, tag: bytes) -> list[ContactRecord]:
        """The union of the members' contact records several nodes hold for ``tag``."""
        found = await self._aio(self._server.lookup(records.rendezvous_key_for_tag(tag)))
        return list(found.contacts) if isinstance(found, RendezvousRecord) else []

    def save_routing(self) -> None:
        """Save the routing table as plain msgpack data, never in kademlia's own format."""
        if self._store is None:
            return
        routes = [[i, h, p] for i, h, p in self.routing_snapshot()][:MAX_SAVED_ROUTES]
        if routes:
            try:
                self._store.set_meta(ROUTING_META, codec.pack(routes))
            except StoreError as exc:  # a convenience for the next start, not worth a stop
                LOG.warning("could not save the routing table: %s", exc)

    def saved_routes(self) -> list[str]:
        """The ``host:port`` of each saved routing entry, to bootstrap from after a restart."""
        raw = self._store.get_meta(ROUTING_META) if self._store is not None else None
        if raw is None:
            return []
        try:
            doc = codec.unpack(raw, max_array=MAX_SAVED_ROUTES, max_str=64, max_bin=64)
        except codec.DecodeError:
            return []
        entries = [_node_entry(e) for e in doc] if isinstance(doc, list) else []
        return [f"{e[1]}:{e[2]}" for e in entries if e is not None]

    async def _republish(self) -> None:
        now = int(time.time())
        if self._contact is not None and (
            self._contact.expires - now < self._config.record_lifetime // 2
        ):
            self._contact = self._sign_contact(self._contact.addresses)
        own: list[Record] = [self._contact] if self._contact is not None else []
        for key, rendezvous in list(self._rendezvous.items()):
            if rendezvous.expires <= now:
                del self._rendezvous[key]
            else:
                own.append(rendezvous)
        for record in own:
            await self._publish(record)
        self._server.storage.cull(now)
        interval = self._config.republish_interval
        for key, value in self._server.storage.iter_older_than(interval):
            await self._aio(self._server.set_digest(key, value))

    async def _refresh(self) -> None:
        await self._aio(self._server.refresh(self._config.refresh_interval))

    async def _save(self) -> None:
        self.save_routing()

    @staticmethod
    async def _every(interval: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await trio.sleep(interval)
            await job()

    def _start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._every, self._config.refresh_interval, self._refresh)
        nursery.start_soon(self._every, self._config.republish_interval, self._republish)
        nursery.start_soon(self._every, self._config.save_interval, self._save)

    async def _aclose(self) -> None:
        """Save, cancel our requests and close the socket, waiting until it is closed,
        so a restart can bind the same port at once."""
        self.save_routing()
        self._protocol.cancel_all()
        self._server.stop()
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self._protocol.closed.wait()


@asynccontextmanager
async def open_dht(
    identity: Identity,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    network_key: bytes = OPEN_MESH_KEY,
    bootstrap: Sequence[str] = (),
    store: RecordStore | None = None,
    config: DHTConfig | None = None,
) -> AsyncIterator[DHTNode]:
    """Run a DHT node for ``identity`` on UDP ``host:port`` until the block exits.

    Args:
        identity: the group this node serves; the node ID derives from its key.
        host: the IPv4 address to bind (``0.0.0.0`` binds every interface).
        port: the UDP port; 0 picks a free one, reported by :attr:`DHTNode.port`.
        network_key: the mesh's 32-byte key. The open mesh's speaks the stock
            kademlia wire format; any other seals every datagram with a key
            derived from it, so outsiders get no answer.
        bootstrap: ``"host:port"`` addresses to join through; the routing table
            saved in ``store`` is tried too, so a restart needs none.
        store: where records and the routing table persist; None keeps them in
            memory only.
        config: limits, timeouts and intervals (defaults suit the internet).

    Uses the trio-asyncio loop already open in this context, or opens one.

    Raises:
        ValueError: a malformed address or network key.
        OSError: the port cannot be bound.
    """
    if len(network_key) != crypto.KEY_SIZE:
        raise ValueError("a network key is 32 bytes")
    config = config or DHTConfig()
    counters = _Counters()
    sealer = None if network_key == OPEN_MESH_KEY else _Sealer(network_key)
    storage = _RecordStorage(config, store, counters)
    storage.load(int(time.time()))
    server = _HardenedServer(
        records.node_id(identity.public_key),
        storage,
        config=config,
        sealer=sealer,
        counters=counters,
    )
    try:
        async with AsyncExitStack() as stack:
            loop = trio_asyncio.current_loop.get()
            if loop is None:
                loop = await stack.enter_async_context(trio_asyncio.open_loop())
            sock = _bind(host, port, config.receive_buffer)
            try:
                await trio_asyncio.aio_as_trio(server.listen_on, loop=loop)(sock)
            except BaseException:
                sock.close()
                raise
            dht = DHTNode(
                identity,
                server,
                loop=loop,
                sock=sock,
                store=store,
                config=config,
                counters=counters,
            )
            stack.push_async_callback(dht._aclose)
            nursery = await stack.enter_async_context(trio.open_nursery())
            dht._start(nursery)
            await dht.bootstrap([*bootstrap, *dht.saved_routes()])
            try:
                yield dht
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The caller's own exception (or cancellation) comes out as it went in,
        # not wrapped by our nursery of timers and trio-asyncio's two nurseries.
        raise _sole(group) from None


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception nested single groups wrap, or the group itself."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner
