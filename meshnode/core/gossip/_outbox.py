"""The outbox: per-peer queues of payloads for the shell to send.

Rules (docs/spec/gossip.md, "Rate limits"):
- Each peer's queue holds at most ``max_outbox`` bytes; what does not fit is
  refused and counted (``outbox_drops``); gossip and sync repair the loss.
- Messages are queued encoded, in order; bulletins are queued raw and leave
  after the peer's messages, batched into as few BULLETINS as fit. Ids for
  DONTWANT are gathered and leave first, in as few DONTWANT as fit.
- ``drain`` hands out every queued payload, peer by peer in the order the
  peers first had something queued, so one peer's payloads are consecutive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from meshnode.core import wire

if TYPE_CHECKING:
    from meshnode.core.gossip._events import Counters
    from meshnode.core.wire import BulletinId, PeerId

__all__ = ["Outbox"]

_B = TypeVar("_B", bound=bytes)


class _Queue:
    __slots__ = ("dontwant", "frames", "raws", "size")

    def __init__(self) -> None:
        self.dontwant: list[BulletinId] = []
        self.frames: list[bytes] = []
        self.raws: list[bytes] = []
        self.size = 0


class Outbox:
    """What waits to be sent to each peer with a session.

    Args:
        limit: ``max_outbox``, the bytes one peer's queue may hold.
        counters: the machine's; outbox_drops, messages_out and bytes_out are
            counted here.
    """

    __slots__ = ("_dirty", "_limit", "_n", "_queues")

    def __init__(self, limit: int, counters: Counters) -> None:
        self._limit = limit
        self._n = counters
        self._queues: dict[PeerId, _Queue] = {}
        self._dirty: dict[PeerId, None] = {}

    def add(self, peer: PeerId) -> None:
        """A session opened: ``peer`` gets an empty queue."""
        self._queues[peer] = _Queue()

    def remove(self, peer: PeerId) -> None:
        """The session closed (or the peer was dropped): what waits for it is discarded."""
        self._queues.pop(peer, None)
        self._dirty.pop(peer, None)

    def put(self, peer: PeerId, data: bytes, *, raw: bool) -> bool:
        """Queue an encoded message, or with ``raw`` a bulletin for the peer's next
        BULLETINS; False if it does not fit."""
        queue = self._queues[peer]
        return self._add(peer, queue, queue.raws if raw else queue.frames, data)

    def dontwant(self, peer: PeerId, bulletin_id: BulletinId) -> bool:
        """Queue ``bulletin_id`` for the peer's next DONTWANT; False if it does not fit."""
        queue = self._queues[peer]
        return self._add(peer, queue, queue.dontwant, bulletin_id)

    def _add(self, peer: PeerId, queue: _Queue, into: list[_B], data: _B) -> bool:
        if queue.size + len(data) > self._limit:
            self._n.outbox_drops += 1
            return False
        into.append(data)
        queue.size += len(data)
        self._dirty[peer] = None
        return True

    def drain(self) -> list[tuple[PeerId, bytes]]:
        """Every queued payload as (peer, bytes), each peer's consecutive; the queues empty."""
        out: list[tuple[PeerId, bytes]] = []
        size = 0
        for peer in self._dirty:
            queue = self._queues[peer]
            ids, most = queue.dontwant, wire.MAX_DONTWANT
            for start in range(0, len(ids), most):
                frame = wire.encode(wire.DontWant(ids=tuple(ids[start : start + most])))
                out.append((peer, frame))
                size += len(frame)
            for frame in queue.frames:
                out.append((peer, frame))
                size += len(frame)
            for batch in wire.batch_raws(queue.raws):
                frame = wire.encode_bulletins(batch)
                out.append((peer, frame))
                size += len(frame)
            queue.dontwant, queue.frames, queue.raws, queue.size = [], [], [], 0
        self._dirty.clear()
        self._n.messages_out += len(out)
        self._n.bytes_out += size
        return out
