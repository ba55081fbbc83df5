"""Scoring: what misbehaviour costs a peer, and how the cost fades.

Rules (normative text: docs/spec/gossip.md, "Scores"):
- Every peer starts at 0. Each Offence subtracts its penalty.
- Scores decay: at every heartbeat each one is multiplied by ``score_decay``,
  so a penalty fades and a slow trickle of offences never adds up.
- The charge that brings a score to ``drop_score`` or below is reported (once:
  the caller drops the peer and charges it no more).
- A peer is in good standing while its score is at least 0; only peers in good
  standing are grafted and announced to.
- Broken promises (announced ids a peer did not send when asked) are counted
  apart and decay the same way; the first ``broken_promises`` are free, each
  one beyond costs Offence.UNANSWERED (the caller charges it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from meshnode.core.gossip._config import GossipConfig
    from meshnode.core.gossip._offences import Offence
    from meshnode.core.wire import PeerId

__all__ = ["DECAY_TO_ZERO", "Scores"]

DECAY_TO_ZERO: Final = 0.1
"""A score this close to 0 is 0 (GossipSub's ``DecayToZero``): repeated decay only
approaches 0, and a peer charged once must be in good standing again."""


class _Standing:
    __slots__ = ("broken", "score")

    def __init__(self) -> None:
        self.score = 0.0
        self.broken = 0.0


class Scores:
    """The score of every peer with a session (see the rules above)."""

    __slots__ = ("_allowance", "_decay", "_drop", "_peers", "_penalties")

    def __init__(self, config: GossipConfig) -> None:
        self._penalties = config.penalties
        self._drop = config.drop_score
        self._decay = config.score_decay
        self._allowance = config.broken_promises
        self._peers: dict[PeerId, _Standing] = {}

    def add(self, peer: PeerId) -> None:
        """A session opened: ``peer`` starts at 0."""
        self._peers[peer] = _Standing()

    def remove(self, peer: PeerId) -> None:
        """The session closed: forget the peer."""
        self._peers.pop(peer, None)

    def score(self, peer: PeerId) -> float:
        """0 is clean, lower is worse; 0 for a peer not added."""
        standing = self._peers.get(peer)
        return standing.score if standing is not None else 0.0

    def in_good_standing(self, peer: PeerId) -> bool:
        """Whether ``peer`` may be grafted and announced to."""
        return self._peers[peer].score >= 0

    def charge(self, peer: PeerId, offence: Offence) -> bool:
        """Subtract the penalty of ``offence``; True when the score reaches ``drop_score``."""
        standing = self._peers[peer]
        standing.score -= self._penalties[offence]
        return standing.score <= self._drop

    def broke_promise(self, peer: PeerId) -> bool:
        """Count one broken promise; True when it is beyond the free allowance."""
        standing = self._peers[peer]
        standing.broken += 1
        return standing.broken > self._allowance

    def decay(self) -> None:
        """The heartbeat: every score and broken-promise count fades toward 0."""
        decay = self._decay
        for standing in self._peers.values():
            standing.score *= decay
            standing.broken *= decay
            if -DECAY_TO_ZERO < standing.score < DECAY_TO_ZERO:
                standing.score = 0.0  # (else a charged peer stays below 0 for good)
