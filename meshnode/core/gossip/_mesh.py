"""Mesh upkeep: per topic, the peers pushed to, their backoffs, and the recent history.

Rules (normative text: docs/spec/gossip.md, "Propagation"):
- Each subscribed topic knows the peers that share it, and its *mesh*, the
  ones new bulletins are pushed to. A peer that comes to share the topic joins
  the mesh while it has fewer than ``d`` peers and the peer is not in backoff.
- GRAFT from a peer already in the mesh changes nothing; from a peer in
  backoff it is refused (the machine charges the peer and answers PRUNE); when
  the mesh already has ``d_high`` peers it is refused with PRUNE and the peer
  goes into backoff for ``prune_backoff``. PRUNE takes the peer out of the
  mesh, in backoff for the time it asked.
- At each heartbeat: expired backoffs end; a mesh below ``d_low`` is topped up
  to ``d`` with random peers in good standing and not in backoff; the ids of
  the newest ``history_gossip`` windows are announced to up to ``d_lazy``
  random peers in good standing outside the mesh, and caught-up ids to the
  mesh; then the windows rotate (``history_length`` kept).
- The message cache holds the bytes of what a window lists, at most
  ``max_cache_bytes`` in all; a window's bulletins leave the cache when the
  window does. A WANT is served from it, and from the store for the rest
  (an id cached on another topic is not served).
- Relays: each topic counts, per peer sharing it, the bulletins accepted here
  that the peer sent us before we accepted them (``credit``, from the
  machine: the senders of a pending bulletin); ``relayers`` lists the peers
  that relayed at least one. Copies that come after the verdict do not count:
  a peer could echo what we push to it. A peer that never relays (a Sybil
  that stores nothing) is thereby told from one that does (``_overlay.py``).
- Nothing here sends: the machine sends what ``heartbeat`` returns, and the
  GRAFT or PRUNE that ``join`` and ``graft`` call for.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING

from meshnode.core import wire

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, KeysView

    from meshnode.core.gossip._config import GossipConfig
    from meshnode.core.sync import Holdings
    from meshnode.core.wire import BulletinId, PeerId, Topic

__all__ = ["GraftVerdict", "Mesh"]


class GraftVerdict(Enum):
    """What a GRAFT from a peer sharing the topic came to."""

    IGNORED = "already in the mesh"
    JOINED = "joined the mesh"
    IN_BACKOFF = "grafted during its backoff: charge it and answer PRUNE"
    FULL = "the mesh has d_high peers: answer PRUNE (the peer is now in backoff)"


class _Topic:
    __slots__ = ("backoff", "catchup", "mesh", "peers", "relayed", "windows")

    def __init__(self, history: int) -> None:
        self.peers: dict[PeerId, None] = {}
        self.relayed: dict[PeerId, None] = {}
        self.mesh: dict[PeerId, None] = {}
        self.backoff: dict[PeerId, float] = {}
        self.windows: deque[list[BulletinId]] = deque([[]], maxlen=history)
        self.catchup: list[BulletinId] = []


class Mesh:
    """The mesh, backoffs, history windows and message cache of every subscribed topic.

    Args:
        config: d, d_low, d_high, d_lazy, prune_backoff, history_length,
            history_gossip, max_cache_bytes and max_catchup are used.
        shuffle: shuffles a list in place (with the machine's rng).
    """

    __slots__ = ("_cache", "_cache_bytes", "_config", "_shuffle", "_topics")

    def __init__(self, config: GossipConfig, shuffle: Callable[[list[PeerId]], None]) -> None:
        self._config = config
        self._shuffle = shuffle
        self._topics: dict[Topic, _Topic] = {}
        self._cache: dict[BulletinId, tuple[Topic, bytes]] = {}
        self._cache_bytes = 0

    def __contains__(self, topic: object) -> bool:
        return topic in self._topics

    @property
    def cached_bytes(self) -> int:
        """The bytes the message cache holds."""
        return self._cache_bytes

    def add(self, topic: Topic) -> None:
        """Subscribe: a topic with no peers yet."""
        self._topics[topic] = _Topic(self._config.history_length)

    def remove(self, topic: Topic) -> None:
        """Unsubscribe: forget the topic and uncache its history."""
        t = self._topics.pop(topic, None)
        if t is not None:
            for window in t.windows:
                self._uncache(window)

    def members(self, topic: Topic) -> list[PeerId]:
        """The mesh peers of ``topic``."""
        t = self._topics.get(topic)
        return list(t.mesh) if t is not None else []

    def join(self, topic: Topic, peer: PeerId, now: float) -> bool:
        """``peer`` now shares ``topic``; True if it joined the mesh (send it GRAFT)."""
        t = self._topics[topic]
        t.peers[peer] = None
        if len(t.mesh) < self._config.d and t.backoff.get(peer, now) <= now:
            t.mesh[peer] = None
            return True
        return False

    def leave(self, topic: Topic, peer: PeerId) -> None:
        """``peer`` no longer shares ``topic`` (or is gone)."""
        t = self._topics.get(topic)
        if t is not None:
            t.peers.pop(peer, None)
            t.relayed.pop(peer, None)
            t.mesh.pop(peer, None)
            t.backoff.pop(peer, None)

    def credit(self, topic: Topic, peers: Iterable[PeerId]) -> None:
        """Each of ``peers`` sent us a bulletin, accepted on ``topic``, before the verdict."""
        t = self._topics.get(topic)
        if t is not None:
            for peer in peers:
                if peer in t.peers:
                    t.relayed[peer] = None

    def relayed(self, topic: Topic, peer: PeerId) -> bool:
        """Whether ``peer`` relayed us at least one accepted bulletin on ``topic``."""
        t = self._topics.get(topic)
        return t is not None and peer in t.relayed

    def relayers(self, topic: Topic) -> list[PeerId]:
        """The peers sharing ``topic`` that relayed us at least one accepted bulletin."""
        t = self._topics.get(topic)
        return list(t.relayed) if t is not None else []

    def graft(self, topic: Topic, peer: PeerId, now: float) -> GraftVerdict:
        """A GRAFT from ``peer``, which shares ``topic``."""
        t = self._topics[topic]
        if peer in t.mesh:
            return GraftVerdict.IGNORED
        if t.backoff.get(peer, now) > now:
            return GraftVerdict.IN_BACKOFF
        if len(t.mesh) >= self._config.d_high:
            t.backoff[peer] = now + self._config.prune_backoff
            return GraftVerdict.FULL
        t.mesh[peer] = None
        return GraftVerdict.JOINED

    def prune(self, topic: Topic, peer: PeerId, backoff: int, now: float) -> None:
        """A PRUNE from ``peer``, which shares ``topic``."""
        t = self._topics[topic]
        t.mesh.pop(peer, None)
        t.backoff[peer] = now + backoff

    def relay(
        self, topic: Topic, bulletin_id: BulletinId, raw: bytes, *, flood: bool
    ) -> KeysView[PeerId]:
        """Record a bulletin relayed now; the peers to push it to (every peer sharing the
        topic with ``flood``, else the mesh); none once the topic is unsubscribed."""
        t = self._topics.get(topic)
        if t is None:
            return {}.keys()
        self._record(t, topic, bulletin_id, raw)
        return t.peers.keys() if flood else t.mesh.keys()

    def catch_up(self, topic: Topic, bulletin_id: BulletinId, raw: bytes) -> None:
        """Record an old bulletin relayed now: announced to the mesh at the next heartbeat."""
        t = self._topics.get(topic)
        if t is not None:
            self._record(t, topic, bulletin_id, raw)
            if len(t.catchup) < self._config.max_catchup:
                t.catchup.append(bulletin_id)

    def serve(self, topic: Topic, ids: Iterable[BulletinId], holdings: Holdings) -> list[bytes]:
        """The answer to a WANT: the bytes of those of ``ids`` held and accepted on
        ``topic``, from the message cache or else from ``holdings``."""
        found: list[bytes] = []
        misses: list[bytes] = []
        for bulletin_id in ids:
            cached = self._cache.get(bulletin_id)
            if cached is None:
                misses.append(bulletin_id)
            elif cached[0] == topic:
                found.append(cached[1])
        if misses:
            found.extend(holdings.get(topic, misses))
        return found

    def heartbeat(
        self, now: float, in_good_standing: Callable[[PeerId], bool]
    ) -> list[tuple[PeerId, wire.Message]]:
        """Upkeep of every topic; returns the GRAFTs and ANNOUNCEs to send, in order."""
        out: list[tuple[PeerId, wire.Message]] = []
        for topic, t in self._topics.items():
            self._maintain(topic, t, now, in_good_standing, out)
        return out

    def _maintain(
        self,
        topic: Topic,
        t: _Topic,
        now: float,
        in_good_standing: Callable[[PeerId], bool],
        out: list[tuple[PeerId, wire.Message]],
    ) -> None:
        cfg = self._config
        for peer, until in list(t.backoff.items()):
            if until <= now:
                del t.backoff[peer]
        if len(t.mesh) < cfg.d_low:
            candidates = [
                q
                for q in t.peers
                if q not in t.mesh and q not in t.backoff and in_good_standing(q)
            ]
            self._shuffle(candidates)
            graft = wire.Graft(topic=topic)
            for q in candidates[: cfg.d - len(t.mesh)]:
                t.mesh[q] = None
                out.append((q, graft))
        recent: list[BulletinId] = []
        for window in list(t.windows)[-cfg.history_gossip :]:
            recent.extend(window)
        recent = recent[-wire.MAX_ANNOUNCE :]
        if recent and cfg.d_lazy:
            lazy = [q for q in t.peers if q not in t.mesh and in_good_standing(q)]
            self._shuffle(lazy)
            _announce(topic, recent, lazy[: cfg.d_lazy], out)
        if t.catchup:
            _announce(topic, t.catchup, list(t.mesh), out)
            t.catchup = []
        if len(t.windows) == t.windows.maxlen:
            self._uncache(t.windows[0])
        t.windows.append([])

    def _record(self, t: _Topic, topic: Topic, bulletin_id: BulletinId, raw: bytes) -> None:
        """List a relayed bulletin in the current window and cache its bytes if they fit."""
        window = t.windows[-1]
        if len(window) < wire.MAX_ANNOUNCE:
            window.append(bulletin_id)
            if self._cache_bytes + len(raw) <= self._config.max_cache_bytes:
                self._cache[bulletin_id] = (topic, raw)
                self._cache_bytes += len(raw)

    def _uncache(self, window: list[BulletinId]) -> None:
        for bulletin_id in window:
            cached = self._cache.pop(bulletin_id, None)
            if cached is not None:
                self._cache_bytes -= len(cached[1])


def _announce(
    topic: Topic,
    ids: list[BulletinId],
    peers: list[PeerId],
    out: list[tuple[PeerId, wire.Message]],
) -> None:
    for i in range(0, len(ids), wire.MAX_ANNOUNCE):
        announce = wire.Announce(topic=topic, ids=tuple(ids[i : i + wire.MAX_ANNOUNCE]))
        for q in peers:
            out.append((q, announce))
