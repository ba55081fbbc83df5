"""Noise sessions: the tasks that keep an open session alive over TCP or any trio Stream.

Theory of operation (normative text: docs/spec/session.md):
- All protocol logic is in :class:`meshnode.core.session.SessionMachine`; this
  module moves bytes between it and a connection, owns the timers and enforces
  the limits, so it stays thin. Opening a session (dialling, accepting, the
  handshake, the listener's slots) is :mod:`meshnode.net.connect`'s.
- A session runs over any trio Stream (tests use ``memory_stream_pair`` and a
  mock clock: :func:`meshnode.net.connect.start_session`). Over TCP it does its
  own non-blocking I/O on the plain socket (taken from the trio stream after the
  handshake), so a message costs a system call and no task switch: writes go out
  at once, from the caller. What the socket does not take (over another stream:
  everything) waits in a buffer for the *writer* task, which also sends a
  keepalive after ``keepalive_interval`` with nothing sent and closes the
  session when a write makes no progress for ``write_timeout`` (a peer that
  stopped reading). The send queue is bounded in messages not yet written,
  so ``send`` blocks (backpressure) while it is full.
- The *reader* task waits for the socket, reads what is there, feeds the
  machine and hands that read's messages to the handler the session's owner
  gave (``deliver_to``): no queue, no second task. Until a handler is given it
  reads nothing, and TCP pushes back on the peer. It closes the session when no
  message or keepalive arrives for ``idle_timeout`` (a trickle of bytes does
  not count).
- Errors: a broken connection and the peer's protocol errors end that one
  session; the caller sees :class:`PeerDisconnected` with the reason.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from meshnode.core import wire
from meshnode.core.address import join_address
from meshnode.core.session import (
    LENGTH_SIZE,
    MAX_RECORD,
    NEED_DATA,
    HandshakeComplete,
    MessageReceived,
    SessionCounters,
    SessionMachine,
)
from meshnode.errors import (
    LocalProtocolError,
    NonceExhausted,
    PeerDisconnected,
    RemoteProtocolError,
)

log = logging.getLogger(__name__)

_READ_SIZE: Final = LENGTH_SIZE + MAX_RECORD
"""One whole record per read at most, so the machine's inbound buffer stays small."""

_READS_PER_WAKE: Final = 4
"""Reads per wake-up at most before other tasks get a turn."""

SessionHandler = Callable[["Session"], Awaitable[None]]
"""What a listener runs for each open session; the session closes when it returns."""


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """Every timeout and limit of a session and of the listener (docs/spec/session.md, "Limits").

    Times are seconds. Both ends of a session should use the same
    ``max_message``: a message over the receiver's limit ends the session.
    """

    handshake_timeout: float = 5.0
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
    max_sessions: int = 256
    """Open sessions a listener holds at once (handshakes not counted)."""
    max_sessions_per_ip: int = 8
    """Open sessions a listener holds at once from one remote address."""
    max_handshakes: int = 64
    """Accepted connections still handshaking, at once."""
    max_handshakes_per_ip: int = 4
    """Accepted connections still handshaking, at once, from one remote address."""

    def __post_init__(self) -> None:
        times = (self.handshake_timeout, self.keepalive_interval, self.idle_timeout,
                 self.write_timeout)  # fmt: skip
        counts = (self.rekey_after, self.send_queue_size,
                  self.max_sessions, self.max_sessions_per_ip, self.max_handshakes,
                  self.max_handshakes_per_ip)  # fmt: skip
        if min(times) <= 0 or min(counts) < 1 or self.max_message < 0:
            raise ValueError("session timeouts must be positive and limits at least 1")
        if self.keepalive_interval >= self.idle_timeout:
            raise ValueError("keepalive_interval must be shorter than idle_timeout")


@dataclass(frozen=True)
class SessionStatistics:
    """What a session has carried, and why it closed (None while open)."""

    counters: SessionCounters
    queued_to_send: int
    closed_reason: str | None


def _format_address(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    return join_address(sockname[0], sockname[1])


class _SocketIO:
    """The fast path over TCP: non-blocking calls on the plain socket."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._sock = socket.socket(fileno=stream.socket.detach())
        self._sock.setblocking(False)

    def write_now(self, data: bytearray) -> int:
        """Bytes of ``data`` the socket took at once (raises OSError if it broke)."""
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    async def write(self, data: bytearray) -> int:
        await trio.lowlevel.wait_writable(self._sock)
        return self.write_now(data)

    async def read(self) -> tuple[list[bytes], bool]:
        """What one wake-up reads, and whether the peer closed."""
        await trio.lowlevel.wait_readable(self._sock)
        chunks: list[bytes] = []
        for _ in range(_READS_PER_WAKE):
            try:
                data = self._sock.recv(_READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                return chunks, True
            chunks.append(data)
            if len(data) < _READ_SIZE:
                break  # (most likely drained: no second call to learn so)
        return chunks, False

    async def aclose(self) -> None:
        try:
            trio.lowlevel.notify_closing(self._sock)
        finally:
            self._sock.close()


class _StreamIO:
    """Any other trio Stream: every write goes through the writer task."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    def write_now(self, data: bytearray) -> int:
        return 0

    async def write(self, data: bytearray) -> int:
        chunk = bytes(data)  # (``data`` may grow while this waits: count what went)
        await self._stream.send_all(chunk)
        return len(chunk)

    async def read(self) -> tuple[list[bytes], bool]:
        data = await self._stream.receive_some(_READ_SIZE)
        return ([bytes(data)], False) if data else ([], True)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


_BROKEN: Final = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
"""What a broken connection raises: the socket's errors, or a trio stream's."""


def _unreachable(messages: list[bytes]) -> None:
    raise AssertionError("a session reads nothing before deliver_to")


class Session:
    """An open, authenticated session with a peer.

    Made by :func:`open_session` or handed to a :func:`serve_sessions` handler;
    both close it when their block or handler ends.

    Messages go to the handler :meth:`deliver_to` gave, called in the reader task
    with every message one read brought; nothing is read before. Sends are written
    at once when the socket takes them; only what it does not take waits for the
    writer task.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        machine: SessionMachine,
        opened: HandshakeComplete,
        config: SessionConfig,
        remote_address: str | None = None,
    ) -> None:
        self._machine = machine
        self._config = config
        self.peer_key: Final = opened.peer_key
        """The peer's Ed25519 group key, proved by the handshake."""
        self.handshake_hash: Final = opened.handshake_hash
        """The Noise handshake hash: the same on both ends, unique to this session."""
        if remote_address is None:
            assert isinstance(stream, trio.SocketStream)
            remote_address = _format_address(stream.socket.getpeername())
        self.remote_address: Final = remote_address
        """The peer's ``host:port`` as this side sees it."""
        # Over TCP the open session does its own non-blocking I/O on the plain socket:
        # a message costs no task switch and no stream wrapper, only the system call.
        self._io = _SocketIO(stream) if isinstance(stream, trio.SocketStream) else _StreamIO(stream)
        self._out = bytearray()
        """Encrypted bytes the socket has not taken yet."""
        self._ends: deque[int] = deque()
        """For each message not wholly written, the byte count at which it ends."""
        self._queued = 0
        self._written = 0
        self._sent_at = trio.current_time()
        self._heard_at = trio.current_time()
        self._stalled_at: float | None = None
        self._closing = False
        self._wake = trio.Event()
        """Set when the writer has something to do: bytes left over, or a close."""
        self._space = trio.Event()
        """Set (and replaced) when queued messages were written while ``send`` waits
        for room (``_space_wanted``); most writes have nobody waiting."""
        self._space_wanted = False
        self._handler: Callable[[list[bytes]], None] = _unreachable
        self._handler_set = trio.Event()
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
        await trio.lowlevel.checkpoint()
        while len(self._ends) >= self._config.send_queue_size and not self._closed_to_send:
            self._space_wanted = True
            await self._space.wait()
        self.send_many_nowait([data])

    def send_nowait(self, data: bytes) -> None:
        """Queue a message if there is room, for callers that must never block.

        Raises:
            trio.WouldBlock: the send queue is full (the peer is slow).
            LocalProtocolError: ``data`` is over ``max_message``.
            PeerDisconnected: the session is closed.
        """
        self.send_many_nowait([data])

    def send_many_nowait(self, messages: Sequence[bytes]) -> None:
        """Queue several messages in one write: :meth:`send_nowait` for a batch.

        The batch goes whole if the send queue has room for one more message
        when it is given, so one flush of the caller costs one system call.

        Raises:
            trio.WouldBlock: the send queue is full (the peer is slow); nothing was queued.
            LocalProtocolError: a message is over ``max_message``; nothing was queued.
            PeerDisconnected: the session is closed.
        """
        for data in messages:
            self._check_size(data)
        if self._closed_to_send:
            raise self._disconnected()
        if len(self._ends) >= self._config.send_queue_size:
            raise trio.WouldBlock
        try:
            for data in messages:
                self._machine.send(data)
                self._queued += len(self._machine_bytes())
                self._ends.append(self._queued)
        except LocalProtocolError as exc:  # the reader failed it, or nonces ran out
            self._abort(f"the session failed: {exc}")
            raise self._disconnected() from None
        self._sent_at = trio.current_time()
        self._write()

    @property
    def _closed_to_send(self) -> bool:
        return self._closing or self._reason is not None

    def _machine_bytes(self) -> bytes:
        data = self._machine.data_to_send()
        self._out += data
        return data

    def _check_size(self, data: bytes) -> None:
        if len(data) > self._config.max_message:
            raise LocalProtocolError(
                f"a session message is at most {self._config.max_message} bytes, not {len(data)}"
            )

    def _write(self) -> None:
        """Hand the socket what it takes now; the writer task waits for the rest."""
        if not self._out or self._reason is not None:
            return
        try:
            n = self._io.write_now(self._out)
        except OSError:
            self._abort("the connection broke")
            return
        self._wrote(n)

    def _wrote(self, n: int) -> None:
        """``n`` bytes of ``_out`` went out: free them; wake the writer for the rest."""
        if n:
            del self._out[:n]
            self._written += n
            ends = self._ends
            while ends and ends[0] <= self._written:
                ends.popleft()
            self._stalled_at = None
            if self._space_wanted:
                self._space_wanted = False
                self._space.set()
                self._space = trio.Event()
        if self._out:
            if self._stalled_at is None:
                self._stalled_at = trio.current_time()
            self._wake.set()

    def deliver_to(self, handler: Callable[[list[bytes]], None]) -> None:
        """Hand every message received to ``handler``; nothing is read before.

        It is called in the reader task, synchronously, with the messages of one
        read in order (the first call with any the handshake read past its end). It
        must not block; what it raises ends the session's tasks and propagates to
        their nursery. Until a handler is given the session reads nothing, so TCP
        pushes back on the peer and the idle timer does not run.
        """
        self._handler = handler
        self._handler_set.set()

    async def wait_closed(self) -> None:
        """Return once the session has ended (for a caller that handles messages by
        :meth:`deliver_to`); the reason is in :meth:`statistics`."""
        await self._done.wait()

    async def aclose(self) -> None:
        """Write what is queued (for at most ``write_timeout``), then close the connection.

        Safe to call more than once and from any task.
        """
        self._closing = True
        self._wake.set()
        with trio.move_on_after(self._config.write_timeout):
            await self._done.wait()
        self._abort("closed by this side")
        await self._done.wait()

    def statistics(self) -> SessionStatistics:
        """Counters from the machine, queue depths and the close reason."""
        return SessionStatistics(
            counters=self._machine.statistics(),
            queued_to_send=len(self._ends),
            closed_reason=self._reason,
        )

    @property
    def closed(self) -> bool:
        """Whether the session has ended."""
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
            self._closing = True
            self._space.set()  # wakes senders waiting for room: they see the close
            try:
                with trio.CancelScope(shield=True):
                    await self._io.aclose()
            finally:
                # Set even when an outer cancellation escapes the close, or a
                # shielded aclose() elsewhere would wait for it forever.
                self._done.set()

    async def _reader(self) -> None:
        """Read, feed the machine, deliver; watch the idle timer (spec: "Idle timeout").

        One cancel scope per idle period, not one per read: when its deadline
        passes, the session is idle only if nothing was heard since.
        """
        idle_timeout = self._config.idle_timeout
        await self._handler_set.wait()
        self._heard_at = trio.current_time()
        try:
            while True:
                with trio.CancelScope(deadline=self._heard_at + idle_timeout):
                    await self._read()
                    return
                if trio.current_time() >= self._heard_at + idle_timeout:
                    self._abort(f"no message or keepalive for {idle_timeout} s")
                    return
        except RemoteProtocolError as exc:
            self._abort(f"the peer broke the session protocol: {exc}")
        except NonceExhausted as exc:
            self._abort(str(exc))
        except _BROKEN:
            self._abort("the connection broke")

    async def _read(self) -> None:
        """Until the peer closes: every read's messages go to the handler.

        What the handshake read beyond its last message is in the machine already,
        so each pass takes the machine's events before it waits for the socket.
        """
        io, machine = self._io, self._machine
        ended = False
        while True:
            messages: list[bytes] = []
            while (event := machine.next_event()) is not NEED_DATA:
                self._heard_at = trio.current_time()
                if isinstance(event, MessageReceived):
                    messages.append(event.data)
            if messages:
                self._handler(messages)
            if ended:
                self._abort("the peer closed the connection")
                return
            chunks, ended = await io.read()
            for data in chunks:
                machine.receive_data(data)

    async def _writer(self) -> None:
        """Write what the socket did not take at once; a keepalive when idle; the rest
        of the queue and the end on aclose (spec: "Keepalives", "Write timeout")."""
        config = self._config
        while True:
            if self._out:
                stalled = self._stalled_at if self._stalled_at is not None else trio.current_time()
                with trio.move_on_at(stalled + config.write_timeout):
                    try:
                        self._wrote(await self._io.write(self._out))
                    except _BROKEN:
                        self._abort("the connection broke")
                        return
                    continue
                self._abort(f"the peer read nothing for {config.write_timeout} s")
                return
            if self._closing:
                self._abort("closed by this side")
                return
            due = self._sent_at + config.keepalive_interval
            if trio.current_time() >= due:
                try:
                    self._machine.send_keepalive()
                except LocalProtocolError as exc:
                    self._abort(f"the session failed: {exc}")
                    return
                self._queued += len(self._machine_bytes())
                self._sent_at = trio.current_time()
                self._write()
                continue
            with trio.move_on_at(due):
                await self._wake.wait()
            self._wake = trio.Event()
