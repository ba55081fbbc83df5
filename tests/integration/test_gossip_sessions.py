"""The gossip machine over real sessions on in-memory streams, under a mock clock:
the shell's job (hand what a session reads to the machine, write what the machine
says, tick at its deadlines, store and accept) with no socket and no waiting."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
import trio.testing

from meshnode.core.bulletin import Bulletin
from meshnode.core.gossip import BulletinReceived, Gossip, GossipConfig
from meshnode.core.sync import MemoryHoldings
from meshnode.core.wire import PUBLIC_TOPIC, PeerId
from meshnode.net.connect import start_session
from meshnode.net.transport import Session, SessionConfig
from tests.conftest import make_identity

if TYPE_CHECKING:
    from meshnode.core.identity import Identity

NOW = 1_800_000_000
CONFIG = SessionConfig(keepalive_interval=5.0, idle_timeout=15.0)


@dataclass
class Shell:
    """The node's part, reduced to what gossip needs: one session per peer."""

    identity: Identity
    holdings: MemoryHoldings = field(default_factory=MemoryHoldings)
    sessions: dict[PeerId, Session] = field(default_factory=dict)
    arrived: list[Bulletin] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.gossip = Gossip(
            local=PeerId(self.identity.public_key), holdings=self.holdings, rng=os.urandom,
            now=trio.current_time(), config=GossipConfig(heartbeat=1.0),
        )  # fmt: skip
        self.gossip.subscribe(PUBLIC_TOPIC, now=trio.current_time())

    def attach(self, session: Session) -> None:
        peer = PeerId(session.peer_key)
        self.sessions[peer] = session
        self.gossip.add_peer(peer, session.handshake_hash, trio.current_time())
        session.deliver_to(lambda data: self.received(peer, data))
        self.flush()

    def received(self, peer: PeerId, messages: list[bytes]) -> None:
        now = trio.current_time()
        for data in messages:
            for event in self.gossip.receive_data(peer, data, now):
                if isinstance(event, BulletinReceived):  # (the store pass, at once)
                    self.holdings.add(event.bulletin)
                    self.arrived.append(event.bulletin)
                    self.gossip.accept(event.bulletin.id, now)
        self.flush()
        self.changed.set()
        self.changed = trio.Event()

    def flush(self) -> None:
        for peer, group in itertools.groupby(self.gossip.data_to_send(), key=lambda x: x[0]):
            self.sessions[peer].send_many_nowait([payload for _, payload in group])

    async def tick(self) -> None:
        while True:
            await trio.sleep_until(self.gossip.next_deadline())
            self.gossip.tick(trio.current_time())
            self.flush()


async def connect(nursery: trio.Nursery, a: Shell, b: Shell) -> None:
    left, right = trio.testing.memory_stream_pair()
    sessions: dict[str, Session] = {}

    async def open_end(name: str, stream: trio.abc.Stream, shell: Shell) -> None:
        sessions[name] = await start_session(
            nursery, stream, initiator=name == "a", identity=shell.identity, config=CONFIG,
            remote_address=name,
        )  # fmt: skip

    async with trio.open_nursery() as handshakes:
        handshakes.start_soon(open_end, "a", left, a)
        handshakes.start_soon(open_end, "b", right, b)
    a.attach(sessions["a"])
    b.attach(sessions["b"])


async def test_a_bulletin_crosses_a_chain_of_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """a - b - c over memory streams: a's bulletin reaches c through b, and an hour of
    mock time later every session is still open (keepalives) with nothing resent."""
    a, b, c = (Shell(make_identity(name)) for name in ("Local 12", "Tenants United", "Food Bank"))
    async with trio.open_nursery() as nursery:
        for shell in (a, b, c):
            nursery.start_soon(shell.tick)
        await connect(nursery, a, b)
        await connect(nursery, b, c)
        await trio.sleep(2.0)  # (mock time: the HELLOs and a heartbeat)
        bulletin = Bulletin.seal(
            a.identity, None, b"strike vote Friday", seq=1, prev=None, now=NOW, rng=os.urandom
        )
        a.holdings.add(bulletin)
        a.gossip.publish(bulletin, trio.current_time())
        a.flush()
        while not c.arrived:
            await c.changed.wait()
        assert c.arrived == [bulletin]
        assert b.arrived == [bulletin]
        await trio.sleep(3600.0)
        assert all(not s.closed for shell in (a, b, c) for s in shell.sessions.values())
        assert (len(b.arrived), len(c.arrived)) == (1, 1)
        nursery.cancel_scope.cancel()
