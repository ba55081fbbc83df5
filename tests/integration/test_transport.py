"""Noise sessions over real loopback TCP: handshake, framing, limits and timeouts.

Network-test rules for this module:
1. Real sockets on 127.0.0.x only, never another address; every listener
   binds port 0, and each test uses its own 127.0.0.N so that per-IP limits
   see distinct peers (Linux routes all of 127/8 to loopback).
2. Every test runs under ``trio.fail_after``; no autojump clock (it must
   never drive real sockets).
3. No fixed sleeps for synchronisation: tests wait on events, on EOF, on
   ``wait_all_tasks_blocked``. The one sleep (keepalives) is the passing of
   time under test, not a way to wait for another task.
4. Timeouts under test are configured short (tenths of a second).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from meshnode.core import crypto
from meshnode.core.address import split_address
from meshnode.core.session import NEED_DATA, HandshakeComplete, MessageReceived, SessionMachine
from meshnode.errors import (
    HandshakeError,
    LocalProtocolError,
    OperationTimeout,
    PeerDisconnected,
)
from meshnode.net.connect import connect_session, open_session, serve_sessions
from meshnode.net.transport import Session, SessionConfig
from tests.conftest import make_identity, seeded_rng
from tests.inbox import received

TIMEOUT = 20
OTHER_KEY = hashlib.blake2b(b"a private mesh", digest_size=32).digest()


ALICE, BOB, CAROL = make_identity("alice"), make_identity("bob"), make_identity("carol")


Handler = Callable[[Session], Awaitable[None]]


@asynccontextmanager
async def _listening(
    handler: Handler, host: str, config: SessionConfig | None = None, **kwargs: bytes
) -> AsyncIterator[str]:
    """BOB listening on ``host`` (port 0); yields the bound address, stops on exit."""
    async with trio.open_nursery() as nursery:
        serve = partial(
            serve_sessions, handler, host, 0, identity=BOB, config=config or SessionConfig(),
            **kwargs,
        )  # fmt: skip
        address: str = await nursery.start(serve)
        yield address
        nursery.cancel_scope.cancel()


async def _echo(session: Session) -> None:
    """Answer each message with its BLAKE2b-256, until the peer goes."""
    while True:
        data = await received(session)
        await session.send(crypto.blake2b_256(data))


def _echo_noting(opened: list[Session]) -> Handler:
    """:func:`_echo`, noting each session it is handed first."""

    async def handler(session: Session) -> None:
        opened.append(session)
        await _echo(session)

    return handler


async def _never_reads(session: Session) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def _to_a_peer_that_never_reads(
    host: str, config: SessionConfig
) -> AsyncIterator[Session]:
    async with (
        _listening(_never_reads, host) as address,
        open_session(address, identity=ALICE, config=config) as session,
    ):
        yield session


async def _raw_handshake(stream: trio.SocketStream, machine: SessionMachine) -> bytes:
    """Drive an initiator machine by hand; return message 3 without sending it."""
    await stream.send_all(machine.data_to_send())
    while True:
        event = machine.next_event()
        if isinstance(event, HandshakeComplete):
            return machine.data_to_send()
        assert event is NEED_DATA
        data = await stream.receive_some(65536)
        assert data, "the listener closed during the handshake"
        machine.receive_data(data)


async def _read_to_eof(stream: trio.SocketStream) -> bytes:
    received = b""
    while data := await stream.receive_some(65536):
        received += data
    return received


def _flip(data: bytes, byte: int) -> bytes:
    out = bytearray(data)
    out[byte] ^= 0x10
    return bytes(out)


async def test_two_sessions_exchange_messages_both_ways() -> None:
    with trio.fail_after(TIMEOUT):
        seen: list[Session] = []
        async with _listening(_echo_noting(seen), "127.0.0.2") as address:
            async with open_session(address, identity=ALICE, local_host="127.0.0.3") as session:
                assert session.peer_key == BOB.public_key
                assert session.remote_address == address
                for message in (b"", b"hello", bytes(range(256)) * 257, bytes(65_792)):
                    await session.send(message)
                    assert await received(session) == crypto.blake2b_256(message)
                (theirs,) = seen
                assert theirs.peer_key == ALICE.public_key
                assert theirs.handshake_hash == session.handshake_hash
                assert theirs.remote_address.startswith("127.0.0.3:")
                stats = session.statistics()
                assert stats.counters.messages_sent == 4
                assert stats.counters.messages_received == 4
                assert stats.closed_reason is None
            assert session.closed
            with pytest.raises(PeerDisconnected, match="closed by this side"):
                await session.send(b"after close")


async def test_a_wrong_network_key_cannot_open_a_session_and_the_listener_serves_on() -> None:
    with trio.fail_after(TIMEOUT):
        opened: list[Session] = []
        async with _listening(_echo_noting(opened), "127.0.0.4") as address:
            with pytest.raises(HandshakeError, match="network key"):
                async with open_session(address, identity=CAROL, network_key=OTHER_KEY):
                    pytest.fail("a session opened with the wrong network key")
            async with open_session(address, identity=ALICE) as session:
                await session.send(b"still serving?")
                assert await received(session) == crypto.blake2b_256(b"still serving?")
        assert [s.peer_key for s in opened] == [ALICE.public_key]


async def test_a_private_mesh_works_with_its_own_key() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            _listening(_echo, "127.0.0.5", network_key=OTHER_KEY) as address,
            open_session(address, identity=ALICE, network_key=OTHER_KEY) as session,
        ):
            await session.send(b"private")
            assert await received(session) == crypto.blake2b_256(b"private")


async def test_a_dialer_without_the_network_key_gets_nothing_back() -> None:
    """After message 1 the responder sends zero bytes and closes: not even its static key."""
    with trio.fail_after(TIMEOUT):
        async with _listening(_echo, "127.0.0.6") as address:
            stream = await trio.open_tcp_stream(*split_address(address))
            outsider = SessionMachine(
                CAROL, initiator=True, rng=seeded_rng("carol"), max_message=100, rekey_after=10,
                network_key=OTHER_KEY,
            )  # fmt: skip
            await stream.send_all(outsider.data_to_send())
            assert await _read_to_eof(stream) == b""
            await stream.aclose()


@pytest.mark.parametrize("byte", [2, 20, 40, 49])  # length prefix excluded: in e, and in the tag
async def test_a_bit_flipped_message_1_gets_nothing_back(byte: int) -> None:
    with trio.fail_after(TIMEOUT):
        async with _listening(_echo, "127.0.0.7") as address:
            dialer = SessionMachine(ALICE, initiator=True, rng=seeded_rng("alice"),
                                    max_message=100, rekey_after=10)  # fmt: skip
            async with await trio.open_tcp_stream(*split_address(address)) as stream:
                await stream.send_all(_flip(dialer.data_to_send(), byte))
                assert await _read_to_eof(stream) == b""


async def test_a_bit_flipped_message_3_never_opens_a_session() -> None:
    with trio.fail_after(TIMEOUT):
        opened: list[Session] = []
        async with _listening(_echo_noting(opened), "127.0.0.8") as address:
            dialer = SessionMachine(ALICE, initiator=True, rng=seeded_rng("alice1"),
                                    max_message=100, rekey_after=10)  # fmt: skip
            async with await trio.open_tcp_stream(*split_address(address)) as stream:
                message_3 = await _raw_handshake(stream, dialer)
                await stream.send_all(_flip(message_3, 100))
                assert await _read_to_eof(stream) == b""
            assert opened == []
            # The same steps without the flip open a session.
            stream = await trio.open_tcp_stream(*split_address(address))
            dialer = SessionMachine(ALICE, initiator=True, rng=seeded_rng("alice2"),
                                    max_message=100, rekey_after=10)  # fmt: skip
            await stream.send_all(await _raw_handshake(stream, dialer))
            dialer.send(b"hello")
            await stream.send_all(dialer.data_to_send())
            while (event := dialer.next_event()) is NEED_DATA:
                dialer.receive_data(await stream.receive_some(65536))
            assert event == MessageReceived(crypto.blake2b_256(b"hello"))
            assert [s.peer_key for s in opened] == [ALICE.public_key]
            await stream.aclose()


async def test_a_bit_flipped_message_2_aborts_the_dialer_and_sends_nothing_more() -> None:
    with trio.fail_after(TIMEOUT):
        after_message_2: list[bytes] = []
        done = trio.Event()

        async def tampering_responder(stream: trio.SocketStream) -> None:
            machine = SessionMachine(BOB, initiator=False, rng=seeded_rng("bob"),
                                     max_message=100, rekey_after=10)  # fmt: skip
            message_2 = b""
            while not message_2:
                machine.receive_data(await stream.receive_some(65536))
                assert machine.next_event() is NEED_DATA
                message_2 = machine.data_to_send()
            await stream.send_all(_flip(message_2, 60))
            after_message_2.append(await _read_to_eof(stream))
            done.set()

        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(
                partial(trio.serve_tcp, tampering_responder, 0, host="127.0.0.9")
            )
            host, port = listener.socket.getsockname()
            with pytest.raises(HandshakeError, match="did not decrypt"):
                async with open_session(f"{host}:{port}", identity=ALICE):
                    pytest.fail("a session opened on a tampered message 2")
            await done.wait()
            nursery.cancel_scope.cancel()
        assert after_message_2 == [b""]  # no message 3, nothing at all


async def _held_sessions(
    stack: AsyncExitStack, address: str, local_hosts: list[str]
) -> list[Session]:
    nursery = await stack.enter_async_context(trio.open_nursery())
    sessions = []
    for host in local_hosts:
        session = await connect_session(nursery, address, identity=ALICE, local_host=host)
        stack.push_async_callback(session.aclose)
        sessions.append(session)
    return sessions


async def test_the_per_ip_session_limit() -> None:
    config = SessionConfig(max_sessions=10, max_sessions_per_ip=2)
    with trio.fail_after(TIMEOUT):
        async with _listening(_echo, "127.0.0.10", config) as address, AsyncExitStack() as stack:
            await _held_sessions(stack, address, ["127.0.0.11", "127.0.0.11"])
            with pytest.raises(HandshakeError, match="session limit"):
                async with open_session(address, identity=ALICE, local_host="127.0.0.11"):
                    pytest.fail("a third session from one address")
            async with open_session(address, identity=ALICE, local_host="127.0.0.12") as other:
                await other.send(b"another address")
                assert await received(other) == crypto.blake2b_256(b"another address")


async def test_the_total_session_limit_and_its_release() -> None:
    config = SessionConfig(max_sessions=2, max_sessions_per_ip=10)
    ended = trio.Event()

    async def handler(session: Session) -> None:
        try:
            await _echo(session)
        finally:
            ended.set()

    with trio.fail_after(TIMEOUT):
        async with _listening(handler, "127.0.0.13", config) as address, AsyncExitStack() as stack:
            first, _second = await _held_sessions(stack, address, ["127.0.0.14", "127.0.0.15"])
            with pytest.raises(HandshakeError, match="session limit"):
                async with open_session(address, identity=ALICE, local_host="127.0.0.16"):
                    pytest.fail("a third session past max_sessions")
            await first.aclose()
            await ended.wait()
            await trio.testing.wait_all_tasks_blocked()  # the listener released the slot
            async with open_session(address, identity=ALICE, local_host="127.0.0.16") as third:
                await third.send(b"a slot freed")
                assert await received(third) == crypto.blake2b_256(b"a slot freed")


async def _silent_connections(
    nursery: trio.Nursery, address: str, local_hosts: list[str], closed: list[str], all_closed: int
) -> trio.Event:
    """Connect from each of ``local_hosts`` and say nothing; note in ``closed`` the
    source of each connection the listener closes. The event is set once
    ``all_closed`` connections were closed."""
    done = trio.Event()

    async def silent(stream: trio.SocketStream, host: str) -> None:
        async with stream:
            assert await _read_to_eof(stream) == b""
        closed.append(host)
        if len(closed) == all_closed:
            done.set()

    for host in local_hosts:
        stream = await trio.open_tcp_stream(*split_address(address), local_address=host)
        nursery.start_soon(silent, stream, host)
    return done


async def test_silent_connections_leave_room_for_honest_sessions_and_our_own_dials() -> None:
    """The attack: silent TCP connections from several addresses, more than
    ``max_sessions``. Only the handshake slots fill; sessions and dials go on."""
    config = SessionConfig(
        max_sessions=4, max_sessions_per_ip=4, max_handshakes=8, max_handshakes_per_ip=2,
        handshake_timeout=TIMEOUT * 2,  # the silent ones stay for the whole test
    )  # fmt: skip
    attackers = [f"127.0.0.{n}" for n in (40, 41, 42) for _ in range(4)]
    closed: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with (
            _listening(_echo, "127.0.0.43", config) as address,
            trio.open_nursery() as nursery,
        ):
            refused = await _silent_connections(nursery, address, attackers, closed, 6)
            await refused.wait()  # two per address over max_handshakes_per_ip
            assert Counter(closed) == dict.fromkeys(attackers, 2)
            async with AsyncExitStack() as stack:
                honest = await _held_sessions(stack, address, ["127.0.0.44"] * 4)
                for session in honest:
                    await session.send(b"still served")
                    assert await received(session) == crypto.blake2b_256(b"still served")
                with pytest.raises(HandshakeError, match="session limit"):
                    async with open_session(address, identity=ALICE, local_host="127.0.0.45"):
                        pytest.fail("a session past max_sessions")
            async with trio.open_nursery() as carols:  # BOB dials from his listening address
                serve = partial(serve_sessions, _echo, "127.0.0.46", 0, identity=CAROL)
                carol = await carols.start(serve)
                async with open_session(carol, identity=BOB, local_host="127.0.0.43") as dialled:
                    await dialled.send(b"our own dial")
                    assert await received(dialled) == crypto.blake2b_256(b"our own dial")
                carols.cancel_scope.cancel()
            assert len(closed) == 6  # the six within the limits are still handshaking
            nursery.cancel_scope.cancel()


async def test_silent_connections_are_closed_at_the_handshake_timeout_freeing_their_slots() -> None:
    config = SessionConfig(max_handshakes_per_ip=2, handshake_timeout=0.5)
    closed: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with (
            _listening(_echo, "127.0.0.47", config) as address,
            trio.open_nursery() as nursery,
        ):
            silent = ["127.0.0.48"] * 2  # within the limits: only the timeout closes them
            timed_out = await _silent_connections(nursery, address, silent, closed, 2)
            await timed_out.wait()
            await trio.testing.wait_all_tasks_blocked()  # the listener released the slots
            async with open_session(address, identity=ALICE, local_host="127.0.0.48") as session:
                await session.send(b"a slot freed")
                assert await received(session) == crypto.blake2b_256(b"a slot freed")


async def test_a_handshake_that_completes_when_the_sessions_are_full_is_closed() -> None:
    """Both handshakes began with a free session slot; the second to end finds none."""
    config = SessionConfig(max_sessions=1)
    first_opened = trio.Event()

    async def handler(session: Session) -> None:
        first_opened.set()
        await _echo(session)

    with trio.fail_after(TIMEOUT):
        async with _listening(handler, "127.0.0.49", config) as address:
            streams = [
                await trio.open_tcp_stream(*split_address(address), local_address="127.0.0.50")
                for _ in range(2)
            ]
            messages_3 = []
            for n, stream in enumerate(streams):
                dialer = SessionMachine(ALICE, initiator=True, rng=seeded_rng(f"alice{n}"),
                                        max_message=100, rekey_after=10)  # fmt: skip
                messages_3.append(await _raw_handshake(stream, dialer))
            await streams[0].send_all(messages_3[0])
            await first_opened.wait()
            await streams[1].send_all(messages_3[1])
            assert await _read_to_eof(streams[1]) == b""
            for stream in streams:
                await stream.aclose()


async def test_the_idle_timeout_closes_a_silent_peer() -> None:
    config = SessionConfig(keepalive_interval=0.1, idle_timeout=0.4)
    reasons: list[str] = []
    ended = trio.Event()

    async def handler(session: Session) -> None:
        try:
            await received(session)
        except PeerDisconnected as exc:
            reasons.append(str(exc))
            raise
        finally:
            ended.set()

    with trio.fail_after(TIMEOUT):
        async with _listening(handler, "127.0.0.17", config) as address:
            silent = SessionMachine(ALICE, initiator=True, rng=seeded_rng("silent"),
                                    max_message=100, rekey_after=100)  # fmt: skip
            async with await trio.open_tcp_stream(*split_address(address)) as stream:
                await stream.send_all(await _raw_handshake(stream, silent))
                silent.receive_data(await _read_to_eof(stream))  # keepalives, then EOF
            events = []
            while (event := silent.next_event()) is not NEED_DATA:
                events.append(event)
            assert events  # the listener sent keepalives while it waited
            await ended.wait()
            assert "no message or keepalive" in reasons[0]


async def test_an_oversize_message_is_refused_on_both_ends() -> None:
    reasons: list[str] = []

    async def handler(session: Session) -> None:
        try:
            await _echo(session)
        except PeerDisconnected as exc:
            reasons.append(str(exc))
            raise

    big = SessionConfig(max_message=200_000)
    with trio.fail_after(TIMEOUT):
        async with _listening(handler, "127.0.0.19") as address:
            async with open_session(address, identity=ALICE, config=big) as session:
                with pytest.raises(LocalProtocolError, match="at most 200000"):
                    await session.send(bytes(200_001))
                await session.send(bytes(100_000))
                with pytest.raises(PeerDisconnected, match="closed the connection"):
                    await received(session)
            assert "over the 65792-byte limit" in reasons[0]
            async with open_session(address, identity=ALICE) as session:  # still serving
                await session.send(b"ok")
                assert await received(session) == crypto.blake2b_256(b"ok")


async def test_rekeying_after_a_few_messages_keeps_working() -> None:
    config = SessionConfig(rekey_after=3)
    with trio.fail_after(TIMEOUT):
        async with (
            _listening(_echo, "127.0.0.20", config) as address,
            open_session(address, identity=ALICE, config=config) as session,
        ):
            # 31 each way: the echo of message 31 arrives after the REKEY record
            # that followed echo 30, so exactly 10 rekeys have been read by then.
            for n in range(31):
                await session.send(b"message %d" % n)
                assert await received(session) == crypto.blake2b_256(b"message %d" % n)
            counters = session.statistics().counters
            assert counters.rekeys_sent == 10
            assert counters.rekeys_received == 10


async def test_a_peer_that__never_reads_makes_send_block() -> None:
    """Queues and TCP buffers fill, then ``send`` blocks: memory stays bounded."""
    config = SessionConfig(send_queue_size=2)

    with trio.fail_after(TIMEOUT):
        async with _to_a_peer_that_never_reads("127.0.0.21", config) as session:
            sent = 0
            with trio.move_on_after(2) as blocked:
                while True:
                    await session.send(bytes(65_536))
                    sent += 1
            assert blocked.cancelled_caught
            # The send queue of 2 and the kernel's socket buffers (a few MB on
            # loopback; the peer reads nothing): far below unbounded.
            assert sent < 500
            assert session.statistics().queued_to_send == 2
            with pytest.raises(trio.WouldBlock):
                session.send_nowait(b"no room")
            session._abort("test over")  # do not wait write_timeout to flush


async def test_a_stalled_write_closes_the_session() -> None:
    config = SessionConfig(send_queue_size=2, write_timeout=0.3)

    with trio.fail_after(TIMEOUT):
        async with _to_a_peer_that_never_reads("127.0.0.22", config) as session:
            with pytest.raises(PeerDisconnected, match="read nothing"):  # noqa: PT012
                while True:  # fills the queues, then the writer stalls and gives up
                    await session.send(bytes(65_536))


async def test_a_handler_that_returns_flushes_and_closes() -> None:
    async def says_goodbye(session: Session) -> None:
        session.send_nowait(b"bye")
        await session.send(b"for now")

    with trio.fail_after(TIMEOUT):
        async with (
            _listening(says_goodbye, "127.0.0.24") as address,
            open_session(address, identity=ALICE) as session,
        ):
            assert await received(session) == b"bye"
            assert await received(session) == b"for now"
            with pytest.raises(PeerDisconnected, match="closed the connection"):
                await received(session)
            assert session.statistics().closed_reason == "the peer closed the connection"
            with pytest.raises(PeerDisconnected):
                session.send_nowait(b"too late")


async def test_an_error_in_the_block_closes_the_session_and_propagates_as_itself() -> None:
    ended = trio.Event()

    async def handler(session: Session) -> None:
        try:
            await _echo(session)
        finally:
            ended.set()

    with trio.fail_after(TIMEOUT):
        async with _listening(handler, "127.0.0.25") as address:
            with pytest.raises(KeyError, match="in the block"):
                async with open_session(address, identity=ALICE):
                    raise KeyError("in the block")
            await ended.wait()  # the listener saw the session close


async def test_a_silent_listener_times_the_handshake_out() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    config = SessionConfig(handshake_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.26"))
            host, port = listener.socket.getsockname()
            with pytest.raises(OperationTimeout, match="handshake did not finish"):
                async with open_session(f"{host}:{port}", identity=ALICE, config=config):
                    pytest.fail("a session with a silent listener")
            nursery.cancel_scope.cancel()


async def test_a_silent_dialer_is_closed_after_the_handshake_timeout() -> None:
    config = SessionConfig(handshake_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with (
            _listening(_echo, "127.0.0.27", config) as address,
            await trio.open_tcp_stream(*split_address(address)) as stream,
        ):
            assert await _read_to_eof(stream) == b""


async def test_connecting_to_nothing_is_peer_disconnected() -> None:
    with trio.fail_after(TIMEOUT):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.23"))[0]
        host, port = listener.socket.getsockname()
        await listener.aclose()  # a port that was free a moment ago, now closed
        with pytest.raises(PeerDisconnected, match="cannot connect"):
            async with open_session(f"{host}:{port}", identity=ALICE):
                pytest.fail("connected to a closed port")


def test_session_config_is_checked() -> None:
    with pytest.raises(ValueError, match="keepalive_interval"):
        SessionConfig(keepalive_interval=60, idle_timeout=30)
    for limit in ("max_sessions", "max_handshakes", "max_handshakes_per_ip"):
        with pytest.raises(ValueError, match="positive"):
            SessionConfig(**{limit: 0})


async def test_a_handler_gets_every_message_in_order() -> None:
    """``deliver_to`` hands each read's messages to a function in the reader task."""
    got: list[bytes] = []
    all_in = trio.Event()

    async def sends_a_burst(session: Session) -> None:
        session.send_many_nowait([b"one", b"two"])
        for n in range(3, 51):
            await session.send(b"%d" % n)
        await received(session)  # (until the dialer closes)

    with trio.fail_after(TIMEOUT):
        async with (
            _listening(sends_a_burst, "127.0.0.28") as address,
            open_session(address, identity=ALICE) as session,
        ):

            def handler(messages: list[bytes]) -> None:
                got.extend(messages)
                if len(got) == 50:
                    all_in.set()

            session.deliver_to(handler)
            await all_in.wait()
            assert got == [b"one", b"two", *(b"%d" % n for n in range(3, 51))]


async def test_a_batch_is_queued_whole_or_not_at_all() -> None:
    config = SessionConfig(send_queue_size=1, max_message=1000)

    with trio.fail_after(TIMEOUT):
        async with _to_a_peer_that_never_reads("127.0.0.29", config) as session:
            with pytest.raises(LocalProtocolError):
                session.send_many_nowait([b"fits", bytes(1001)])
            assert session.statistics().counters.messages_sent == 0
            with pytest.raises(trio.WouldBlock):  # noqa: PT012
                while True:  # until the kernel's buffers are full and one message waits
                    session.send_many_nowait([bytes(1000)] * 8)
                    await trio.testing.wait_all_tasks_blocked()
            assert session.statistics().queued_to_send >= 1
            session._abort("test over")  # do not wait write_timeout to flush
