"""The scripted attacker of the hostile suite: throw-away identities that speak the real
wire protocol, with meshnode's own session and message code, over real TCP sessions.

A :class:`WirePeer` is one session with the victim, driven message by message: it says
HELLO like any node, then sends what the test tells it (announcements it never honours,
deposits, bulletins from 1970) and records everything the victim sends back, so a test
can wait on what arrived (never on a clock) and see what the victim relayed. The same
class plays the honest depositors and the witnesses, which differ only in what they send.

Network rules: loopback only; each peer dials from the 127.0.5.N its test gives it, so
the victim's per-address limits see distinct addresses.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from meshnode.core import crypto, wire
from meshnode.core.bulletin import Bulletin
from meshnode.core.wire import PUBLIC_TOPIC, BulletinId
from meshnode.errors import PeerDisconnected
from meshnode.net.connect import open_session
from tests.conftest import make_identity
from tests.inbox import received

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from meshnode.core.identity import Identity
    from meshnode.net.transport import Session

SUBNET = "127.0.5"
"""The scripted peers dial from 127.0.5.N (victims and honest nodes are elsewhere)."""


def throwaway(label: str, n: int) -> Identity:
    """The ``n``-th throw-away key of an attack: free to make, one per session or
    author (seeded, so a run is repeatable)."""
    return make_identity(f"throw-away {label} {n}")


def public_bulletin(
    author: Identity, text: bytes, *, created_at: int | None = None, expires_at: int | None = None
) -> Bulletin:
    """The first public bulletin of ``author`` (created now unless told otherwise)."""
    now = int(time.time()) if created_at is None else created_at
    return Bulletin.seal(
        author, None, text, seq=1, prev=None, now=now, expires_at=expires_at, rng=os.urandom
    )


def direct_bulletins(author: Identity, recipient: bytes, texts: Sequence[bytes]) -> list[Bulletin]:
    """Direct bulletins from ``author``, each sealed for ``recipient`` alone, chained
    from seq 1 as an author's stream is."""
    made: list[Bulletin] = []
    for seq, text in enumerate(texts, 1):
        prev = made[-1].id if made else None
        now = int(time.time())
        made.append(
            Bulletin.seal(author, [recipient], text, seq=seq, prev=prev, now=now, rng=os.urandom)
        )
    return made


def filler(size: int) -> bytes:
    """Text of ``size`` bytes (valid UTF-8, as a text bulletin needs)."""
    return b"x" * size


class WirePeer:
    """One session with the victim, spoken by a script.

    It answers nothing on its own (no WANT is honoured unless ``serving`` holds the
    bulletin, no SYNC is answered), so the victim's view of it is exactly what the
    test sends.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.relayed: dict[BulletinId, bytes] = {}
        """Bulletins the victim pushed or served to us, by id."""
        self.announced: set[BulletinId] = set()
        """Ids the victim announced to us."""
        self.wanted: list[BulletinId] = []
        """Ids the victim asked us for, in order (repeats included)."""
        self.serving: dict[BulletinId, bytes] = {}
        """What we answer WANTs with (nothing, for a peer that never delivers)."""
        self.acked: dict[BulletinId, bool] = {}
        """Our deposits the victim answered: True if it keeps the bulletin."""
        self.closed: str | None = None
        """Why the victim's side closed, once it did."""
        self._changed = trio.Event()
        self._nonces = itertools.count(1)
        self._pongs: set[int] = set()

    async def send(self, *messages: wire.Message) -> None:
        """Send each message in order (its encoding is the real one)."""
        for message in messages:
            await self.session.send(wire.encode(message))

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` holds, checked after each message the victim sends.

        Raises:
            PeerDisconnected: the session closed first.
        """
        while not done():
            if self.closed is not None:
                raise PeerDisconnected(f"the victim closed the session: {self.closed}")
            changed = self._changed
            await changed.wait()

    async def barrier(self) -> None:
        """PING and wait for the PONG: the victim has read everything sent before it
        (it handles one peer's messages in order)."""
        nonce = next(self._nonces)
        await self.send(wire.Ping(nonce=nonce))
        await self.wait_until(lambda: nonce in self._pongs)

    async def wait_closed(self) -> str:
        """Until the victim closes the session (it dropped us); its reason."""
        while self.closed is None:
            changed = self._changed
            await changed.wait()
        return self.closed

    async def deposit(self, recipient: bytes, bulletins: Sequence[Bulletin]) -> list[bool]:
        """DEPOSIT each bulletin (one to a message, as a max-size one needs) for
        ``recipient`` and wait for the victim's answers: for each, whether it keeps it."""
        ids = [BulletinId(b.id) for b in bulletins]
        for b in bulletins:
            await self.send(wire.Deposit(recipient=recipient, raws=(b.raw,)))
        await self.wait_until(lambda: all(i in self.acked for i in ids))
        return [self.acked[i] for i in ids]

    async def _read(self) -> None:
        while True:
            try:
                data = await received(self.session)
            except PeerDisconnected as exc:
                self.closed = str(exc)
                self._wake()
                return
            message = wire.decode(data)  # the victim speaks well-formed messages
            match message:
                case wire.Bulletins():
                    for raw in message.raws:
                        self.relayed[BulletinId(crypto.blake2b_256(raw))] = raw
                case wire.Announce():
                    self.announced.update(message.ids)
                case wire.Want():
                    self.wanted.extend(message.ids)
                    found = tuple(self.serving[i] for i in message.ids if i in self.serving)
                    if found:
                        with contextlib.suppress(PeerDisconnected):
                            await self.send(wire.Bulletins(raws=found))
                case wire.DepositAck():
                    self.acked.update(dict.fromkeys(message.stored, True))
                    self.acked.update(dict.fromkeys(message.refused, False))
                case wire.Pong():
                    self._pongs.add(message.nonce)
                case _:
                    pass
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def open_wire_peer(
    address: str, identity: Identity, local_host: str, *, public: bool = True
) -> AsyncIterator[WirePeer]:
    """A session with the node at ``address`` as ``identity``, dialled from
    ``local_host``, that has said HELLO (taking part in the public topic unless
    ``public`` is False, and proving no channel)."""
    async with (
        open_session(address, identity=identity, local_host=local_host) as session,
        trio.open_nursery() as nursery,
    ):
        peer = WirePeer(session)
        nursery.start_soon(peer._read)
        await peer.send(wire.Hello(public=public, proofs=()))
        yield peer
        nursery.cancel_scope.cancel()


def announcements(ids: Sequence[bytes]) -> list[wire.Announce]:
    """ANNOUNCE messages on the public topic for ``ids``, as many as they need."""
    step = wire.MAX_ANNOUNCE
    return [
        wire.Announce(topic=PUBLIC_TOPIC, ids=tuple(BulletinId(i) for i in ids[n : n + step]))
        for n in range(0, len(ids), step)
    ]
