"""The budget (rules 4 and 8 of :mod:`meshnode.store`): the quota per author, the
shares, trust and where a relayed bulletin came from, the running totals every bound
is read from, and eviction with the ids it remembers.

Admission itself, which weighs a bulletin against these, is
:meth:`~meshnode.store.bulletins._Bulletins._admit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

from meshnode.core.bulletin import Bulletin, Kind
from meshnode.store._base import _Room

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable, Sequence

DEFAULT_AUTHOR_QUOTA: Final = 64 * 1024 * 1024
"""Bytes of bulletins held for one author, unless the node is configured otherwise."""

MAIL_BYTES_PER_RECIPIENT: Final = 16 * 1024 * 1024
"""Bytes held for one recipient, from every author: its share. Half of it (and half
of the budget's mail share) is kept for authors with standing, so throw-away keys
together fill no more than the other half."""
EVICTED_KEPT: Final = 100_000
"""Ids of evicted bulletins remembered, so that anti-entropy does not fetch them
again (the oldest are forgotten first)."""
_EVICT_SLACK: Final = 256
"""Eviction frees at least 1/256 of the public share at a time, so that a full share
does not evict on every insert."""

_ENDORSED_CACHE: Final = 4096
"""Authors whose endorsement is remembered in memory (a bound, as for contacts)."""

_MIB: Final = 1024 * 1024


class Share(IntEnum):
    """Which part of the budget a held bulletin counts against (docs/spec/store.md,
    "Budget"); mail held for others is the third, in its own table."""

    CHANNELS = 1
    """Our channels' bulletins and direct bulletins addressed to us: never evicted."""
    PUBLIC = 2
    """The public topic: admitted by trust, evicted least trusted and oldest first."""


class Trust(IntEnum):
    """How well this node knows a bulletin's author, best first: public admission
    favours the lower values and eviction takes the highest first."""

    OWN = 0
    """This node's group: never evicted, never refused for room."""
    KNOWN = 1
    """A contact or a member of one of our channels."""
    ENDORSED = 2
    """An author one of the known groups endorsed."""
    STRANGER = 3
    """Anyone else: what strangers fill is also bounded per key and per peer."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a relayed bulletin came from, as admission counts it.

    Attributes:
        trust: its author's standing with this node.
        peer: the key of the session's peer that delivered it (empty: none).
        network: that peer's source network, its /24 or /64
            (:func:`meshnode.core.address.network_of`; empty: none).
    """

    trust: Trust
    peer: bytes = b""
    network: bytes = b""


LOCAL: Final = Origin(Trust.KNOWN)
"""The origin of what the node stores for itself: its posts, what it fetched on a
join, direct bulletins delivered to it."""


@dataclass(frozen=True, slots=True)
class Budget:
    """Bytes the store may hold, per share (``[store]`` in ``meshnode.toml``).

    Our own bulletins are always taken (they may push a share past its bound) and
    membership operations count nothing, as for the quota.
    """

    channels: int = 1024 * _MIB
    public: int = 614 * _MIB
    mail: int = 409 * _MIB
    per_stranger: int | None = None
    """Bytes of public bulletins held for one author without standing (default: a
    64th of the public share)."""
    per_source: int | None = None
    """Bytes of strangers' public bulletins that one peer key, or one source network,
    may make this node hold (default: a 16th of the public share)."""

    @classmethod
    def split(cls, total_mb: int, channels: int, public: int, mail: int) -> Budget:
        """``total_mb`` megabytes split by percentages (which sum to 100 at most)."""
        if min(channels, public, mail) < 0 or channels + public + mail > 100:
            raise ValueError("the shares are percentages that add up to 100 at most")
        part = total_mb * _MIB // 100
        return cls(channels=part * channels, public=part * public, mail=part * mail)

    @property
    def stranger_per_author(self) -> int:
        """:attr:`per_stranger`, or its default."""
        return self.public // 64 if self.per_stranger is None else self.per_stranger

    @property
    def stranger_per_source(self) -> int:
        """:attr:`per_source`, or its default."""
        return self.public // 16 if self.per_source is None else self.per_source

    @property
    def mail_per_recipient(self) -> int:
        """Bytes of mail held for one recipient (see :data:`MAIL_BYTES_PER_RECIPIENT`)."""
        return min(MAIL_BYTES_PER_RECIPIENT, self.mail)


_DROPPED: Final = (
    "SELECT id, author, stream, CASE WHEN kind = 5 THEN 0 ELSE length(raw) END, "
    "share, trust, via, net FROM bulletins"
)
"""What :meth:`Store._drop` needs of each row it deletes (its charged size third)."""
_USAGE: Final = "SELECT bytes FROM usage WHERE author = ?"


def share_of(bulletin: Bulletin) -> Share:
    """The share a bulletin counts against: public bulletins and endorsements of the
    public topic, or ours (a channel's, or direct)."""
    if bulletin.channel_id is None and bulletin.kind not in (Kind.DIRECT, Kind.KEY_UPDATE):
        return Share.PUBLIC
    return Share.CHANNELS


def _sources(peer: bytes | None, network: bytes | None) -> tuple[bytes, ...]:
    """The ``source_usage`` keys a stranger's bulletin delivered by ``peer`` from
    ``network`` counts against (a row's ``via`` and ``net``, or an :class:`Origin`'s)."""
    return tuple(tag + bytes(v) for v, tag in ((peer, b"p"), (network, b"n")) if v)


class _Tally:
    """The running totals (``usage``, ``share_usage``, ``source_usage``) for one
    transaction: each value read once, changes kept and written back by :meth:`write`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._authors: dict[bytes, list[int]] = {}
        """Author -> [bytes held, change]."""
        self._sources: dict[bytes, list[int]] = {}
        self._shares: dict[tuple[int, int], list[int]] = {
            (s, t): [b, 0] for s, t, b in db.execute("SELECT share, trust, bytes FROM share_usage")
        }
        self._pending: dict[tuple[int, int], int] = {}
        """What this batch added, per (share, trust): not yet rows, so not evictable."""

    def author(self, author: bytes) -> int:
        return self._cell(self._authors, author, _USAGE)[0]

    def source(self, source: bytes) -> int:
        return self._cell(self._sources, source, "SELECT bytes FROM source_usage WHERE source = ?")[
            0
        ]

    def share(self, share: Share) -> int:
        return sum(v[0] for (s, _), v in self._shares.items() if s == share)

    def evictable(self, trust: Trust) -> int:
        """Public bytes that a bulletin trusted ``trust`` may displace."""
        low = max(int(trust), int(Trust.KNOWN))
        return sum(
            v[0] - self._pending.get((s, t), 0)
            for (s, t), v in self._shares.items()
            if s == Share.PUBLIC and t >= low
        )

    def add(
        self, author: bytes, share: Share, trust: Trust, sources: Sequence[bytes], size: int
    ) -> None:
        """:meth:`charge` for a bulletin this batch adds."""
        self.charge(author, share, trust, sources, size)
        key = (int(share), int(trust))
        self._pending[key] = self._pending.get(key, 0) + size

    def charge(
        self, author: bytes, share: Share, trust: Trust, sources: Sequence[bytes], size: int
    ) -> None:
        self._add(self._cell(self._authors, author, _USAGE), size)
        self._add(self._shares.setdefault((int(share), int(trust)), [0, 0]), size)
        for source in sources:
            self.source(source)
            self._add(self._sources[source], size)

    def move(
        self, share: Share, old: Trust, new: Trust, sources: Sequence[bytes], size: int
    ) -> None:
        self._add(self._shares.setdefault((int(share), int(old)), [0, 0]), -size)
        self._add(self._shares.setdefault((int(share), int(new)), [0, 0]), size)
        for source in sources:
            self.source(source)
            self._add(self._sources[source], -size)

    def write(self) -> None:
        self._db.executemany(
            "INSERT INTO usage (author, bytes) VALUES (?, ?) "
            "ON CONFLICT (author) DO UPDATE SET bytes = bytes + excluded.bytes",
            [(a, d) for a, (_, d) in self._authors.items() if d],
        )
        self._db.executemany(
            "INSERT INTO share_usage (share, trust, bytes) VALUES (?, ?, ?) "
            "ON CONFLICT (share, trust) DO UPDATE SET bytes = bytes + excluded.bytes",
            [(s, t, d) for (s, t), (_, d) in self._shares.items() if d],
        )
        self._db.executemany(
            "INSERT INTO source_usage (source, bytes) VALUES (?, ?) "
            "ON CONFLICT (source) DO UPDATE SET bytes = bytes + excluded.bytes",
            [(s, d) for s, (_, d) in self._sources.items() if d],
        )
        self._db.executemany(
            "DELETE FROM source_usage WHERE source = ? AND bytes <= 0",
            [(s,) for s, (_, d) in self._sources.items() if d < 0],
        )

    def _cell(self, cache: dict[bytes, list[int]], key: bytes, query: str) -> list[int]:
        cell = cache.get(key)
        if cell is None:
            row = self._db.execute(query, (key,)).fetchone()
            cell = cache[key] = [int(row[0]) if row else 0, 0]
        return cell

    @staticmethod
    def _add(cell: list[int], amount: int) -> None:
        cell[0] += amount
        cell[1] += amount


class _Budgeting(_Room):
    """The store's running totals as bulletins go, eviction, and trust (rule 8)."""

    _budget: Budget
    _evictions: list[bytes]
    _endorsed: dict[bytes, bool]

    def _evict(self, tally: _Tally, trust: Trust, over: int) -> None:
        """Delete public bulletins trusted no more than ``trust`` (and not our own),
        least trusted and oldest first, until ``over`` bytes (and at least the
        :data:`_EVICT_SLACK` part of the public share) are freed or none is left;
        remember their ids (:data:`EVICTED_KEPT`)."""
        amount = max(over, self._budget.public // _EVICT_SLACK)
        freed = 0
        while freed < amount:
            rows = self._db.execute(
                f"{_DROPPED} WHERE share = 2 AND trust > 0 AND trust >= ? "
                "ORDER BY trust DESC, cursor LIMIT 64",
                (int(trust),),
            ).fetchall()
            if not rows:
                break
            freed += self._drop(rows, tally)
            ids = [(r[0],) for r in rows]
            self._db.executemany("INSERT OR IGNORE INTO evicted (id) VALUES (?)", ids)
            self._evictions.extend(bytes(r[0]) for r in rows)
        self._db.execute(
            "DELETE FROM evicted WHERE n <= (SELECT max(n) FROM evicted) - ?", (EVICTED_KEPT,)
        )

    def _drop(self, rows: Sequence[Sequence[Any]], tally: _Tally | None = None) -> int:
        """Delete bulletins selected with :data:`_DROPPED` and take them off every
        running total; returns the bytes they were charged."""
        own = tally if tally is not None else _Tally(self._db)
        freed = 0
        held: dict[tuple[bytes, bytes], int] = {}
        for _, author, stream, size, share, trust, via, net in rows:
            author, stream = bytes(author), bytes(stream)
            sources = _sources(via, net)
            own.charge(author, Share(share), Trust(trust), sources, -size)
            held[(stream, author)] = held.get((stream, author), 0) + 1
            freed += size
        self._db.executemany(
            "UPDATE frontiers SET held = held - ? WHERE stream = ? AND author = ?",
            [(n, stream, author) for (stream, author), n in held.items()],
        )
        self._db.executemany("DELETE FROM bulletins WHERE id = ?", [(r[0],) for r in rows])
        if tally is None:
            own.write()
        return freed

    def take_evictions(self) -> list[bytes]:
        """The ids evicted since the last call (for the indexes above the store)."""
        evicted, self._evictions = self._evictions, []
        return evicted

    def raise_trust(self, authors: Iterable[bytes], trust: Trust) -> None:
        """These authors are now trusted ``trust``: their bulletins held at a lower
        trust are moved up (so eviction spares them, and strangers' bounds no longer
        count them)."""
        keys = [a for a in authors if self._db.execute(
            "SELECT 1 FROM bulletins WHERE author = ? AND trust > ? LIMIT 1", (a, int(trust))
        ).fetchone()]  # fmt: skip
        if not keys:
            return
        with self._transaction():
            tally = _Tally(self._db)
            for author in keys:
                rows = self._db.execute(
                    f"{_DROPPED} WHERE author = ? AND trust > ?", (author, int(trust))
                ).fetchall()
                for _, _, _, size, share, old, via, net in rows:
                    sources = _sources(via, net)
                    tally.move(Share(share), Trust(old), trust, sources, size)
                self._db.execute(
                    "UPDATE bulletins SET trust = ?, via = NULL, net = NULL "
                    "WHERE author = ? AND trust > ?",
                    (int(trust), author, int(trust)),
                )
            tally.write()

    def endorse(self, author: bytes, *, now: int) -> None:
        """A known group endorsed a bulletin of ``author``: it is trusted
        :attr:`Trust.ENDORSED` from now on (remembered across restarts)."""
        if self.endorsed(author):
            return
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO endorsed (author, since) VALUES (?, ?)", (author, now)
            )
        self._endorsed[author] = True
        self.raise_trust([author], Trust.ENDORSED)

    def endorsed(self, author: bytes) -> bool:
        """Whether a known group endorsed one of ``author``'s bulletins (cached: asked for
        every bulletin a stranger sends)."""
        if author in self._endorsed:
            return self._endorsed[author]
        found = (
            self._db.execute("SELECT 1 FROM endorsed WHERE author = ?", (author,)).fetchone()
            is not None
        )
        if len(self._endorsed) >= _ENDORSED_CACHE:
            self._endorsed.clear()
        self._endorsed[author] = found
        return found

    def known(self, bulletin_id: bytes) -> bool:
        """Whether the bulletin is held, or was evicted (and is not to be fetched again)."""
        row = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM bulletins WHERE id = ?) "
            "OR EXISTS (SELECT 1 FROM evicted WHERE id = ?)",
            (bulletin_id, bulletin_id),
        ).fetchone()
        return bool(row[0])

    def budget_use(self) -> dict[str, tuple[int, int]]:
        """Per share, (bytes held, bytes it may hold): ``channels``, ``public``, ``mail``."""
        held = dict.fromkeys(Share, 0)
        for share, total in self._db.execute(
            "SELECT share, sum(bytes) FROM share_usage GROUP BY share"
        ):
            held[Share(share)] = int(total)
        mail = self._db.execute(
            "SELECT bytes FROM mail_usage WHERE recipient = x'' AND author = x''"
        ).fetchone()
        return {
            "channels": (held[Share.CHANNELS], self._budget.channels),
            "public": (held[Share.PUBLIC], self._budget.public),
            "mail": (int(mail[0]) if mail else 0, self._budget.mail),
        }

    def evicted_count(self) -> int:
        """How many evicted ids are remembered."""
        return int(self._db.execute("SELECT count(*) FROM evicted").fetchone()[0])

    def usage(self, author: bytes) -> int:
        """Bytes of bulletins held for an author, as its quota counts them."""
        row = self._db.execute("SELECT bytes FROM usage WHERE author = ?", (author,)).fetchone()
        return int(row[0]) if row else 0
