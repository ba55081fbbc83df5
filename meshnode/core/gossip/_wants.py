"""The want scheduler: which missing bulletin is asked of which peer, and when.

Rules (normative text: docs/spec/gossip.md, "Pull" and "Fair fetching"):
- A *want* is a bulletin id to fetch on a topic, with up to 8 candidate peers
  (the announcers, the peer whose sync range listed it, the senders of its
  successor). It is queued with one candidate at a time, round robin, for
  ``want_attempts`` attempts in all; then it is given up (sync finds it again).
- Per peer, at most ``max_inflight`` ids are asked and unanswered; the rest
  wait in the peer's queue. ``dispatch`` asks what fits, in WANT messages of
  at most 256 ids per topic.
- An asked id not delivered within ``want_timeout`` moves to its next
  candidate. If the peer asked was the want's owner and the want came from
  its announcement (``eager``), that is a broken promise (the machine scores it).
- Fair fetching: a want belongs to its first candidate, the peer whose
  ANNOUNCE or SYNC made it. At most ``max_wants`` wants in all, at most
  ``max_wants_per_peer`` owned by one peer and ``max_wants_per_topic`` on one
  topic: a peer announcing ids it never delivers fills its own share, never
  the table. When the table or a topic is full, a peer holding fewer wants
  there than the hungriest owner takes the place of that owner's newest want
  not yet asked: many throw-away keys together fill the table, but cannot keep
  a peer with few wants out of it.
- When a peer goes away, what it was asked and what waited for it move on at
  once. A peer counts as a candidate only while ``reachable`` says it shares
  the want's topic over a live session.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from meshnode.core import wire
from meshnode.core.wire import BulletinId, PeerId, Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from meshnode.core.gossip._config import GossipConfig

__all__ = ["Want", "WantScheduler"]

MAX_CANDIDATES: Final = 8


class Want:
    """One bulletin to fetch."""

    __slots__ = (
        "asked", "attempts", "candidates", "deadline", "eager", "owner", "queued", "topic"
    )  # fmt: skip

    def __init__(self, topic: Topic, eager: bool, owner: PeerId | None) -> None:
        self.topic = topic
        self.eager = eager
        """Made by an announcement (fresh, so pushed on when accepted)."""
        self.owner = owner
        """The peer whose announcement or sync made this want: its quota pays for it."""
        self.candidates: list[PeerId] = []
        self.asked: PeerId | None = None
        """The peer asked (in flight), if any."""
        self.queued: PeerId | None = None
        """The peer whose queue it waits in, if any."""
        self.attempts = 0
        self.deadline = 0.0


class _Slots:
    __slots__ = ("asked", "queue")

    def __init__(self) -> None:
        self.queue: deque[BulletinId] = deque()
        self.asked: dict[BulletinId, None] = {}


class WantScheduler:
    """Every want, each peer's queue and in-flight ids, and the quotas (see the rules).

    Args:
        config: max_wants, max_wants_per_peer, max_wants_per_topic,
            max_inflight, want_timeout and want_attempts are used.
        reachable: whether a peer may be asked for an id on a topic now.
    """

    __slots__ = (
        "_config", "_deadlines", "_in", "_of", "_owned", "_peers", "_reachable", "_wants",
        "ready",
    )  # fmt: skip

    def __init__(
        self, config: GossipConfig, reachable: Callable[[PeerId, Topic], bool]
    ) -> None:
        self._config = config
        self._reachable = reachable
        self._wants: dict[BulletinId, Want] = {}
        self._of: dict[PeerId, int] = {}
        """Wants per owner (see ``Want.owner``): no peer takes more than its share."""
        self._in: dict[Topic, int] = {}
        """Wants per topic: no topic starves the others."""
        self._owned: dict[tuple[Topic, PeerId], dict[BulletinId, None]] = {}
        """(topic, owner) -> its wants there, oldest first: whom a newcomer displaces."""
        self._peers: dict[PeerId, _Slots] = {}
        self.ready: dict[PeerId, None] = {}
        """Peers with queued ids: ``dispatch`` has work while this is not empty."""
        self._deadlines: deque[tuple[float, BulletinId, PeerId]] = deque()

    def __len__(self) -> int:
        return len(self._wants)

    def __contains__(self, bulletin_id: object) -> bool:
        return bulletin_id in self._wants

    def owned_by(self, peer: PeerId) -> int:
        """Wants ``peer`` owns (its share is ``max_wants_per_peer``)."""
        return self._of.get(peer, 0)

    def held_in(self, topic: Topic) -> int:
        """Wants on ``topic`` (its share is ``max_wants_per_topic``)."""
        return self._in.get(topic, 0)

    def add_peer(self, peer: PeerId) -> None:
        """A session opened: ``peer`` may be asked (when ``reachable`` agrees)."""
        self._peers[peer] = _Slots()

    def remove_peer(self, peer: PeerId) -> None:
        """The session closed (or the peer was dropped): its wants move on.

        ``reachable`` must already say no for ``peer``.
        """
        self.ready.pop(peer, None)
        slots = self._peers.pop(peer, None)
        if slots is None:
            return
        for bulletin_id in [*slots.asked, *slots.queue]:
            want = self._wants.get(bulletin_id)
            if want is None or peer not in (want.asked, want.queued):
                continue
            want.asked = want.queued = None
            if peer in want.candidates:
                want.candidates.remove(peer)
            self._place(want, bulletin_id)

    def want(
        self, bulletin_id: BulletinId, topic: Topic, candidates: Iterable[PeerId], *, eager: bool
    ) -> bool:
        """Fetch ``bulletin_id`` from one of ``candidates`` (the first owns a new want).

        An id already wanted gains the candidates (and eagerness). Returns False,
        wanting nothing, when the table, the owner's share or the topic's is full.
        """
        candidates = tuple(candidates)
        want = self._wants.get(bulletin_id)
        new = want is None
        if want is None:
            cfg = self._config
            owner = candidates[0] if candidates else None
            if self._of.get(owner or PeerId(b""), 0) >= cfg.max_wants_per_peer:
                return False
            full_topic = self._in.get(topic, 0) >= cfg.max_wants_per_topic
            if (full_topic or len(self._wants) >= cfg.max_wants) and not self._displace(
                topic if full_topic else None, owner
            ):
                return False
            want = self._wants[bulletin_id] = Want(topic, eager, owner)
            if owner is not None:
                self._of[owner] = self._of.get(owner, 0) + 1
                self._owned.setdefault((topic, owner), {})[bulletin_id] = None
            self._in[topic] = self._in.get(topic, 0) + 1
        want.eager |= eager
        for peer in candidates:
            if peer not in want.candidates and len(want.candidates) < MAX_CANDIDATES:
                want.candidates.append(peer)
        if new:
            self._place(want, bulletin_id)
        return True

    def arrived(self, bulletin_id: BulletinId) -> Want | None:
        """``bulletin_id`` came (asked or not), or the node has it: the want, if it was one,
        is over and frees its slot with the peer asked."""
        if bulletin_id not in self._wants:
            return None
        want = self._drop(bulletin_id)
        if want is not None and want.asked is not None:
            slots = self._peers.get(want.asked)
            if slots is not None:
                slots.asked.pop(bulletin_id, None)
                if slots.queue:
                    self.ready[want.asked] = None
        return want

    def dispatch(self, now: float) -> list[tuple[PeerId, wire.Want]]:
        """Ask each peer for what fits in its in-flight slots; the WANTs to send, in order."""
        out: list[tuple[PeerId, wire.Want]] = []
        if not self.ready:
            return out
        cap = self._config.max_inflight
        deadline = now + self._config.want_timeout
        for peer in list(self.ready):  # only live peers: remove_peer takes the others out
            slots = self._peers[peer]
            batches: dict[Topic, list[BulletinId]] = {}
            while slots.queue and len(slots.asked) < cap:
                bulletin_id = slots.queue.popleft()
                want = self._wants.get(bulletin_id)
                if want is None or want.queued != peer:
                    continue
                want.queued, want.asked, want.deadline = None, peer, deadline
                want.attempts += 1
                slots.asked[bulletin_id] = None
                self._deadlines.append((deadline, bulletin_id, peer))
                batches.setdefault(want.topic, []).append(bulletin_id)
            for topic, ids in batches.items():
                for i in range(0, len(ids), wire.MAX_WANT):
                    chunk = tuple(ids[i : i + wire.MAX_WANT])
                    out.append((peer, wire.Want(topic=topic, ids=chunk)))
            if not slots.queue:
                del self.ready[peer]
        return out

    def expire(self, now: float, broken_promise: Callable[[PeerId], None]) -> int:
        """Move every want asked ``want_timeout`` ago and not delivered to its next
        candidate (or give it up); returns how many timed out.

        ``broken_promise(peer)`` is called, as each is found, for a peer that did
        not deliver an id it announced; it may remove the peer.
        """
        timeouts = 0
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, bulletin_id, peer = deadlines.popleft()
            want = self._wants.get(bulletin_id)
            if want is None or want.asked != peer or want.deadline != deadline:
                continue
            slots = self._peers.get(peer)
            if slots is not None:
                slots.asked.pop(bulletin_id, None)
                if slots.queue:
                    self.ready[peer] = None
                if want.eager and peer == want.owner:
                    broken_promise(peer)
            want.asked = None
            timeouts += 1
            self._place(want, bulletin_id)
        return timeouts

    def _place(self, want: Want, bulletin_id: BulletinId) -> None:
        """Queue ``want`` with its next reachable candidate, or give it up."""
        while want.candidates and want.attempts < self._config.want_attempts:
            peer = want.candidates[want.attempts % len(want.candidates)]
            if not self._reachable(peer, want.topic):
                want.candidates.remove(peer)
                continue
            want.queued = peer
            self._peers[peer].queue.append(bulletin_id)
            self.ready[peer] = None
            return
        self._drop(bulletin_id)

    def _displace(self, topic: Topic | None, owner: PeerId | None) -> bool:
        """Make room for a want of ``owner`` on a full ``topic`` (None: the table is
        full): drop the newest want not yet asked of the owner holding the most there,
        if that is more than ``owner`` holds there plus one. False if none qualifies."""
        if owner is None:
            return False
        def held(peer: PeerId) -> int:
            if topic is None:
                return self._of.get(peer, 0)
            return len(self._owned.get((topic, peer), ()))
        hungriest = max(self._of, key=held, default=None)
        if hungriest is None or held(hungriest) <= held(owner) + 1:
            return False
        topics = [topic] if topic is not None else [t for t, p in self._owned if p == hungriest]
        for t in topics:
            for bulletin_id in reversed(self._owned.get((t, hungriest), {})):
                if self._wants[bulletin_id].asked is None:
                    self._drop(bulletin_id)
                    return True
        return False

    def _drop(self, bulletin_id: BulletinId) -> Want | None:
        """Forget a want (arrived, given up or displaced), freeing its owner's and topic's
        quota (a queued id left in a peer's queue is skipped when its turn comes)."""
        want = self._wants.pop(bulletin_id, None)
        if want is not None:
            if want.owner is not None:
                left = self._of.get(want.owner, 0) - 1
                if left > 0:
                    self._of[want.owner] = left
                else:
                    self._of.pop(want.owner, None)
                owned = self._owned.get((want.topic, want.owner))
                if owned is not None:
                    owned.pop(bulletin_id, None)
                    if not owned:
                        del self._owned[(want.topic, want.owner)]
            left = self._in.get(want.topic, 0) - 1
            if left > 0:
                self._in[want.topic] = left
            else:
                self._in.pop(want.topic, None)
        return want
