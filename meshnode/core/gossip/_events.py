"""What the gossip machine reports: the events its inputs return, and its statistics.

Events are nouns for what happened; the node acts on each (docs/spec/gossip.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from meshnode.core import wire
    from meshnode.core.bulletin import Bulletin
    from meshnode.core.wire import BulletinId, PeerId, Topic

__all__ = [
    "BulletinReceived",
    "Counters",
    "DeliveryReceived",
    "DropPeer",
    "Event",
    "ForkDetected",
    "GossipStatistics",
    "PongReceived",
    "SyncCompleted",
    "TopicsShared",
]

@dataclass(frozen=True, kw_only=True, slots=True)
class TopicsShared:
    """The topics shared with ``peer`` changed (after a HELLO or a subscription)."""

    peer: PeerId
    topics: frozenset[Topic]


@dataclass(frozen=True, kw_only=True, slots=True)
class BulletinReceived:
    """A new, verified bulletin on a shared topic: store it, then ``accept`` or ``reject``."""

    peer: PeerId
    bulletin: Bulletin
    topic: Topic


@dataclass(frozen=True, kw_only=True, slots=True)
class ForkDetected:
    """``author`` signed two bulletins with the same ``seq`` on ``topic``: keep both."""

    topic: Topic
    author: bytes
    seq: int
    held: BulletinId
    received: BulletinId


@dataclass(frozen=True, kw_only=True, slots=True)
class DropPeer:
    """Close the session with ``peer``: its score crossed the threshold."""

    peer: PeerId
    reason: str
    score: float


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncCompleted:
    """A reconciliation this node opened finished; ``missing`` ids were found lacking."""

    peer: PeerId
    topic: Topic
    rounds: int
    missing: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryReceived:
    """A direct-delivery message for the node to handle (docs/spec/gossip.md)."""

    peer: PeerId
    message: wire.DeliveryMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class PongReceived:
    """The answer to a ``ping``."""

    peer: PeerId
    nonce: int


Event: TypeAlias = (
    TopicsShared
    | BulletinReceived
    | ForkDetected
    | DropPeer
    | SyncCompleted
    | DeliveryReceived
    | PongReceived
)


@dataclass(frozen=True, kw_only=True, slots=True)
class GossipStatistics:
    """Counters since the machine was made (for benchmarks and diagnostics)."""

    received: int
    duplicates: int
    invalid: int
    accepted: int
    rejected: int
    published: int
    pushed: int
    spared: int
    """Second-wave pushes skipped: the peer had the bulletin by then."""
    dontwants_sent: int
    announced: int
    wanted: int
    served: int
    want_timeouts: int
    want_overflows: int
    outbox_drops: int
    overloaded: int
    offences: int
    drops: int
    syncs: int
    bytes_out: int
    messages_out: int


@dataclass(slots=True)
class Counters:
    """The running counts behind GossipStatistics, one field each."""

    received: int = 0
    duplicates: int = 0
    invalid: int = 0
    accepted: int = 0
    rejected: int = 0
    published: int = 0
    pushed: int = 0
    spared: int = 0
    dontwants_sent: int = 0
    announced: int = 0
    wanted: int = 0
    served: int = 0
    want_timeouts: int = 0
    want_overflows: int = 0
    outbox_drops: int = 0
    overloaded: int = 0
    offences: int = 0
    drops: int = 0
    syncs: int = 0
    bytes_out: int = 0
    messages_out: int = 0

    def snapshot(self) -> GossipStatistics:
        return GossipStatistics(**dataclasses.asdict(self))
