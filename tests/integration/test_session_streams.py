"""Sessions over in-memory trio streams and a mock clock: the same Session as over
TCP, its timers driven by ``trio.testing.MockClock`` instead of waited out."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from meshnode.core.session import OPEN_MESH_KEY
from meshnode.errors import PeerDisconnected
from meshnode.net.connect import _handshake, _machine, start_session
from meshnode.net.transport import Session, SessionConfig
from tests.conftest import make_identity
from tests.inbox import inbox, received

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ALICE, BOB = make_identity("Local 12"), make_identity("Tenants United")
CONFIG = SessionConfig(keepalive_interval=5.0, idle_timeout=15.0, write_timeout=10.0)


@asynccontextmanager
async def pair(
    streams: tuple[trio.abc.Stream, trio.abc.Stream],
) -> AsyncIterator[tuple[Session, Session]]:
    """Alice's and Bob's sessions over ``streams``; their tasks end with the block."""
    left, right = streams
    sessions: dict[str, Session] = {}
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as handshakes:
            handshakes.start_soon(start, nursery, sessions, "alice", left)
            handshakes.start_soon(start, nursery, sessions, "bob", right)
        yield sessions["alice"], sessions["bob"]
        nursery.cancel_scope.cancel()


async def start(
    nursery: trio.Nursery, sessions: dict[str, Session], name: str, stream: trio.abc.Stream
) -> None:
    initiator = name == "alice"
    sessions[name] = await start_session(
        nursery, stream, initiator=initiator, identity=ALICE if initiator else BOB,
        config=CONFIG, remote_address=name,
    )  # fmt: skip


async def test_messages_cross_both_ways_over_memory_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pair(trio.testing.memory_stream_pair()) as (a, b):
        assert a.peer_key == BOB.public_key
        assert b.peer_key == ALICE.public_key
        assert a.handshake_hash == b.handshake_hash
        big = bytes(range(256)) * 200
        a.send_many_nowait([b"one", big])
        await b.send(b"back")
        assert await received(b) == b"one"
        assert await received(b) == big
        assert await received(a) == b"back"
        await a.aclose()
        with pytest.raises(PeerDisconnected):
            await received(b)


async def test_keepalives_hold_an_idle_session_open(autojump_clock: trio.testing.MockClock) -> None:
    async with pair(trio.testing.memory_stream_pair()) as (a, b):
        await trio.sleep(10 * CONFIG.idle_timeout)  # (mock time: no wait at all)
        assert not a.closed
        assert not b.closed
        await b.send(b"still here")
        assert await received(a) == b"still here"
        assert a.statistics().counters.keepalives_received >= 20


async def test_a_peer_that_stops_reading_is_closed_after_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over a lockstep pair a write waits until the other side reads: a peer that
    completes the handshake and then reads nothing stalls Alice's writes, and the
    write timeout ends the session."""
    left, right = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        deaf = _machine(BOB, False, OPEN_MESH_KEY, CONFIG, os.urandom)
        nursery.start_soon(_handshake, right, deaf, CONFIG)
        a = await start_session(nursery, left, initiator=True, identity=ALICE, config=CONFIG)
        a.send_nowait(b"x" * 1000)
        stalled_at = trio.current_time()
        await a.wait_closed()
        assert "read nothing" in (a.statistics().closed_reason or "")
        assert trio.current_time() - stalled_at >= CONFIG.write_timeout
        nursery.cancel_scope.cancel()


async def test_a_silent_peer_is_closed_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that completes the handshake and then sends nothing, not even
    keepalives, is dropped once ``idle_timeout`` passes without a word."""
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        silent = _machine(BOB, False, OPEN_MESH_KEY, CONFIG, os.urandom)
        nursery.start_soon(_handshake, right, silent, CONFIG)
        a = await start_session(nursery, left, initiator=True, identity=ALICE, config=CONFIG)
        inbox(a)  # (its owner reads: only the idle timer can end it)
        opened_at = trio.current_time()
        await a.wait_closed()
        assert trio.current_time() - opened_at >= CONFIG.idle_timeout
        assert "no message or keepalive" in (a.statistics().closed_reason or "")
        nursery.cancel_scope.cancel()


async def test_nothing_is_read_before_a_handler_is_given(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Until its owner says where messages go a session reads nothing (the peer is
    pushed back by the stream) and its idle timer does not run; then everything
    comes, in order."""
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        sessions: dict[str, Session] = {}

        async def open_end(name: str, stream: trio.abc.Stream) -> None:
            sessions[name] = await start_session(
                nursery, stream, initiator=name == "a", identity=ALICE if name == "a" else BOB,
                config=CONFIG,
            )  # fmt: skip

        async with trio.open_nursery() as handshakes:
            handshakes.start_soon(open_end, "a", left)
            handshakes.start_soon(open_end, "b", right)
        a, b = sessions["a"], sessions["b"]
        inbox(b)  # (b reads: a's keepalives flow)
        b.send_many_nowait([b"one", b"two"])
        await trio.sleep(10 * CONFIG.idle_timeout)  # (mock time)
        assert not a.closed
        assert a.statistics().counters.messages_received == 0
        assert [await received(a), await received(a)] == [b"one", b"two"]
        nursery.cancel_scope.cancel()
