"""The gossip machine: how bulletins spread across the members of each topic.

The machine is ``Gossip`` in ``_machine.py``, whose opening comment is its
theory of operation; the normative text is docs/spec/gossip.md.
"""

from meshnode.core.gossip._machine import (
    DEFAULT_PENALTIES,
    BulletinReceived,
    DeliveryReceived,
    DropPeer,
    Event,
    ForkDetected,
    Gossip,
    GossipConfig,
    GossipStatistics,
    Offence,
    PongReceived,
    SyncCompleted,
    TopicsShared,
    channel_keys,
    topic_of,
)

__all__ = [
    "DEFAULT_PENALTIES",
    "BulletinReceived",
    "DeliveryReceived",
    "DropPeer",
    "Event",
    "ForkDetected",
    "Gossip",
    "GossipConfig",
    "GossipStatistics",
    "Offence",
    "PongReceived",
    "SyncCompleted",
    "TopicsShared",
    "channel_keys",
    "topic_of",
]
