"""Anti-entropy: range-based set reconciliation of what two members hold on a topic.

Theory of operation (normative text: docs/spec/sync.md):
- The items of a topic are the bulletins a node holds there, each as the bytes
  ``created_at (8 bytes, big-endian) || id``, sorted. A *bound* is a timestamp
  and an id prefix in the same form, so items and bounds compare as bytes.
- A range (lower, upper] of items is summarised by its *fingerprint*:
  BLAKE2b-128 of (the sum of its ids as little-endian integers mod 2^256,
  32 bytes) || (its count, 8 bytes little-endian). Sums make every range's
  fingerprint O(log n) from prefix sums (RangeIndex), whatever its size.
- A SYNC message covers the whole space with consecutive ranges. For each
  range received, the receiver answers with what it would have said: equal
  fingerprints become SKIP; a differing range is split into ``branching``
  sub-ranges with fingerprints, or, when the receiver holds at most
  ``idlist_threshold`` items there, sent as an IDLIST; an IDLIST is answered
  with the DIFF of the receiver's ids that the sender lacks. Every IDLIST
  and DIFF tells its receiver which ids *it* lacks: both sides learn what to
  fetch, and fetch it by id (gossip's WANT). So the bytes exchanged follow
  the size of the difference times log(n), not the number of items held.
- Rule 1: a message that holds a FINGERPRINT or IDLIST range demands an
  answer; the answerer always answers it (an empty answer means "in sync").
  A message without them is final.
- Rule 2: output is bounded (``max_ranges``, ``max_ids``); when an answer
  would not fit, everything from that point on is sent as one FINGERPRINT
  up to INFINITY, which the next round takes up (negentropy's frame limit).
- Rule 3: the side answering a reconciliation it did not open keeps no
  state; the opener counts rounds, times out and stops after ``max_rounds``.
- Fingerprints are sums, so a group of authors who mint many bulletins can
  craft a collision and hide a range from one reconciliation; gossip still
  delivers those bulletins (docs/spec/sync.md, "Security").
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Final, Protocol

from meshnode.core import wire
from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.wire import INFINITY, BulletinId, PeerId, RangeMode, SyncRange, Topic
from meshnode.errors import LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_MOD: Final = 1 << 256
_DEMANDING: Final = frozenset((RangeMode.FINGERPRINT, RangeMode.IDLIST))


def topic_of(bulletin: Bulletin) -> Topic | None:
    """The topic a bulletin travels on: its stream, or None for direct kinds (not gossiped)."""
    if bulletin.kind in (Kind.DIRECT, Kind.KEY_UPDATE):
        return None
    return Topic(bulletin.stream)


def fingerprint(id_sum: int, count: int) -> bytes:
    """The fingerprint of a set of ids given the sum of their values and their count."""
    data = (id_sum % _MOD).to_bytes(32, "little") + count.to_bytes(8, "little")
    return hashlib.blake2b(data, digest_size=wire.FINGERPRINT_SIZE).digest()


class RangeIndex:
    """The sorted items of one topic with prefix sums, for O(log n) range fingerprints.

    A node keeps one per topic beside its store: ``add`` after every stored
    bulletin, ``discard`` after every purge. About 250 bytes per item.
    """

    __slots__ = ("_clean", "_ids", "_keys", "_sums", "_vals")

    def __init__(self, items: Iterable[tuple[int, bytes]] = ()) -> None:
        self._ids: dict[bytes, int] = {}
        for created_at, bulletin_id in items:
            self._ids.setdefault(bulletin_id, created_at)
        self._keys = sorted(ts.to_bytes(8, "big") + i for i, ts in self._ids.items())
        self._vals = [int.from_bytes(k[8:], "little") for k in self._keys]
        self._sums = [0]
        self._clean = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, bulletin_id: object) -> bool:
        return bulletin_id in self._ids

    def add(self, created_at: int, bulletin_id: bytes) -> bool:
        """Add an item; False if it was already there."""
        if bulletin_id in self._ids:
            return False
        self._ids[bulletin_id] = created_at
        key = created_at.to_bytes(8, "big") + bulletin_id
        pos = bisect_left(self._keys, key)
        self._keys.insert(pos, key)
        self._vals.insert(pos, int.from_bytes(bulletin_id, "little"))
        self._clean = min(self._clean, pos)
        return True

    def discard(self, bulletin_id: bytes) -> bool:
        """Remove an item (an expired bulletin); False if it was not there."""
        created_at = self._ids.pop(bulletin_id, None)
        if created_at is None:
            return False
        pos = bisect_left(self._keys, created_at.to_bytes(8, "big") + bulletin_id)
        del self._keys[pos]
        del self._vals[pos]
        self._clean = min(self._clean, pos)
        return True

    def position(self, bound: bytes) -> int:
        """The number of items below ``bound``."""
        return bisect_left(self._keys, bound)

    def fingerprint(self, lo: int, hi: int) -> bytes:
        """The fingerprint of the items at positions ``lo`` to ``hi - 1``."""
        if self._clean < len(self._keys):
            start = self._sums[self._clean]
            del self._sums[self._clean :]
            self._sums.extend(accumulate(self._vals[self._clean :], initial=start))
            self._clean = len(self._keys)
        return fingerprint(self._sums[hi] - self._sums[lo], hi - lo)

    def id_at(self, pos: int) -> BulletinId:
        """The id of the item at ``pos``."""
        return BulletinId(self._keys[pos][8:])

    def ids(self, lo: int, hi: int) -> list[BulletinId]:
        """The ids of the items at positions ``lo`` to ``hi - 1``, in order."""
        return [BulletinId(k[8:]) for k in self._keys[lo:hi]]

    def bound_before(self, pos: int) -> bytes:
        """The shortest bound above item ``pos - 1`` and not above item ``pos``."""
        upper = self._keys[pos]
        if pos == 0 or self._keys[pos - 1][:8] != upper[:8]:
            return upper[:8]
        lower = self._keys[pos - 1]
        k = 8
        while lower[k] == upper[k]:
            k += 1
        return upper[: k + 1]


class Holdings(Protocol):
    """What this node holds, as gossip and sync need to see it.

    The node implements it over its store, keeping a RangeIndex per topic;
    MemoryHoldings is the in-memory implementation for tests and simulations.
    Only bulletins the node has accepted are held.
    """

    def has(self, bulletin_id: bytes) -> bool:
        """Whether the bulletin is held (on any topic)."""
        ...

    def get(self, topic: Topic, ids: Sequence[bytes]) -> list[bytes]:
        """The raw bytes of those of ``ids`` held on ``topic``; others are left out."""
        ...

    def seq_id(self, topic: Topic, author: bytes, seq: int) -> bytes | None:
        """The id of a held bulletin by ``author`` with ``seq`` on ``topic``, to spot forks."""
        ...

    def index(self, topic: Topic) -> RangeIndex:
        """The items held on ``topic`` (an empty index for a topic with none)."""
        ...


class MemoryHoldings:
    """Holdings in memory: raw bulletins by id, one RangeIndex per topic."""

    def __init__(self) -> None:
        self._raws: dict[bytes, tuple[Topic, bytes]] = {}
        self._seqs: dict[tuple[Topic, bytes, int], bytes] = {}
        self._indexes: dict[Topic, RangeIndex] = {}

    def __len__(self) -> int:
        return len(self._raws)

    def add(self, bulletin: Bulletin) -> bool:
        """Hold a gossiped bulletin; False if already held.

        Raises:
            LocalProtocolError: a direct bulletin, which has no topic.
        """
        topic = topic_of(bulletin)
        if topic is None:
            raise LocalProtocolError("direct bulletins are not held by topic")
        if bulletin.id in self._raws:
            return False
        self._raws[bulletin.id] = (topic, bulletin.raw)
        self._seqs.setdefault((topic, bulletin.author, bulletin.seq), bulletin.id)
        self.index(topic).add(bulletin.created_at, bulletin.id)
        return True

    def ids(self, topic: Topic) -> set[bytes]:
        """Every id held on ``topic``."""
        return {i for i, (t, _) in self._raws.items() if t == topic}

    def has(self, bulletin_id: bytes) -> bool:
        return bulletin_id in self._raws

    def get(self, topic: Topic, ids: Sequence[bytes]) -> list[bytes]:
        raws = []
        for bulletin_id in ids:
            entry = self._raws.get(bulletin_id)
            if entry is not None and entry[0] == topic:
                raws.append(entry[1])
        return raws

    def seq_id(self, topic: Topic, author: bytes, seq: int) -> bytes | None:
        return self._seqs.get((topic, author, seq))

    def index(self, topic: Topic) -> RangeIndex:
        index = self._indexes.get(topic)
        if index is None:
            index = self._indexes[topic] = RangeIndex()
        return index


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """Reconciliation parameters (docs/spec/sync.md, "Parameters").

    Attributes:
        interval: seconds between two reconciliations of a (peer, topic) pair,
            opened by the side with the smaller key.
        retry: seconds before trying again after a timeout or an overflow.
        timeout: seconds to wait for an answer before giving up a round.
        max_rounds: answers one reconciliation may take before it stops.
        max_sessions: reconciliations this node has open at once.
        branching: sub-ranges a differing range is split into.
        idlist_threshold: at most this many items are listed instead of split.
        max_ids: ids per message (IDLIST and DIFF together).
        max_ranges: ranges per message.
    """

    interval: float = 60.0
    retry: float = 10.0
    timeout: float = 15.0
    max_rounds: int = 128
    max_sessions: int = 8
    branching: int = 16
    idlist_threshold: int = 32
    max_ids: int = wire.MAX_SYNC_IDS
    max_ranges: int = wire.MAX_SYNC_RANGES

    def __post_init__(self) -> None:
        if not 2 <= self.branching <= self.idlist_threshold <= self.max_ids <= wire.MAX_SYNC_IDS:
            raise ValueError("need 2 <= branching <= idlist_threshold <= max_ids <= MAX_SYNC_IDS")
        if not self.branching + 4 <= self.max_ranges <= wire.MAX_SYNC_RANGES:
            raise ValueError("need branching + 4 <= max_ranges <= MAX_SYNC_RANGES")
        if (
            min(self.interval, self.retry, self.timeout) <= 0
            or min(self.max_rounds, self.max_sessions) < 1
        ):
            raise ValueError("sync intervals and counts must be positive")


class _Writer:
    """Builds the ranges of one message within its limits (rule 2)."""

    __slots__ = ("config", "full", "ids", "index", "out", "upto")

    def __init__(self, index: RangeIndex, config: SyncConfig) -> None:
        self.index = index
        self.config = config
        self.out: list[SyncRange] = []
        self.upto = b""
        self.ids = 0
        self.full = False

    def _emit(self, lower: bytes, item: SyncRange) -> None:
        if lower != self.upto:
            self.out.append(SyncRange(upper=lower, mode=RangeMode.SKIP))
        self.out.append(item)
        self.upto = item.upper
        self.ids += len(item.ids)

    def _fits(self, ranges: int, ids: int) -> bool:
        # Room for these, a SKIP before them and the closing fingerprint after.
        return (
            len(self.out) + ranges + 2 <= self.config.max_ranges
            and self.ids + ids <= self.config.max_ids
        )

    def close(self, lower: bytes, lo: int) -> None:
        """Everything from ``lower`` on, as one fingerprint for the next round."""
        fp = self.index.fingerprint(lo, len(self.index))
        self._emit(lower, SyncRange(upper=INFINITY, mode=RangeMode.FINGERPRINT, fingerprint=fp))
        self.full = True

    def describe(self, lower: bytes, upper: bytes, lo: int, hi: int) -> None:
        """Our items in a range whose fingerprints differ: listed, or split."""
        n = hi - lo
        if n <= self.config.idlist_threshold:
            if not self._fits(1, n):
                self.close(lower, lo)
                return
            ids = tuple(self.index.ids(lo, hi))
            self._emit(lower, SyncRange(upper=upper, mode=RangeMode.IDLIST, ids=ids))
            return
        buckets = self.config.branching
        if not self._fits(buckets, 0):
            self.close(lower, lo)
            return
        start, bucket_lower = lo, lower
        for i in range(1, buckets + 1):
            end = lo + n * i // buckets
            bucket_upper = upper if i == buckets else self.index.bound_before(end)
            fp = self.index.fingerprint(start, end)
            self._emit(
                bucket_lower,
                SyncRange(upper=bucket_upper, mode=RangeMode.FINGERPRINT, fingerprint=fp),
            )
            start, bucket_lower = end, bucket_upper

    def answer_ids(self, lower: bytes, upper: bytes, lo: int, hi: int, theirs: set[bytes]) -> None:
        """Answer an IDLIST with the DIFF of ours they lack, cut where the budget ends."""
        if not self._fits(1, 1):
            self.close(lower, lo)
            return
        room = self.config.max_ids - self.ids
        lacking: list[BulletinId] = []
        for pos in range(lo, hi):
            bulletin_id = self.index.id_at(pos)
            if bulletin_id in theirs:
                continue
            if len(lacking) == room:
                cut = self.index.bound_before(pos)
                self._emit(lower, SyncRange(upper=cut, mode=RangeMode.DIFF, ids=tuple(lacking)))
                self.close(cut, pos)
                return
            lacking.append(bulletin_id)
        if lacking:
            self._emit(lower, SyncRange(upper=upper, mode=RangeMode.DIFF, ids=tuple(lacking)))


def opening(index: RangeIndex, config: SyncConfig) -> tuple[SyncRange, ...]:
    """The ranges that open a reconciliation: the whole space, listed or split."""
    writer = _Writer(index, config)
    writer.describe(b"", INFINITY, 0, len(index))
    return tuple(writer.out)


def reconcile(
    index: RangeIndex, ranges: Sequence[SyncRange], config: SyncConfig
) -> tuple[tuple[SyncRange, ...], list[BulletinId]]:
    """Answer received ranges: (our ranges, the ids we learnt we lack).

    Pure: the index is only read.
    """
    writer = _Writer(index, config)
    missing: dict[BulletinId, None] = {}
    lower, lo = b"", 0
    for r in ranges:
        hi = index.position(r.upper)
        if r.mode in (RangeMode.IDLIST, RangeMode.DIFF):
            for bulletin_id in r.ids:
                if bulletin_id not in index:
                    missing[bulletin_id] = None
            if r.mode == RangeMode.IDLIST and not writer.full:
                writer.answer_ids(lower, r.upper, lo, hi, set(r.ids))
        elif (
            r.mode == RangeMode.FINGERPRINT
            and not writer.full
            and index.fingerprint(lo, hi) != r.fingerprint
        ):
            writer.describe(lower, r.upper, lo, hi)
        lower, lo = r.upper, hi
    return tuple(writer.out), list(missing)


def demands_answer(ranges: Iterable[SyncRange]) -> bool:
    """Rule 1: whether a message with these ranges must be answered."""
    return any(r.mode in _DEMANDING for r in ranges)


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncStep:
    """What receiving one SYNC message led to.

    Attributes:
        reply: the message to send back, if any.
        missing: ids we learnt the peer holds and we lack: fetch them from it.
        completed: a reconciliation we opened has finished (``rounds`` answers,
            ``found`` ids learnt missing in all).
        known: False when the topic is not shared with that peer (the caller
            penalises it).
    """

    reply: wire.Sync | None
    missing: tuple[BulletinId, ...] = ()
    completed: bool = False
    rounds: int = 0
    found: int = 0
    known: bool = True


class _Link:
    __slots__ = ("due", "found", "initiator", "rounds", "waiting")

    def __init__(self, initiator: bool, due: float | None) -> None:
        self.initiator = initiator
        self.due = due
        self.waiting: float | None = None
        self.rounds = 0
        self.found = 0


class SyncMachine:
    """Schedules and runs reconciliations with each peer on each shared topic.

    Inputs: ``add``/``remove``/``remove_peer`` as topics become shared or not,
    ``receive`` for each SYNC message, ``poll`` periodically (opens due
    reconciliations, times out silent ones), ``schedule`` to ask for one soon.
    Outputs are return values: messages to send and ids to fetch.
    """

    def __init__(self, holdings: Holdings, config: SyncConfig | None = None) -> None:
        self._holdings = holdings
        self._config = config or SyncConfig()
        self._links: dict[PeerId, dict[Topic, _Link]] = {}
        self._active = 0

    @property
    def active(self) -> int:
        """Reconciliations this node opened that await an answer."""
        return self._active

    def add(self, peer: PeerId, topic: Topic, *, initiator: bool, now: float) -> None:
        """``topic`` is now shared with ``peer``; the initiator reconciles at once."""
        links = self._links.setdefault(peer, {})
        if topic not in links:
            links[topic] = _Link(initiator, now if initiator else None)

    def remove(self, peer: PeerId, topic: Topic) -> None:
        """``topic`` is no longer shared with ``peer``."""
        link = self._links.get(peer, {}).pop(topic, None)
        if link is not None and link.waiting is not None:
            self._active -= 1

    def remove_peer(self, peer: PeerId) -> None:
        """The session with ``peer`` is gone."""
        for topic in list(self._links.get(peer, {})):
            self.remove(peer, topic)
        self._links.pop(peer, None)

    def schedule(self, peer: PeerId, topic: Topic, at: float) -> None:
        """Reconcile ``topic`` with ``peer`` at ``at`` or soon after, whoever initiates."""
        link = self._links.get(peer, {}).get(topic)
        if link is not None:
            link.due = at if link.due is None else min(link.due, at)

    def poll(self, now: float) -> list[tuple[PeerId, wire.Sync]]:
        """Time out silent reconciliations and open those that are due."""
        out: list[tuple[PeerId, wire.Sync]] = []
        cfg = self._config
        for links in self._links.values():
            for link in links.values():
                if link.waiting is not None and link.waiting + cfg.timeout <= now:
                    self._finish(link, now, failed=True)
        for peer, links in self._links.items():
            for topic, link in links.items():
                if self._active >= cfg.max_sessions:
                    return out
                if link.waiting is None and link.due is not None and link.due <= now:
                    ranges = opening(self._holdings.index(topic), cfg)
                    link.waiting, link.due, link.rounds, link.found = now, None, 0, 0
                    self._active += 1
                    out.append((peer, wire.Sync(topic=topic, opened_by_sender=True, ranges=ranges)))
        return out

    def receive(self, peer: PeerId, message: wire.Sync, now: float) -> SyncStep:
        """Take one SYNC message from ``peer``: the answer to send and the ids to fetch."""
        link = self._links.get(peer, {}).get(message.topic)
        if link is None:
            return SyncStep(reply=None, known=False)
        index = self._holdings.index(message.topic)
        if message.opened_by_sender:
            # Rule 3: answering the peer's reconciliation keeps no state.
            ranges, missing = reconcile(index, message.ranges, self._config)
            reply = None
            if demands_answer(message.ranges):
                reply = wire.Sync(topic=message.topic, opened_by_sender=False, ranges=ranges)
            return SyncStep(reply=reply, missing=tuple(missing))
        if link.waiting is None:
            return SyncStep(reply=None)  # an answer after we gave up: ignore it
        link.rounds += 1
        ranges, missing = reconcile(index, message.ranges, self._config)
        link.found += len(missing)
        if demands_answer(ranges):
            if link.rounds < self._config.max_rounds:
                link.waiting = now
                return SyncStep(
                    reply=wire.Sync(topic=message.topic, opened_by_sender=True, ranges=ranges),
                    missing=tuple(missing),
                )
            reply = None
            self._finish(link, now, failed=True)
        else:
            reply = (
                wire.Sync(topic=message.topic, opened_by_sender=True, ranges=ranges)
                if ranges
                else None
            )
            self._finish(link, now, failed=False)
        return SyncStep(
            reply=reply,
            missing=tuple(missing),
            completed=True,
            rounds=link.rounds,
            found=link.found,
        )

    def _finish(self, link: _Link, now: float, *, failed: bool) -> None:
        link.waiting = None
        self._active -= 1
        cfg = self._config
        again: float | None = now + (cfg.retry if failed else cfg.interval)
        if not link.initiator and not failed:
            again = None
        if link.due is not None:
            again = link.due if again is None else min(again, link.due)
        link.due = again
