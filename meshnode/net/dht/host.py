"""The DHT under trio: :func:`open_dht` runs a hardened kademlia server on an asyncio
loop (:mod:`.hosts`), and :class:`DHTNode` is what the trio side calls.

Rules 6 and 7 of the package docstring: the timers are trio tasks, the routing
table is saved as plain data, and every call crosses into asyncio through the
node's :class:`~meshnode.net.dht.hosts.Host`. With a threaded host, the trio side
changes nothing of kademlia's itself (rule 1 of :mod:`.hosts`): what it reads here
are copies, what it changes goes through ``Host.run``.
"""

from __future__ import annotations

import logging
import socket
import time
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Final

import trio

from meshnode.core import codec, crypto, records
from meshnode.core.address import ipv4_host, split_ipv4_address
from meshnode.core.records import ContactRecord, Record, RendezvousRecord
from meshnode.core.session import OPEN_MESH_KEY
from meshnode.errors import InvalidRecord, StoreError
from meshnode.net.dht.config import DHTConfig, DHTStatistics, _Counters
from meshnode.net.dht.datagrams import _node_entry, _Sealer
from meshnode.net.dht.hosts import open_host
from meshnode.net.dht.protocol import _HardenedProtocol, _HardenedServer
from meshnode.net.dht.storage import RecordStore, _RecordStorage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from meshnode.core.identity import Identity
    from meshnode.net.dht.hosts import Host

LOG: Final = logging.getLogger("meshnode.net.dht")

ROUTING_META: Final = "dht/routing"
SEQ_META: Final = "dht/contact-seq"
MAX_SAVED_ROUTES: Final = 256


def estimate_size(own: bytes, known: Sequence[bytes], k: int) -> int:
    """The network-size estimate of :meth:`DHTNode.size_estimate` (pure, for tests)."""
    if len(known) < k:
        return len(known) + 1
    me = int.from_bytes(own, "big")
    distances = sorted(me ^ int.from_bytes(i, "big") for i in known)
    span: int = 2 ** (8 * len(own))
    return max(len(known) + 1, round(k * span / max(distances[k - 1], 1)))


def _bind(host: str, port: int, receive_buffer: int) -> socket.socket:
    ip = ipv4_host(host) if host != "0.0.0.0" else host
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

    Every method is a trio function; the asyncio work runs on the node's host
    (:mod:`.hosts`). Cancelling any of them (``trio.move_on_after``) is safe.
    """

    def __init__(
        self,
        identity: Identity,
        server: _HardenedServer,
        *,
        host: Host,
        sock: socket.socket,
        store: RecordStore | None,
        config: DHTConfig,
        counters: _Counters,
    ) -> None:
        self._identity = identity
        self._server = server
        self._host = host
        self._sock = sock
        self._store = store
        self._config = config
        self._counters = counters
        self._contact: ContactRecord | None = None
        self._rendezvous: dict[bytes, RendezvousRecord] = {}

    @property
    def _protocol(self) -> _HardenedProtocol:
        return self._server.protocol

    @property
    def asyncio_host(self) -> str:
        """Where the asyncio side runs: "thread" or "trio-asyncio" (:mod:`.hosts`)."""
        return self._host.name

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checking it after every datagram handled,
        request answered or expired and record published: for callers (tests, the
        node) that wait on the DHT's state, which asyncio callbacks change. The
        caller bounds the wait (``trio.fail_after``)."""
        counters = self._counters
        counters.waiters += 1
        try:
            while not condition():
                await counters.changed.wait()
        finally:
            counters.waiters -= 1

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
            for bucket in list(self._protocol.router.buckets)
            for n in bucket.get_nodes()
        ]

    def holds(self, key: bytes) -> bool:
        """Whether this node itself holds a live record under DHT ``key``.

        Lookups ask the network all the same (for the newest record and a quorum);
        this tells such a lookup apart from one only the network could answer.
        """
        return self._server.storage.holds(key, int(time.time()))

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
        addrs = list(dict.fromkeys(split_ipv4_address(a) for a in addresses))
        if addrs:
            await self._host.run(self._server.bootstrap(addrs))
            self.save_routing()
        return len(self.routing_snapshot())

    async def ping(self, address: str) -> bytes | None:
        """The node ID answering at ``address``, or None if none answers in time."""
        node = await self._host.run(self._server.bootstrap_node(split_ipv4_address(address)))
        return node.id if node is not None else None

    async def _publish(self, record: Record) -> int:
        """Check our own record as any other, hold it, and store it on the closest nodes."""
        now = int(time.time())
        record = records.validate(record.key, record.encode(), now)
        return await self._host.run(self._server.publish(record, now))

    async def publish_contact(self, addresses: Sequence[str]) -> int:
        """Sign and publish where our node listens; how many nodes accepted it.

        The record is kept and republished before it expires. Zero means no
        neighbour answered (we hold it and will serve it to whoever asks).

        Raises:
            InvalidRecord: a wildcard or malformed address, or more than four.
        """
        self._contact = self._sign_contact(addresses)
        self._counters.pulse()
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
        found = await self._host.run(self._server.lookup(records.contact_key(group_key)))
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
        found = await self._host.run(self._server.closest(records.node_id(group_key), count))
        return [(n.id, f"{n.ip}:{n.port}") for n in found]

    async def lookup_rendezvous(self, tag: bytes) -> list[ContactRecord]:
        """The union of the members' contact records several nodes hold for ``tag``."""
        found = await self._host.run(self._server.lookup(records.rendezvous_key_for_tag(tag)))
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
        await self._host.run(self._server.republish_held(now, self._config.republish_interval))

    async def _refresh(self) -> None:
        await self._host.run(self._server.refresh(self._config.refresh_interval))

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
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self._host.run(self._server.shutdown())


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

    Runs on the host open in this context (:func:`open_dht_thread`, or a
    trio-asyncio loop), or on an asyncio loop in a thread of its own.

    Raises:
        ValueError: a malformed address or network key.
        OSError: the port cannot be bound.
    """
    if len(network_key) != crypto.KEY_SIZE:
        raise ValueError("a network key is 32 bytes")
    config = config or DHTConfig()
    sealer = None if network_key == OPEN_MESH_KEY else _Sealer(network_key)
    try:
        async with AsyncExitStack() as stack:
            island = await stack.enter_async_context(open_host())
            counters = _Counters(island.soon if island.threaded else None)
            storage = _RecordStorage(config, island.store(store), counters)
            storage.load(int(time.time()))
            server = _HardenedServer(
                records.node_id(identity.public_key),
                storage,
                config=config,
                sealer=sealer,
                counters=counters,
            )
            sock = _bind(host, port, config.receive_buffer)
            try:
                await island.run(server.listen_on(sock))
            except BaseException:
                sock.close()
                raise
            dht = DHTNode(
                identity,
                server,
                host=island,
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
        # not wrapped by our nursery of timers and the host's nurseries.
        raise _sole(group) from None


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception nested single groups wrap, or the group itself."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner
