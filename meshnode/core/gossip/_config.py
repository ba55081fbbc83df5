"""GossipConfig: the gossip machine's parameters and the rules that tie them together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshnode.core import wire
from meshnode.core.gossip._offences import DEFAULT_PENALTIES, Offence
from meshnode.core.sync import SyncConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["GossipConfig"]


@dataclass(frozen=True, kw_only=True)
class GossipConfig:
    """Gossip parameters; the defaults are GossipSub v1.1's where it has one.

    Rates are per peer and per second, bursts in the same unit; sizes in bytes.
    See docs/spec/gossip.md, "Parameters", for what each one bounds.
    """

    d: int = 6
    d_low: int = 4
    d_high: int = 12
    d_lazy: int = 6
    d_eager: int = 2
    stagger: float = 0.03
    stagger_size: int = 16384
    max_dontwant: int = 1024
    heartbeat: float = 1.0
    history_length: int = 5
    history_gossip: int = 3
    prune_backoff: int = 60
    flood_publish: bool = True
    seen_ttl: float = 120.0
    max_seen: int = 32768
    max_pending: int = 4096
    verdict_timeout: float = 30.0
    max_wants: int = 8192
    max_wants_per_peer: int = 1024
    max_wants_per_topic: int = 4096
    broken_promises: float = 20.0
    max_inflight: int = 256
    want_timeout: float = 3.0
    want_attempts: int = 3
    max_cache_bytes: int = 8 << 20
    max_catchup: int = 4096
    max_outbox: int = 4 << 20
    hello_padding: int = 4
    message_rate: float = 1000.0
    message_burst: float = 2000.0
    byte_rate: float = float(16 << 20)
    byte_burst: float = float(32 << 20)
    bulletin_rate: float = 1000.0
    bulletin_burst: float = 2000.0
    announce_rate: float = 4096.0
    announce_burst: float = 8192.0
    serve_rate: float = 4096.0
    serve_burst: float = 8192.0
    penalties: Mapping[Offence, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))
    drop_score: float = -100.0
    score_decay: float = 0.9
    sync: SyncConfig = field(default_factory=SyncConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.d_low <= self.d <= self.d_high or self.d_lazy < 0:
            raise ValueError("need 0 <= d_low <= d <= d_high and d_lazy >= 0")
        if self.d_eager < 1 or self.stagger < 0 or self.max_dontwant < 1:
            raise ValueError("need d_eager >= 1, stagger >= 0 and max_dontwant >= 1")
        if not 1 <= self.history_gossip <= self.history_length:
            raise ValueError("need 1 <= history_gossip <= history_length")
        if not 0 <= self.prune_backoff <= wire.MAX_BACKOFF:
            raise ValueError(f"prune_backoff is 0 to {wire.MAX_BACKOFF} seconds")
        if not 0 < self.score_decay <= 1 or self.drop_score >= 0:
            raise ValueError("need 0 < score_decay <= 1 and a negative drop_score")
        if set(self.penalties) != set(Offence) or min(self.penalties.values()) < 0:
            raise ValueError("penalties: a non-negative value for every Offence")
        if min(self.heartbeat, self.seen_ttl, self.verdict_timeout, self.want_timeout) <= 0:
            raise ValueError("times must be positive")
        if min(self.max_seen, self.max_pending, self.max_wants, self.max_inflight) < 1:
            raise ValueError("bounds must be positive")
        if self.max_seen <= self.max_pending or self.seen_ttl <= self.verdict_timeout:
            raise ValueError("the seen-cache must outlive pending verdicts (size and time)")
        if self.want_attempts < 1 or self.hello_padding < 1:
            raise ValueError("want_attempts and hello_padding must be positive")
