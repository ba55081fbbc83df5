"""What a test reads from a session: the messages its handler was given, in order.

The transport hands messages to a handler (``Session.deliver_to``), as the node does;
a test that wants to wait for the next one reads them from here."""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING

import trio

from meshnode.errors import PeerDisconnected

if TYPE_CHECKING:
    from meshnode.net.transport import Session

_INBOXES: weakref.WeakKeyDictionary[Session, Inbox] = weakref.WeakKeyDictionary()


class Inbox:
    """Every message ``session`` receives, kept until taken (a test's reads are few)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._tx, self._rx = trio.open_memory_channel[bytes](math.inf)
        session.deliver_to(self._got)

    def _got(self, messages: list[bytes]) -> None:
        for data in messages:
            self._tx.send_nowait(data)

    async def take(self) -> bytes:
        """The next message; PeerDisconnected once the session has ended and every
        message it received was taken."""
        try:
            return self._rx.receive_nowait()
        except trio.WouldBlock:
            pass
        got: list[bytes] = []
        async with trio.open_nursery() as race:

            async def message() -> None:
                got.append(await self._rx.receive())
                race.cancel_scope.cancel()

            async def end() -> None:
                await self._session.wait_closed()
                race.cancel_scope.cancel()

            race.start_soon(message)
            race.start_soon(end)
        if got:
            return got[0]
        try:
            return self._rx.receive_nowait()
        except trio.WouldBlock:
            reason = self._session.statistics().closed_reason
            raise PeerDisconnected(f"session closed: {reason}") from None


def inbox(session: Session) -> Inbox:
    """The session's inbox (made, and given to the session, on first use)."""
    box = _INBOXES.get(session)
    if box is None:
        box = _INBOXES[session] = Inbox(session)
    return box


async def received(session: Session) -> bytes:
    """The next message ``session`` received (see :meth:`Inbox.take`)."""
    return await inbox(session).take()
