"""What the DHT is configured with (:class:`DHTConfig`) and what it counts.

Every module of the package shares one :class:`_Counters`; :class:`DHTStatistics`
is the snapshot :meth:`~meshnode.net.dht.host.DHTNode.statistics` hands out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from meshnode.core import records

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


@dataclass(frozen=True, kw_only=True)
class DHTConfig:
    """Every limit, timeout and interval of the DHT (seconds, bytes, counts).

    The defaults suit the internet; tests shrink the timeouts and intervals so
    that a lost datagram costs milliseconds rather than kademlia's fixed 5 s.
    """

    ksize: int = 20
    alpha: int = 3
    rpc_timeout: float = 2.0
    refresh_interval: float = 3600.0
    republish_interval: float = 3600.0
    save_interval: float = 600.0
    value_quorum: int = 3
    record_lifetime: int = records.DEFAULT_LIFETIME
    rate_per_source: float = 200.0
    rate_burst: float = 400.0
    max_sources: int = 4096
    max_pending: int = 1024
    quota_per_source: int = 64 * 1024
    storage_cap: int = 16 * 1024 * 1024
    receive_buffer: int = 4 * 1024 * 1024
    """SO_RCVBUF: the default (about 200 KiB) overflows when a few hundred nodes join at once."""

    def __post_init__(self) -> None:
        if not (1 <= self.ksize <= 64 and 1 <= self.alpha <= self.ksize):
            raise ValueError("ksize is 1 to 64 and alpha 1 to ksize")
        if min(self.rpc_timeout, self.refresh_interval, self.republish_interval) <= 0:
            raise ValueError("timeouts and intervals are positive")
        if not 0 < self.record_lifetime <= records.MAX_LIFETIME:
            raise ValueError("records live at most 7 days")


@dataclass(frozen=True, kw_only=True)
class DHTStatistics:
    """A snapshot of a DHT node's counters and table sizes."""

    node_id: bytes
    port: int
    routing_table_size: int
    pending_requests: int
    background_tasks: int
    stored_records: int
    stored_bytes: int
    rate_limited_sources: int
    receive_buffer: int
    datagrams_received: int
    requests_answered: int
    dropped: Mapping[str, int]
    """Datagrams ignored, by reason: too_short, oversized, unsealable, rate_limited,
    malformed, unknown_kind, bad_request, unknown_rpc, bad_arguments,
    unsolicited_response, bad_response, handler_error."""
    refused: Mapping[str, int]
    """Records not stored, by reason: invalid, stale, quota, full."""


class _Counters:
    """Named counters; the names are this module's constants, so the dict stays small.

    The asyncio side counts and pulses; with a threaded host it does so in its own
    thread, and the trio side only reads (ints and dict copies, atomic under the GIL).
    """

    def __init__(self, soon: Callable[[Callable[[], object]], None] | None = None) -> None:
        self.received = 0
        self.answered = 0
        self.dropped: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.changed = trio.Event()
        """Set (and replaced) by :meth:`pulse`: wakes :meth:`DHTNode.wait_until`."""
        self.waiters = 0
        """Tasks in :meth:`DHTNode.wait_until`, counted before they check their condition,
        so a pulse with nobody waiting can skip the wake-up without losing one."""
        self._soon = soon
        self._wake_pending = False

    def pulse(self) -> None:
        """Something a watcher may wait for changed: a datagram was handled, a request
        answered or expired, a record published. From another thread (``soon`` given),
        the wake-up is carried to trio, at most one in flight."""
        if not self.waiters:
            return
        if self._soon is None:
            self._wake()
        elif not self._wake_pending:
            self._wake_pending = True
            self._soon(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        changed, self.changed = self.changed, trio.Event()
        changed.set()

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
