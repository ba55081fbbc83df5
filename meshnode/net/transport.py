"""Noise sessions over TCP: dialling, listening, and the tasks that keep a session alive.

Theory of operation (normative text: docs/spec/session.md):
- All protocol logic is in :class:`meshnode.core.noise.SessionMachine`; this
  module moves bytes between it and a ``trio.SocketStream``, owns the timers
  and enforces the limits, so it stays thin.
- The handshake runs first, under ``handshake_timeout``. A responder whose
  machine refuses message 1 (wrong network key) closes the connection
  without writing a byte: an outsider learns nothing, not even our key.
- An open session has two tasks. The *reader* feeds the machine and puts each
  received message into a bounded memory channel; when the application does
  not consume, the reader stops reading and TCP pushes back on the peer. It
  closes the session when no message or keepalive arrives for ``idle_timeout``
  (a trickle of bytes does not count). The *writer* takes messages from another
  bounded channel, so ``send`` blocks (backpressure) when the peer is slow,
  sends a keepalive when it has had nothing to send for
  ``keepalive_interval``, and closes the session when one write stalls for
  ``write_timeout`` (a peer that stopped reading).
- Errors: the stream's ``BrokenResourceError``/``ClosedResourceError`` and the
  peer's protocol errors end that one session; the caller sees
  :class:`PeerDisconnected` with the reason. The listener never stops for a
  session's failure.
- The listener counts every accepted connection, handshaking or open,
  against ``max_sessions`` and ``max_sessions_per_ip``, and closes one over
  either limit at once, so a flood of unauthenticated connections is bounded
  too.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import trio

from meshnode.core import crypto, wire
from meshnode.core.identity import Identity
from meshnode.core.noise import (
    LENGTH_SIZE,
    MAX_RECORD,
    NEED_DATA,
    OPEN_MESH_KEY,
    HandshakeComplete,
    MessageReceived,
    SessionCounters,
    SessionMachine,
)
from meshnode.errors import (
    HandshakeError,
    LocalProtocolError,
    NonceExhausted,
    OperationTimeout,
    PeerDisconnected,
    RemoteProtocolError,
)

log = logging.getLogger(__name__)

_READ_SIZE: Final = LENGTH_SIZE + MAX_RECORD
"""One whole record per read at most, so the machine's inbound buffer stays small."""

_WRITE_BATCH: Final = 16
"""Queued messages written together at most (one ``send_all``)."""

SessionHandler = Callable[["Session"], Awaitable[None]]
"""What a listener runs for each open session; the session closes when it returns."""


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """Every timeout and limit of a session and of the listener (docs/spec/session.md, "Limits").

    Times are seconds. Both ends of a session should use the same
    ``max_message``: a message over the receiver's limit ends the session.
    """

    handshake_timeout: float = 10.0
    """The whole handshake, from connect or accept to the last message."""
    max_message: int = wire.MAX_MESSAGE
    """The largest session message sent or accepted (one bulletin plus framing)."""
    rekey_after: int = 10_000
    """Rekey the sending key after this many records."""
    keepalive_interval: float = 20.0
    """Send a keepalive after this long with nothing else sent."""
    idle_timeout: float = 60.0
    """Close a session that has received no message or keepalive for this long."""
    write_timeout: float = 30.0
    """Close a session when one write is stuck this long (the peer stopped reading)."""
    send_queue_size: int = 16
    """Messages waiting to be written; ``send`` blocks while it is full."""
    receive_queue_size: int = 16
    """Messages received and not yet taken by ``receive``; reading stops while it is full."""
    max_sessions: int = 256
    """Connections a listener holds at once, handshaking or open."""
    max_sessions_per_ip: int = 8
    """Connections a listener holds at once from one remote address."""

    def __post_init__(self) -> None:
        times = (self.handshake_timeout, self.keepalive_interval, self.idle_timeout,
                 self.write_timeout)  # fmt: skip
        counts = (self.rekey_after, self.send_queue_size, self.receive_queue_size,
                  self.max_sessions, self.max_sessions_per_ip)  # fmt: skip
        if min(times) <= 0 or min(counts) < 1 or self.max_message < 0:
            raise ValueError("session timeouts must be positive and limits at least 1")
        if self.keepalive_interval >= self.idle_timeout:
            raise ValueError("keepalive_interval must be shorter than idle_timeout")


@dataclass(frozen=True)
class SessionStatistics:
    """What a session has carried, and why it closed (None while open)."""

    counters: SessionCounters
    queued_to_send: int
    queued_received: int
    closed_reason: str | None


def _format_address(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) into its parts, raising ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


class Session:
    """An open, authenticated session with a peer.

    Made by :func:`open_session` or handed to a :func:`serve_sessions` handler;
    both close it when their block or handler ends.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        machine: SessionMachine,
        opened: HandshakeComplete,
        config: SessionConfig,
    ) -> None:
        self._stream = stream
        self._machine = machine
        self._config = config
        self.peer_key: Final = opened.peer_key
        """The peer's Ed25519 group key, proved by the handshake."""
        self.handshake_hash: Final = opened.handshake_hash
        """The Noise handshake hash: the same on both ends, unique to this session."""
        self.remote_address: Final = _format_address(stream.socket.getpeername())
        """The peer's ``host:port`` as this side sees it."""
        self._send_tx, self._send_rx = trio.open_memory_channel[bytes](config.send_queue_size)
        self._recv_tx, self._recv_rx = trio.open_memory_channel[bytes](config.receive_queue_size)
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._reason: str | None = None

    def __repr__(self) -> str:
        return f"<Session {self.peer_key.hex()[:16]} at {self.remote_address}>"

    def _disconnected(self) -> PeerDisconnected:
        return PeerDisconnected(f"session with {self.remote_address} closed: {self._reason}")

    async def send(self, data: bytes) -> None:
        """Queue a message for the peer, waiting while the send queue is full.

        Raises:
            LocalProtocolError: ``data`` is over ``max_message``.
            PeerDisconnected: the session is closed (the reason says why).
        """
        self._check_size(data)
        try:
            await self._send_tx.send(bytes(data))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._disconnected() from None

    def send_nowait(self, data: bytes) -> None:
        """Queue a message if there is room, for callers that must never block.

        Raises:
            trio.WouldBlock: the send queue is full (the peer is slow).
            LocalProtocolError: ``data`` is over ``max_message``.
            PeerDisconnected: the session is closed.
        """
        self._check_size(data)
        try:
            self._send_tx.send_nowait(bytes(data))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._disconnected() from None

    def _check_size(self, data: bytes) -> None:
        if len(data) > self._config.max_message:
            raise LocalProtocolError(
                f"a session message is at most {self._config.max_message} bytes, not {len(data)}"
            )

    async def receive(self) -> bytes:
        """The next message from the peer; messages that arrived before a close are kept.

        Raises:
            PeerDisconnected: the session closed and every message was taken.
        """
        try:
            return await self._recv_rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._disconnected() from None

    def receive_nowait(self) -> bytes:
        """The next message if one is queued already: :meth:`receive` without waiting,
        so a caller can take a burst in one wake-up.

        Raises:
            trio.WouldBlock: no message is queued (the session may still be open).
            PeerDisconnected: the session closed and every message was taken.
        """
        try:
            return self._recv_rx.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._disconnected() from None

    async def aclose(self) -> None:
        """Write what is queued (for at most ``write_timeout``), then close the connection.

        Safe to call more than once and from any task.
        """
        self._send_tx.close()
        with trio.move_on_after(self._config.write_timeout):
            await self._done.wait()
        self._abort("closed by this side")
        await self._done.wait()

    def statistics(self) -> SessionStatistics:
        """Counters from the machine, queue depths and the close reason."""
        return SessionStatistics(
            counters=self._machine.statistics(),
            queued_to_send=self._send_tx.statistics().current_buffer_used,
            queued_received=self._recv_rx.statistics().current_buffer_used,
            closed_reason=self._reason,
        )

    @property
    def closed(self) -> bool:
        """Whether the session has ended (queued messages may still be received)."""
        return self._done.is_set()

    def _abort(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
            log.debug("session with %s ends: %s", self.remote_address, reason)
        self._scope.cancel()

    async def _run(self) -> None:
        """The reader and the writer, until either ends the session; then the cleanup."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    nursery.start_soon(self._writer)
        finally:
            self._send_tx.close()
            self._recv_tx.close()
            try:
                await trio.aclose_forcefully(self._stream)
            finally:
                # Set even when an outer cancellation escapes the close, or a
                # shielded aclose() elsewhere would wait for it forever.
                self._done.set()

    async def _reader(self) -> None:
        """Feed the machine; deliver messages; watch the idle timer (spec: "Idle timeout")."""
        config = self._config
        # One cancel scope for the whole session, its deadline moved on as messages
        # come (not a scope per read): it is cancelled only when the peer falls idle.
        idle = trio.CancelScope(deadline=trio.current_time() + config.idle_timeout)
        heard = False
        try:
            with idle:
                while True:
                    event = self._machine.next_event()
                    if event is NEED_DATA:
                        if heard:
                            idle.deadline = trio.current_time() + config.idle_timeout
                            heard = False
                        data = await self._stream.receive_some(_READ_SIZE)
                        if not data:
                            self._abort("the peer closed the connection")
                            return
                        self._machine.receive_data(data)
                        continue
                    heard = True
                    if isinstance(event, MessageReceived):
                        try:  # no checkpoint per message while the queue has room
                            self._recv_tx.send_nowait(event.data)
                        except trio.WouldBlock:  # our side is slow: not the peer's idling
                            idle.deadline = math.inf
                            await self._recv_tx.send(event.data)
            if idle.cancelled_caught:
                self._abort(f"no message or keepalive for {config.idle_timeout} s")
                return
        except RemoteProtocolError as exc:
            self._abort(f"the peer broke the session protocol: {exc}")
        except NonceExhausted as exc:
            self._abort(str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._abort("the connection broke")

    async def _writer(self) -> None:
        """Write queued messages, or a keepalive when idle; flush and end on aclose.

        The messages already queued when the writer wakes (up to ``_WRITE_BATCH``) go
        out in one write, so a burst costs one system call, not one per message.
        """
        config = self._config
        data: bytes | None = None
        try:
            while True:
                # One cancel scope until it fires (not one per wait and per write): its
                # deadline is the keepalive while waiting, the write timeout while writing.
                writing = False
                with trio.CancelScope() as scope:
                    while True:
                        try:
                            data = self._send_rx.receive_nowait()
                        except trio.WouldBlock:
                            scope.deadline = trio.current_time() + config.keepalive_interval
                            data = await self._send_rx.receive()
                        if not self._encode(data):
                            return
                        scope.deadline = trio.current_time() + config.write_timeout
                        writing = True
                        await self._stream.send_all(self._machine.data_to_send())
                        writing = False
                if writing:
                    self._abort(f"the peer read nothing for {config.write_timeout} s")
                    return
                if not self._encode(None):  # idle for keepalive_interval
                    return
                with trio.move_on_after(config.write_timeout) as write:
                    await self._stream.send_all(self._machine.data_to_send())
                if write.cancelled_caught:
                    self._abort(f"the peer read nothing for {config.write_timeout} s")
                    return
        except trio.EndOfChannel:
            self._abort("closed by this side")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._abort("the connection broke")

    def _encode(self, data: bytes | None) -> bool:
        """Hand ``data`` and what else is queued (up to ``_WRITE_BATCH``) to the machine,
        or a keepalive for None; False if the session failed."""
        try:
            if data is None:
                self._machine.send_keepalive()
            else:
                self._machine.send(data)
                for _ in range(_WRITE_BATCH - 1):
                    try:
                        more = self._send_rx.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break  # (a close is seen at the top, after this write)
                    self._machine.send(more)
        except LocalProtocolError as exc:  # the reader failed it, or nonces ran out
            self._abort(f"the session failed: {exc}")
            return False
        return True


async def _handshake(
    stream: trio.SocketStream, machine: SessionMachine, config: SessionConfig
) -> HandshakeComplete:
    """Run the machine until HandshakeComplete (spec: "Handshake", steps 2-6).

    Raises:
        HandshakeError: the peer failed the handshake or closed during it.
        OperationTimeout: it did not finish within ``handshake_timeout``.
        PeerDisconnected: the connection broke.
    """
    timeout = config.handshake_timeout
    try:
        with trio.fail_after(timeout):
            while True:
                event = machine.next_event()
                outgoing = machine.data_to_send()
                if outgoing:
                    await stream.send_all(outgoing)
                if isinstance(event, HandshakeComplete):
                    return event
                if event is NEED_DATA:
                    data = await stream.receive_some(_READ_SIZE)
                    if not data:
                        raise HandshakeError(
                            "the peer closed the connection during the handshake: the two "
                            "nodes are probably in different meshes (check the network key), "
                            "or the peer is at its session limit"
                        )
                    machine.receive_data(data)
    except trio.TooSlowError:
        raise OperationTimeout(f"the handshake did not finish within {timeout} s") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise PeerDisconnected("the connection broke during the handshake") from None


def _machine(
    identity: Identity, initiator: bool, network_key: bytes, config: SessionConfig,
    rng: crypto.Rng,
) -> SessionMachine:  # fmt: skip
    return SessionMachine(
        identity,
        initiator=initiator,
        rng=rng,
        max_message=config.max_message,
        rekey_after=config.rekey_after,
        network_key=network_key,
    )


async def _dial(
    address: str,
    identity: Identity,
    network_key: bytes,
    config: SessionConfig,
    local_host: str | None,
    rng: crypto.Rng,
) -> Session:
    """Connect and handshake; the caller starts the session's tasks."""
    host, port = parse_address(address)
    try:
        with trio.fail_after(config.handshake_timeout):
            stream = await trio.open_tcp_stream(host, port, local_address=local_host)
    except trio.TooSlowError:
        raise OperationTimeout(f"connecting to {address} timed out") from None
    except OSError as exc:
        raise PeerDisconnected(
            f"cannot connect to {address}: {exc.strerror or exc}; is the node running?"
        ) from None
    try:
        machine = _machine(identity, True, network_key, config, rng)
        opened = await _handshake(stream, machine, config)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Session(stream, machine, opened, config)


async def connect_session(
    nursery: trio.Nursery,
    address: str,
    *,
    identity: Identity,
    network_key: bytes = OPEN_MESH_KEY,
    config: SessionConfig = SessionConfig(),  # frozen, so sharing it is safe
    local_host: str | None = None,
    rng: crypto.Rng = os.urandom,
) -> Session:
    """Dial ``address`` and run the handshake; the session's tasks run in ``nursery``.

    For a session that outlives the caller (a node keeps its peers in its own
    nursery); :func:`open_session` is the scoped form. Close it with ``aclose``.

    Args:
        nursery: where the session's reader and writer run.
        address: the peer's ``host:port``.
        identity: our group identity.
        network_key: the mesh's 32-byte key; the open mesh's by default.
        config: timeouts and limits.
        local_host: the address to dial from (tests give each node its own
            127.0.0.N, and the listener's per-IP limit sees it).
        rng: randomness for the ephemeral key.

    Raises:
        PeerDisconnected: the connection failed or broke.
        HandshakeError: the handshake failed; the message says how.
        OperationTimeout: connecting or the handshake took longer than
            ``handshake_timeout``.
    """
    session = await _dial(address, identity, network_key, config, local_host, rng)
    nursery.start_soon(session._run)
    return session


@asynccontextmanager
async def open_session(
    address: str,
    *,
    identity: Identity,
    network_key: bytes = OPEN_MESH_KEY,
    config: SessionConfig = SessionConfig(),  # frozen, so sharing it is safe
    local_host: str | None = None,
    rng: crypto.Rng = os.urandom,
) -> AsyncIterator[Session]:
    """Dial ``address``, run the handshake, and yield the open session.

    Leaving the block normally flushes what is queued and closes the session;
    leaving it by an exception closes at once. Arguments and errors are
    those of :func:`connect_session`.
    """
    session = await _dial(address, identity, network_key, config, local_host, rng)
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session._run)
        try:
            yield session
        except BaseException as exc:
            # Re-raised outside the nursery, so callers see the exception
            # itself rather than an ExceptionGroup around it.
            failure = exc
            session._abort("closed by an error on this side")
        else:
            await session.aclose()
    if failure is not None:
        raise failure


async def serve_sessions(
    handler: SessionHandler,
    host: str,
    port: int,
    *,
    identity: Identity,
    network_key: bytes = OPEN_MESH_KEY,
    config: SessionConfig = SessionConfig(),  # frozen, so sharing it is safe
    rng: crypto.Rng = os.urandom,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind ``host:port`` and accept sessions forever: :func:`serve_listeners` on it.

    Args:
        handler: runs once per session.
        host: the address to bind, e.g. ``"127.0.0.2"`` or ``"0.0.0.0"``.
        port: the TCP port; 0 picks a free one.
        identity: our group identity.
        network_key: the mesh's 32-byte key.
        config: timeouts and limits, including the session limits.
        rng: randomness for ephemeral keys.
        task_status: reports the bound ``host:port`` once listening.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    await serve_listeners(
        handler, listeners, identity=identity, network_key=network_key, config=config, rng=rng,
        task_status=task_status,
    )  # fmt: skip


async def serve_listeners(
    handler: SessionHandler,
    listeners: list[trio.SocketListener],
    *,
    identity: Identity,
    network_key: bytes = OPEN_MESH_KEY,
    config: SessionConfig = SessionConfig(),  # frozen, so sharing it is safe
    rng: crypto.Rng = os.urandom,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept sessions on listeners already bound (a node binds TCP and UDP on one port).

    The handler gets an open, authenticated :class:`Session`; the session is
    closed (queued messages flushed) when the handler returns. A handler that
    raises PeerDisconnected or RemoteProtocolError ends its session only;
    any other exception is a bug and propagates. A connection over
    ``max_sessions`` or ``max_sessions_per_ip`` is closed at once, before
    the handshake. ``task_status`` reports the first listener's ``host:port``.
    """
    address = _format_address(listeners[0].socket.getsockname())
    per_ip: Counter[str] = Counter()
    total = 0

    async def connection(stream: trio.SocketStream) -> None:
        nonlocal total
        remote_ip = stream.socket.getpeername()[0]
        if total >= config.max_sessions or per_ip[remote_ip] >= config.max_sessions_per_ip:
            log.info("refused a connection from %s: at the session limit", remote_ip)
            await trio.aclose_forcefully(stream)
            return
        total += 1
        per_ip[remote_ip] += 1
        try:
            await _accept(stream, handler, identity, network_key, config, rng)
        finally:
            total -= 1
            per_ip[remote_ip] -= 1
            if not per_ip[remote_ip]:
                del per_ip[remote_ip]

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, connection, listeners)
        log.info("accepting sessions on %s", address)
        task_status.started(address)


async def _accept(
    stream: trio.SocketStream,
    handler: SessionHandler,
    identity: Identity,
    network_key: bytes,
    config: SessionConfig,
    rng: crypto.Rng,
) -> None:
    """One accepted connection: handshake, handler, close. Its failures stay here."""
    machine = _machine(identity, False, network_key, config, rng)
    try:
        opened = await _handshake(stream, machine, config)
    except (RemoteProtocolError, PeerDisconnected, OperationTimeout) as exc:
        log.info("handshake failed: %s", exc)
        await trio.aclose_forcefully(stream)
        return
    session = Session(stream, machine, opened, config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session._run)
        try:
            await handler(session)
        except (PeerDisconnected, RemoteProtocolError) as exc:
            log.info("session with %s ended: %s", session.remote_address, exc)
            session._abort(str(exc))
        else:
            await session.aclose()
