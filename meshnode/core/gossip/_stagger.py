"""The second wave: mesh peers a relayed bulletin is pushed to a moment after the first.

Rules (normative text: docs/spec/gossip.md, "Propagation"):
- A relayed bulletin goes at once to ``d_eager`` of its mesh peers, chosen at
  random, and to the others ``stagger`` seconds later: by then most of them
  have it from someone else and said so (they pushed it to us, or sent
  DONTWANT), and they are skipped. A member thus receives about one copy of
  each bulletin, not one per mesh peer, while the mesh keeps its redundancy:
  a first wave that meets a peer that relays nothing is repaired by the second.
- At most ``max_pending`` second waves wait; past that, the oldest goes out at
  once (a second wave is never dropped: delivery comes before bytes).
- Nothing here sends: the machine asks what is due and sends it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from meshnode.core.wire import BulletinId, PeerId

__all__ = ["Stagger", "Wave"]


class Wave(NamedTuple):
    """A second wave: the bulletin, and the mesh peers that did not get the first."""

    due: float
    bulletin_id: BulletinId
    raw: bytes
    peers: tuple[PeerId, ...]


class Stagger:
    """Second waves waiting for their time, oldest first (their delay is the same)."""

    __slots__ = ("_delay", "_limit", "_waves")

    def __init__(self, delay: float, limit: int) -> None:
        self._delay = delay
        self._limit = limit
        self._waves: deque[Wave] = deque()

    def add(
        self, bulletin_id: BulletinId, raw: bytes, peers: tuple[PeerId, ...], now: float
    ) -> list[Wave]:
        """Hold a second wave for ``stagger`` seconds; the waves past the bound, to
        send now."""
        self._waves.append(Wave(now + self._delay, bulletin_id, raw, peers))
        return self.due(now) if len(self._waves) > self._limit else []

    def next_due(self) -> float:
        """When the oldest wave is due (infinity if none waits)."""
        return self._waves[0].due if self._waves else float("inf")

    def due(self, now: float) -> list[Wave]:
        """The waves due by ``now``, and the oldest past the bound, to send now."""
        waves = self._waves
        out: list[Wave] = []
        while waves and (waves[0].due <= now or len(waves) > self._limit):
            out.append(waves.popleft())
        return out
