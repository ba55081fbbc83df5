"""Rate limits: a token bucket per peer for each thing a peer can flood us with.

Rules (docs/spec/gossip.md, "Rate limits"): messages and their bytes, pushed
(unrequested) bulletins, announced ids and ids asked for in WANT each have a
rate per second and a burst. What goes over is dropped or ignored; the first
three also cost the peer Offence.FLOOD (the machine charges it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshnode.core.gossip._config import GossipConfig

__all__ = ["Bucket", "PeerLimits"]


class Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` saved up; starts full."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if there are that many; False (spending none) if not."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class PeerLimits:
    """One peer's buckets, with the rates and bursts of ``config``."""

    __slots__ = ("announce", "bulletins", "bytes_in", "messages", "serve")

    def __init__(self, config: GossipConfig, now: float) -> None:
        self.messages = Bucket(config.message_rate, config.message_burst, now)
        self.bytes_in = Bucket(config.byte_rate, config.byte_burst, now)
        self.bulletins = Bucket(config.bulletin_rate, config.bulletin_burst, now)
        self.announce = Bucket(config.announce_rate, config.announce_burst, now)
        self.serve = Bucket(config.serve_rate, config.serve_burst, now)
