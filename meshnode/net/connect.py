"""Opening Noise sessions: dialling, accepting, the handshake, and the listener's slots.

Theory of operation (normative text: docs/spec/session.md):
- The handshake runs first, under ``handshake_timeout``. A responder whose
  machine refuses message 1 (wrong network key) closes the connection
  without writing a byte: an outsider learns nothing, not even our key.
- Then the open session's tasks (:class:`meshnode.net.transport.Session`) run in
  the caller's nursery (:func:`connect_session`, :func:`start_session`) or for
  the length of a block (:func:`open_session`), or for as long as a listener's
  handler runs (:func:`serve_listeners`).
- Errors: a broken connection (``OSError``, or trio's resource errors during
  the handshake) and the peer's protocol errors end that one session; the
  caller sees :class:`PeerDisconnected` with the reason. The listener never
  stops for a session's failure.
- The listener keeps two sets of slots, each with a total and a per-address
  cap: handshakes (``max_handshakes``, ``max_handshakes_per_ip``, each held for
  at most ``handshake_timeout``) and open sessions (``max_sessions``,
  ``max_sessions_per_ip``). A connection accepted while either is full, in
  total or for its address, is closed at once; a handshake that completes while the
  sessions are full (others completed first) is closed too. Silent,
  unauthenticated connections thus fill only the handshake slots: they never
  take a session's place, and our own dials use no listener slot at all.
"""


from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Final

import trio

from meshnode import redact
from meshnode.core.address import split_address
from meshnode.core.session import (
    NEED_DATA,
    OPEN_MESH_KEY,
    HandshakeComplete,
    SessionMachine,
)
from meshnode.errors import (
    HandshakeError,
    OperationTimeout,
    PeerDisconnected,
    RemoteProtocolError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from meshnode.core import crypto
    from meshnode.core.identity import Identity

from meshnode.net.transport import (
    _READ_SIZE,
    Session,
    SessionConfig,
    SessionHandler,
    _format_address,
)

log = logging.getLogger("meshnode.net.transport")

DEFAULT_CONFIG: Final = SessionConfig()
"""The default timeouts and limits (frozen, so every caller may share them)."""


async def _handshake(
    stream: trio.abc.Stream, machine: SessionMachine, config: SessionConfig
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
                    machine.receive_data(bytes(data))
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
    host, port = split_address(address)
    try:
        with trio.fail_after(config.handshake_timeout):
            stream = await trio.open_tcp_stream(host, port, local_address=local_host)
    except trio.TooSlowError:
        raise OperationTimeout(f"connecting to {address} timed out") from None
    except OSError as exc:
        raise PeerDisconnected(
            f"cannot connect to {address}: {exc.strerror or exc}; is the node running?"
        ) from None
    return await _opened(stream, True, identity, network_key, config, rng)


async def _opened(
    stream: trio.abc.Stream, initiator: bool, identity: Identity, network_key: bytes,
    config: SessionConfig, rng: crypto.Rng, remote_address: str | None = None,
) -> Session:  # fmt: skip
    """The session over ``stream`` once its handshake completes; the stream is closed
    if it does not."""
    try:
        machine = _machine(identity, initiator, network_key, config, rng)
        opened = await _handshake(stream, machine, config)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Session(stream, machine, opened, config, remote_address)


async def connect_session(
    nursery: trio.Nursery,
    address: str,
    *,
    identity: Identity,
    network_key: bytes = OPEN_MESH_KEY,
    config: SessionConfig = DEFAULT_CONFIG,
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


async def start_session(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    *,
    initiator: bool,
    identity: Identity,
    network_key: bytes = OPEN_MESH_KEY,
    config: SessionConfig = DEFAULT_CONFIG,
    remote_address: str = "stream",
    rng: crypto.Rng = os.urandom,
) -> Session:
    """Run the handshake over any trio Stream and start the session's tasks in
    ``nursery``: a session over ``trio.testing.memory_stream_pair``, under a mock
    clock, is the same session as over TCP (only slower: no socket fast path).

    Args:
        initiator: whether this end starts the handshake (the dialling side).
        remote_address: what the session reports as the peer's address.

    Raises:
        HandshakeError, OperationTimeout, PeerDisconnected: as :func:`connect_session`.
    """
    session = await _opened(
        stream, initiator, identity, network_key, config, rng, remote_address
    )
    nursery.start_soon(session._run)
    return session


@asynccontextmanager
async def open_session(
    address: str,
    *,
    identity: Identity,
    network_key: bytes = OPEN_MESH_KEY,
    config: SessionConfig = DEFAULT_CONFIG,
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
    config: SessionConfig = DEFAULT_CONFIG,
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
    config: SessionConfig = DEFAULT_CONFIG,
    rng: crypto.Rng = os.urandom,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept sessions on listeners already bound (a node binds TCP and UDP on one port).

    The handler gets an open, authenticated :class:`Session`; the session is
    closed (queued messages flushed) when the handler returns. A handler that
    raises PeerDisconnected or RemoteProtocolError ends its session only;
    any other exception is a bug and propagates. A connection is closed at
    once, before the handshake, when the open sessions are at ``max_sessions``
    or ``max_sessions_per_ip``, or the handshakes at ``max_handshakes`` or
    ``max_handshakes_per_ip``; a handshake that completes while the sessions
    are full is closed without a session. ``task_status`` reports the first
    listener's ``host:port``.
    """
    address = _format_address(listeners[0].socket.getsockname())
    sessions = _Slots("session", config.max_sessions, config.max_sessions_per_ip)
    handshakes = _Slots("handshake", config.max_handshakes, config.max_handshakes_per_ip)

    async def connection(stream: trio.SocketStream) -> None:
        remote_ip = stream.socket.getpeername()[0]
        if sessions.refuses(remote_ip) or handshakes.refuses(remote_ip):
            await trio.aclose_forcefully(stream)
            return
        with handshakes.taken(remote_ip):
            opened = await _accept(stream, identity, network_key, config, rng)
        if opened is None:
            return
        if sessions.refuses(remote_ip):  # handshakes that completed meanwhile filled them
            await trio.aclose_forcefully(stream)
            return
        with sessions.taken(remote_ip):
            await _serve(Session(stream, *opened, config), handler)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, connection, listeners)
        log.info("accepting sessions on %s", address)
        task_status.started(address)


class _Slots:
    """Connections a listener holds in one state, in total and per remote address."""

    def __init__(self, kind: str, total: int, per_ip: int) -> None:
        self._kind = kind
        self._total = total
        self._per_ip = per_ip
        self._held: Counter[str] = Counter()

    def refuses(self, remote_ip: str) -> bool:
        """Whether every slot is taken, in total or for ``remote_ip`` (and log it)."""
        full = self._held.total() >= self._total or self._held[remote_ip] >= self._per_ip
        if full:
            log.info(
                "refused a connection from %s: at the %s limit", redact.peer(remote_ip), self._kind
            )
        return full

    @contextmanager
    def taken(self, remote_ip: str) -> Iterator[None]:
        """Hold one slot for ``remote_ip`` while the block runs."""
        self._held[remote_ip] += 1
        try:
            yield
        finally:
            self._held[remote_ip] -= 1
            if not self._held[remote_ip]:
                del self._held[remote_ip]


async def _accept(
    stream: trio.SocketStream,
    identity: Identity,
    network_key: bytes,
    config: SessionConfig,
    rng: crypto.Rng,
) -> tuple[SessionMachine, HandshakeComplete] | None:
    """The responder's handshake on an accepted connection: the machine and its
    result, or None when it failed (the connection is closed then; its failures
    stay here)."""
    machine = _machine(identity, False, network_key, config, rng)
    try:
        opened = await _handshake(stream, machine, config)
    except (RemoteProtocolError, PeerDisconnected, OperationTimeout) as exc:
        log.info("handshake failed: %s", redact.peer(exc))
        await trio.aclose_forcefully(stream)
        return None
    return machine, opened


async def _serve(session: Session, handler: SessionHandler) -> None:
    """Run the session's tasks and the handler; close when it returns. Its failures stay here."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session._run)
        try:
            await handler(session)
        except (PeerDisconnected, RemoteProtocolError) as exc:
            log.info(
                "session with %s ended: %s", redact.peer(session.remote_address), redact.peer(exc)
            )
            session._abort(str(exc))
        else:
            await session.aclose()
