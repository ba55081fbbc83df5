"""Intake: what becomes of each bulletin received, from its id to the node's verdict.

Rules (normative text: docs/spec/gossip.md, "Validation and the verdict"; the
steps are that section's, step 1, wants and the bulletin rate, is the machine's):
2. Dedup: an id in the seen-cache is a duplicate, dropped unverified. A copy
   of an invalid bulletin costs its sender again; the same bulletin twice from
   one peer is a replay, except one more copy from the peer asked for it with
   a WANT (its push and its answer may cross). An id in the store is a
   duplicate too.
3. A sender that shares no topic at all is charged, unverified.
4. Verify (decode and check the signature); failure is remembered, charged.
5. A direct bulletin or key update, or one on a topic the sender does not
   share, is refused and charged.
6. The bulletin is pending: the node is told (BulletinReceived; ForkDetected
   too if it holds another bulletin by that author with that seq) and gives
   its verdict with accept or reject. At most ``max_pending`` wait; beyond
   that new ones are dropped unverified. No verdict within ``verdict_timeout``
   counts as a rejection.
- The seen-cache keeps each id's state and up to 8 senders for ``seen_ttl``,
  at most ``max_seen`` ids; the oldest go first, except those still pending.
- Nothing here sends or charges: ``check`` returns the offence, the machine
  charges it.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Final

from meshnode.core.bulletin import Bulletin
from meshnode.core.gossip._events import BulletinReceived, Counters, Event, ForkDetected
from meshnode.core.gossip._offences import Offence
from meshnode.core.sync import Holdings, topic_of
from meshnode.core.wire import BulletinId, PeerId, Topic
from meshnode.errors import InvalidBulletin

if TYPE_CHECKING:
    from collections.abc import Container

    from meshnode.core.gossip._config import GossipConfig

__all__ = ["Intake", "Pending", "PendingVerdicts", "Seen", "SeenCache", "SeenState"]

MAX_SENDERS: Final = 8


class SeenState(Enum):
    """What became of a bulletin id the machine has seen."""

    PENDING = "verified, awaiting the node's verdict"
    ACCEPTED = "accepted or published here: relayed"
    REJECTED = "refused by the node (or its verdict timed out): never relayed"
    INVALID = "failed verification: each copy costs its sender"
    HELD = "already in the store when it came"


class Seen:
    """One seen-cache entry: its state and who sent it (at most 8 peers, first first).

    ``excused``: the peer asked for it with a WANT, which may race its own push
    with its answer, so one more copy from it is not a replay.
    """

    __slots__ = ("excused", "senders", "state")

    def __init__(self, state: SeenState, senders: tuple[PeerId, ...]) -> None:
        self.state = state
        self.senders = senders
        self.excused: PeerId | None = None


class SeenCache(dict[BulletinId, Seen]):
    """Seen ids, bounded in number (``size``) and time (``ttl``); read it as a dict,
    add to it with ``remember`` only."""

    __slots__ = ("_order", "_size", "_ttl")

    def __init__(self, *, size: int, ttl: float) -> None:
        super().__init__()
        self._size = size
        self._ttl = ttl
        self._order: deque[tuple[float, BulletinId]] = deque()

    def remember(
        self,
        bulletin_id: BulletinId,
        state: SeenState,
        senders: tuple[PeerId, ...],
        now: float,
        *,
        keep: Container[BulletinId],
    ) -> Seen:
        """A new entry; beyond ``size``, the oldest entries not in ``keep`` are forgotten.

        ``keep`` must hold fewer ids than ``size`` (GossipConfig checks that
        max_pending is below max_seen).
        """
        seen = self[bulletin_id] = Seen(state, senders)
        self._order.append((now + self._ttl, bulletin_id))
        while len(self) > self._size:
            old = self._order.popleft()[1]
            if old not in keep:
                self.pop(old, None)
            else:
                self._order.append((now + self._ttl, old))
        return seen

    def expire(self, now: float) -> None:
        """Forget the entries older than ``ttl``."""
        order = self._order
        while order and order[0][0] <= now:
            self.pop(order.popleft()[1], None)


class Pending:
    """A verified bulletin awaiting the node's verdict.

    ``eager``: fresh (pushed, or pulled after an announcement), so pushed on;
    otherwise (fetched by sync or a gap walk) only announced on.
    """

    __slots__ = ("bulletin", "eager", "since", "topic")

    def __init__(self, bulletin: Bulletin, topic: Topic, since: float, eager: bool) -> None:
        self.bulletin, self.topic, self.since, self.eager = bulletin, topic, since, eager


class PendingVerdicts:
    """The bulletins the node has been told about and not yet accepted or rejected."""

    __slots__ = ("_entries", "_order")

    def __init__(self) -> None:
        self._entries: dict[BulletinId, Pending] = {}
        self._order: deque[tuple[float, BulletinId]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, bulletin_id: object) -> bool:
        return bulletin_id in self._entries

    def add(self, bulletin_id: BulletinId, pending: Pending) -> None:
        self._entries[bulletin_id] = pending
        self._order.append((pending.since, bulletin_id))

    def pop(self, bulletin_id: BulletinId) -> Pending | None:
        """The verdict came: forget the bulletin (None if it was not waiting)."""
        return self._entries.pop(bulletin_id, None)

    def overdue(self, now: float, timeout: float) -> list[BulletinId]:
        """The ids waiting ``timeout`` seconds or more, oldest first (still waiting)."""
        due: list[BulletinId] = []
        order = self._order
        while order and order[0][0] + timeout <= now:
            since, bulletin_id = order.popleft()
            pending = self._entries.get(bulletin_id)
            if pending is not None and pending.since == since:
                due.append(bulletin_id)
        return due


class Intake:
    """Steps 2 to 6 for every bulletin received, the seen-cache and the pending verdicts.

    Args:
        config: max_seen, seen_ttl, max_pending and verdict_timeout are used.
        holdings: what the node stores (``has`` and ``seq_id`` are asked).
        counters: the machine's; received, duplicates, invalid, overloaded,
            accepted and rejected are counted here.
    """

    __slots__ = ("_config", "_holdings", "_n", "pending", "seen")

    def __init__(self, config: GossipConfig, holdings: Holdings, counters: Counters) -> None:
        self._config = config
        self._holdings = holdings
        self._n = counters
        self.seen = SeenCache(size=config.max_seen, ttl=config.seen_ttl)
        self.pending = PendingVerdicts()

    def check(
        self,
        peer: PeerId,
        bulletin_id: BulletinId,
        raw: bytes,
        shared: Container[Topic],
        *,
        asked: PeerId | None,
        eager: bool,
        now: float,
        events: list[Event],
    ) -> tuple[Offence, str] | None:
        """Steps 2 to 6 for ``raw`` from ``peer``, which shares ``shared`` (step 1 done:
        ``asked`` is the peer it was asked of, if it was wanted).

        Returns the offence to charge ``peer`` with, and its detail; None if it
        costs nothing. A new bulletin becomes pending and is reported in ``events``.
        """
        n = self._n
        seen = self.seen.get(bulletin_id)
        if seen is not None:
            # (a want is popped by the first copy, so duplicates come unasked)
            n.duplicates += 1
            if seen.state is SeenState.INVALID:
                return Offence.INVALID_BULLETIN, ""
            if peer not in seen.senders:
                if len(seen.senders) < MAX_SENDERS:
                    seen.senders += (peer,)
            elif seen.excused == peer:
                seen.excused = None
            else:
                return Offence.REPLAY, ""
            return None
        if self._holdings.has(bulletin_id):
            n.duplicates += 1
            self._remember(bulletin_id, SeenState.HELD, (peer,), now).excused = asked
            return None
        if not shared:
            return Offence.WRONG_TOPIC, ""
        try:
            bulletin = Bulletin.from_bytes(raw)
        except InvalidBulletin as exc:
            n.invalid += 1
            self._remember(bulletin_id, SeenState.INVALID, (peer,), now)
            return Offence.INVALID_BULLETIN, str(exc)
        topic = topic_of(bulletin)
        if topic is None:
            return Offence.WRONG_KIND, ""
        if topic not in shared:
            return Offence.WRONG_TOPIC, ""
        if len(self.pending) >= self._config.max_pending:
            n.overloaded += 1
            return None
        n.received += 1
        self._remember(bulletin_id, SeenState.PENDING, (peer,), now).excused = asked
        self.pending.add(bulletin_id, Pending(bulletin, topic, now, eager))
        held = self._holdings.seq_id(topic, bulletin.author, bulletin.seq)
        if held is not None and held != bulletin_id:
            fork = ForkDetected(
                topic=topic,
                author=bulletin.author,
                seq=bulletin.seq,
                held=BulletinId(held),
                received=bulletin_id,
            )
            events.append(fork)
        events.append(BulletinReceived(peer=peer, bulletin=bulletin, topic=topic))
        return None

    def own(self, bulletin_id: BulletinId, now: float) -> bool:
        """A bulletin this node made (and no longer pending): accepted here. False if it
        already was."""
        seen = self.seen.get(bulletin_id)
        if seen is None:
            self._remember(bulletin_id, SeenState.ACCEPTED, (), now)
        elif seen.state is SeenState.ACCEPTED:
            return False
        else:
            seen.state = SeenState.ACCEPTED
        return True

    def accept(self, bulletin_id: BulletinId) -> tuple[Pending, tuple[PeerId, ...]] | None:
        """The node's verdict: accepted. The bulletin and its senders; None if not pending."""
        pending = self.pending.pop(bulletin_id)
        if pending is None:
            return None
        seen = self.seen.get(bulletin_id)
        senders: tuple[PeerId, ...] = ()
        if seen is not None:
            seen.state = SeenState.ACCEPTED
            senders = seen.senders
        self._n.accepted += 1
        return pending, senders

    def reject(self, bulletin_id: BulletinId) -> tuple[PeerId, ...] | None:
        """The node's verdict: rejected. Its senders (if still remembered); None if it
        was not pending."""
        if self.pending.pop(bulletin_id) is None:
            return None
        self._n.rejected += 1
        seen = self.seen.get(bulletin_id)
        if seen is None:
            return ()
        seen.state = SeenState.REJECTED
        return seen.senders

    def overdue(self, now: float) -> list[BulletinId]:
        """The pending bulletins whose verdict is overdue (they count as rejected)."""
        return self.pending.overdue(now, self._config.verdict_timeout)

    def _remember(
        self, bulletin_id: BulletinId, state: SeenState, senders: tuple[PeerId, ...], now: float
    ) -> Seen:
        return self.seen.remember(bulletin_id, state, senders, now, keep=self.pending)
