"""What a peer can be charged for, and what each offence costs by default
(normative text: docs/spec/gossip.md, "Scores"); the configuration and the scores
both name them."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping


class Offence(Enum):
    """Misbehaviour that costs a peer score (penalties: GossipConfig.penalties)."""

    MALFORMED = "sent a malformed message"
    INVALID_BULLETIN = "sent an invalid bulletin"
    WRONG_KIND = "gossiped a direct bulletin"
    WRONG_TOPIC = "used a topic it does not share with us"
    REPLAY = "sent the same bulletin again"
    FLOOD = "went over its rate limit"
    GRAFT_BACKOFF = "grafted during its backoff"
    REJECTED = "sent a bulletin this node refused"
    UNANSWERED = "did not send a bulletin it announced"
    MISDIRECTED = "deposited mail that this node is not a holder for"


DEFAULT_PENALTIES: Final[Mapping[Offence, float]] = {
    Offence.MALFORMED: 100.0,
    Offence.INVALID_BULLETIN: 100.0,
    Offence.WRONG_KIND: 50.0,
    Offence.WRONG_TOPIC: 10.0,
    Offence.REPLAY: 10.0,
    Offence.FLOOD: 5.0,
    Offence.GRAFT_BACKOFF: 10.0,
    Offence.REJECTED: 10.0,
    Offence.UNANSWERED: 2.0,
    Offence.MISDIRECTED: 5.0,
}
