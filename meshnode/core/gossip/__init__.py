"""The gossip machine: how bulletins spread across the members of each topic.

``Gossip`` (``_machine.py``, whose opening comment is the theory of operation;
the normative text is docs/spec/gossip.md) composes one room per concern:
    _intake.py   validation of what is received, the seen-cache, the verdicts
    _hello.py    membership hellos: proofs presented, topics shared with a peer
    _mesh.py     mesh upkeep: meshes, backoffs, history windows, message cache, relays
    _overlay.py  the public overlay's upkeep: sessions to keep, one to give up
    _wants.py    the want scheduler: fair fetching, in-flight bounds, retries
    _scoring.py  offences, penalties, peer scores and their decay
    _stagger.py  the second wave of pushes, sent to those that still lack a bulletin
    _limits.py   per-peer rate limits (token buckets)
    _outbox.py   per-peer queues of payloads to send
    _config.py   GossipConfig: the parameters and the rules that tie them
    _events.py   what the machine reports, and its statistics
"""

from meshnode.core.gossip._config import GossipConfig
from meshnode.core.gossip._events import (
    BulletinReceived,
    DeliveryReceived,
    DropPeer,
    Event,
    ForkDetected,
    GossipStatistics,
    PongReceived,
    SyncCompleted,
    TopicsShared,
)
from meshnode.core.gossip._hello import channel_keys
from meshnode.core.gossip._machine import Gossip
from meshnode.core.gossip._offences import DEFAULT_PENALTIES, Offence
from meshnode.core.gossip._overlay import OverlayPlan, OverlaySession, plan_overlay
from meshnode.core.sync import topic_of

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
    "OverlayPlan",
    "OverlaySession",
    "PongReceived",
    "SyncCompleted",
    "TopicsShared",
    "channel_keys",
    "plan_overlay",
    "topic_of",
]
