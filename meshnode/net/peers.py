"""The session registry: one session per peer, dialled or accepted, fed to the machine.

Theory of operation:
1. Every session, dialled or accepted, is registered with the one
   :class:`~meshnode.core.gossip.Gossip` machine. Each session's reader task
   hands what it read straight to the machine (``Session.deliver_to``); the
   events go to the node's dispatcher, and the machine's output is written to
   the sessions at once, one write per peer per flush.
2. A peer whose send queue is full is too slow to keep: its session is closed,
   never buffered without bound.
3. One session per group: two nodes that dial each other at once keep the
   connection the smaller group key dialled (both decide alike, so neither
   closes the one the other kept); a dial that races one of our own keeps the
   first (see :meth:`Peers._keeps`). Our own key and blocked groups get none.
4. A node dialled by hand, through an invite or as a bootstrap address also
   joins the DHT's routing table: its DHT listens on the same port number.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from meshnode import redact
from meshnode.core import records, views
from meshnode.core.identity import fingerprint
from meshnode.core.wire import PeerId
from meshnode.errors import MeshError, PeerDisconnected, RemoteProtocolError
from meshnode.net import connect, transport

if TYPE_CHECKING:
    from collections.abc import Iterator

    from meshnode.core.gossip import OverlaySession
    from meshnode.net.context import Context

log = logging.getLogger("meshnode.node")


@dataclass
class _Peer:
    session: transport.Session
    outbound: bool
    since: float


class Peers:
    """The open sessions by group key: dialling, accepting, flushing, closing."""

    def __init__(
        self,
        ctx: Context,
        *,
        network_key: bytes,
        config: transport.SessionConfig,
        local_host: str | None,
    ) -> None:
        """``local_host``: dial from the bound address, so peers see the address we
        listen on."""
        self._ctx = ctx
        self._network_key = network_key
        self._config = config
        self._local_host = local_host
        self._peers: dict[bytes, _Peer] = {}
        self.reachable: bool | None = None
        """True once another node dialled us and completed a handshake."""

    def __contains__(self, key: object) -> bool:
        return key in self._peers

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def session(self, key: bytes) -> transport.Session | None:
        """The open session with group ``key``, if any."""
        p = self._peers.get(key)
        return None if p is None else p.session

    def info(self) -> list[views.PeerInfo]:
        """The open sessions, oldest first, with the bytes each has carried."""
        infos = []
        for key, p in sorted(self._peers.items(), key=lambda kv: kv[1].since):
            counters = p.session.statistics().counters
            infos.append(
                views.PeerInfo(
                    key=key,
                    name=self._ctx.archive.author_name(key),
                    address=p.session.remote_address,
                    outbound=p.outbound,
                    since=p.since,
                    bytes_sent=counters.bytes_sent,
                    bytes_received=counters.bytes_received,
                )
            )
        return infos

    def overlay_sessions(self) -> list[OverlaySession]:
        """The open sessions as ``plan_overlay`` sees them."""
        gossip = self._ctx.gossip
        return [
            gossip.overlay_session(PeerId(k), outbound=p.outbound, opened=p.since)
            for k, p in self._peers.items()
        ]

    async def dial(self, address: str) -> bytes:
        """A session with the node at ``address``: its group key once it is registered."""
        ctx = self._ctx
        me = ctx.identity.public_key
        try:
            session = await connect.connect_session(
                ctx.nursery,
                address,
                identity=ctx.identity,
                network_key=self._network_key,
                config=self._config,
                local_host=self._local_host,
            )
        except RemoteProtocolError as exc:
            raise PeerDisconnected(f"no meshnode session with {address}: {exc}") from None
        key = session.peer_key
        if key == me or ctx.blocked(key):
            await session.aclose()
            if key == me:
                raise PeerDisconnected(f"{address} is this node itself")
            raise PeerDisconnected(f"{address} is a blocked group")
        if not self._keeps(key, outbound=True):
            await session.aclose()
            return key
        started = trio.Event()
        ctx.nursery.start_soon(self._run_session, session, True, started)
        await started.wait()
        if records.node_id(key) not in {entry[0] for entry in ctx.dht.routing_snapshot()}:
            ctx.nursery.start_soon(self._join_dht, address)
        return key

    async def _join_dht(self, address: str) -> None:
        with contextlib.suppress(MeshError, ValueError):
            await self._ctx.dht.bootstrap([address])

    async def accept(self, session: transport.Session) -> None:
        """Run a session another node opened (the listener's handler)."""
        if not self.reachable:  # another node dialled us and completed a handshake
            self.reachable = True
            self._ctx.changed()
        key = session.peer_key
        if key == self._ctx.identity.public_key or self._ctx.blocked(key):
            return
        if self._keeps(key, outbound=False):
            await self._run_session(session, False, trio.Event())

    def _keeps(self, key: bytes, *, outbound: bool) -> bool:
        """Whether a new session with ``key`` should replace the one already open, if any.

        Two nodes that dial each other at once must keep the same connection, or
        each closes the one the other kept: both keep the one dialled by the
        smaller group key. A dial that races one of our own keeps the first."""
        existing = self._peers.get(key)
        if existing is None:
            return True
        if existing.outbound == outbound:
            return False
        me = self._ctx.identity.public_key
        smaller_dials = me if outbound else key
        return smaller_dials == min(me, key)

    async def _run_session(
        self, session: transport.Session, outbound: bool, started: trio.Event
    ) -> None:
        ctx = self._ctx
        key = session.peer_key
        if not self._keeps(key, outbound=outbound):
            started.set()
            with trio.CancelScope(shield=True):
                await session.aclose()
            return
        replaced = self._peers.pop(key, None)
        if replaced is not None:
            ctx.gossip.remove_peer(PeerId(key), trio.current_time())
            ctx.nursery.start_soon(replaced.session.aclose)
        entry = self._peers[key] = _Peer(session, outbound, time.time())
        ctx.gossip.add_peer(PeerId(key), session.handshake_hash, trio.current_time())
        log.info(
            "session with %s at %s",
            redact.peer(fingerprint(key)),
            redact.peer(session.remote_address),
        )
        ctx.changed()
        peer = PeerId(key)

        def received(messages: list[bytes]) -> None:
            if self._peers.get(key) is not entry:
                return  # replaced, or on its way out: the peer's state is gone from gossip
            now = trio.current_time()
            for data in messages:
                ctx.handle(ctx.gossip.receive_data(peer, data, now))
            self.flush()

        try:
            self.flush()
            session.deliver_to(received)
            started.set()
            await session.wait_closed()
            log.info(
                "session with %s ended: %s",
                redact.peer(fingerprint(key)),
                redact.peer(session.statistics().closed_reason),
            )
        finally:
            started.set()
            if self._peers.get(key) is entry:  # not if a preferred session replaced it
                del self._peers[key]
                ctx.gossip.remove_peer(PeerId(key), trio.current_time())
                ctx.changed()
            with trio.CancelScope(shield=True):
                await session.aclose()

    def flush(self) -> None:
        """Hand the machine's output to the sessions, one write per peer, never blocking:
        a peer whose send queue is full is too slow to keep, and is closed. (Every input
        to the machine ends with a flush, so this is where its deadline is checked.)"""
        self._ctx.machine_ran()
        for peer, group in itertools.groupby(self._ctx.gossip.data_to_send(), key=lambda x: x[0]):
            p = self._peers.get(peer)
            if p is None:
                continue
            try:
                p.session.send_many_nowait([payload for _, payload in group])
            except trio.WouldBlock:
                log.warning(
                    "closing the session with %s: too slow to keep up",
                    redact.peer(fingerprint(peer)),
                )
                self._ctx.nursery.start_soon(p.session.aclose)
            except PeerDisconnected:
                pass

    async def close(self, key: bytes) -> None:
        """Close the session with group ``key``, if one is open."""
        p = self._peers.get(key)
        if p is not None:
            await p.session.aclose()
