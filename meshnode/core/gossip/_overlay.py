"""The public overlay's upkeep: how many sessions to keep, and which one to give up.

Rules (normative text: docs/spec/gossip.md, "Finding peers"):
- A session *serves* when its peer has relayed us, this session, a bulletin on
  the public topic that we accepted before we accepted it (``Gossip.relayers``),
  or shares one of our channels (it proved membership, which no anonymous
  Sybil can). A Sybil that stores and relays nothing never serves.
- A node keeps ``d_low`` sessions once ``d_low`` of them serve; until then it
  keeps dialling, up to ``d_high`` sessions in all. Counting sessions alone let
  a node that came back and dialled only Sybils stay among them for good.
- With ``d_high`` sessions or more and fewer than ``d_low`` serving, the node
  gives up *idle* sessions: those it dialled itself, that never served and
  that have had ``grace`` seconds to. While some session serves, the oldest
  idle one goes, one a round; while none does, the node is cut off from the
  public topic and every idle session goes at once. The next round dials new
  peers in their place, so an eclipsed node keeps drawing until enough serve.
  Sessions others dialled are never given up (a crowd of Sybils dialling in
  cannot make the node close its own peers), nor any that serves.
- A network where nothing is posted serves nothing: there a node keeps
  ``d_high`` sessions and replaces its idle ones every round.
- The node's loop (``meshnode/net/presence.py``) and the simulator
  (``sim/scenarios.py``) both follow ``plan_overlay``; nothing here dials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from meshnode.core.wire import PeerId

__all__ = ["OverlayPlan", "OverlaySession", "plan_overlay"]


@dataclass(frozen=True, kw_only=True, slots=True)
class OverlaySession:
    """One open session as the overlay upkeep sees it."""

    peer: PeerId
    outbound: bool
    """Whether this node dialled it."""
    opened: float
    """When it opened (any clock, the same as ``now``)."""
    relayed: bool
    """Whether its peer is among ``Gossip.relayers(PUBLIC_TOPIC)``."""
    member: bool
    """Whether it shares a channel with us (``Gossip.shared_topics``)."""

    @property
    def serving(self) -> bool:
        """Relayed on the public topic, or a fellow member of a channel."""
        return self.relayed or self.member


@dataclass(frozen=True, kw_only=True, slots=True)
class OverlayPlan:
    """What one round of the upkeep does."""

    keep: int
    """Dial routing entries while the node has fewer sessions than this."""
    close: tuple[PeerId, ...]
    """The sessions to give up first."""


def plan_overlay(
    sessions: Iterable[OverlaySession], *, d_low: int, d_high: int, now: float, grace: float
) -> OverlayPlan:
    """One round of the public overlay's upkeep (see the rules above)."""
    listed = list(sessions)
    serving = sum(1 for s in listed if s.serving)
    if serving >= d_low:
        return OverlayPlan(keep=d_low, close=())
    if len(listed) < d_high:
        return OverlayPlan(keep=d_high, close=())
    idle = sorted(
        (s for s in listed if s.outbound and not s.serving and now - s.opened >= grace),
        key=lambda s: s.opened,
    )
    if serving:
        idle = idle[:1]
    return OverlayPlan(keep=d_high, close=tuple(s.peer for s in idle))
