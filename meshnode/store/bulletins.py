"""Bulletins (rules 2, 3 and 4 of :mod:`meshnode.store`): taking them in batches,
admission against the quota and the budget, forks, and the queries the mesh asks
of what is held (by id, by stream, by channel, in arrival order).
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Final

from meshnode.core.bulletin import Bulletin, Kind
from meshnode.store.budget import (
    _DROPPED,
    LOCAL,
    Origin,
    Share,
    Trust,
    _Budgeting,
    _sources,
    _Tally,
    share_of,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


class Insert(Enum):
    """What :meth:`Store.add` did with a bulletin."""

    ADDED = "added"
    DUPLICATE = "duplicate"
    FORK = "fork"
    """Added, and it conflicts with a held bulletin of the same author, stream and seq."""
    OVER_QUOTA = "over quota"
    """Refused: the author's quota is full."""
    NO_ROOM = "no room"
    """Refused: its share of the budget is full of what this node trusts as much or
    more, or the peer or network that delivered it has made us hold all it may."""
    EXPIRED = "expired"
    """Refused: its expiry has passed."""

    @property
    def stored(self) -> bool:
        """Whether this call wrote the bulletin (a fork is stored too, as evidence)."""
        return self in (Insert.ADDED, Insert.FORK)


@dataclass(frozen=True, slots=True)
class StoredBulletin:
    """A held bulletin: its signed bytes and where it sits in this node's arrival order."""

    cursor: int
    id: bytes
    raw: bytes
    received_at: int


@dataclass(frozen=True, slots=True)
class Fork:
    """Two bulletins by one author with the same stream and sequence number."""

    author: bytes
    stream: bytes
    seq: int
    first_id: bytes
    second_id: bytes
    detected_at: int


_STORED: Final = "SELECT cursor, id, raw, received_at FROM bulletins"
_LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"
"""The condition on ``bulletins`` that leaves out what has expired at ``now``."""


class _Bulletins(_Budgeting):
    """Held bulletins: insertion (with admission) and reads."""

    _owner: bytes | None
    _quota: int

    def add(self, bulletin: Bulletin, *, now: int) -> Insert:
        """Keep a verified bulletin durably (see rules 1, 3 and 4)."""
        return self.add_many([bulletin], now=now)[0]

    def add_many(self, bulletins: Iterable[Bulletin], *, now: int) -> list[Insert]:
        """Keep several verified bulletins in one durable transaction (one fsync)."""
        batch = list(bulletins)
        with self._transaction():
            return self._insert_many(batch, [LOCAL] * len(batch), now)

    def add_unsynced(
        self, bulletins: Sequence[Bulletin], *, now: int, origins: Sequence[Origin] | None = None
    ) -> list[Insert]:
        """:meth:`add_relayed`, then :meth:`commit_relayed`: committed when it returns."""
        results = self.add_relayed(bulletins, now=now, origins=origins)
        self.commit_relayed()
        return results

    def add_relayed(
        self, bulletins: Sequence[Bulletin], *, now: int, origins: Sequence[Origin] | None = None
    ) -> list[Insert]:
        """Write bulletins relayed by peers into the open *relay group*, a transaction
        under ``synchronous=NORMAL`` that :meth:`commit_relayed` (or any durable write,
        which commits it first) ends. Reads on this connection see them at once, so the
        node relays and shows them before the commit, and one commit (its write of the
        log, the dearest step of a small batch) serves every batch of the group.

        For bulletins relayed by peers only: nothing was acknowledged for them, and
        anti-entropy fetches again what a crash (the group not yet committed) or a power
        loss (committed, not fsynced) took from the peers that still hold it; the log
        keeps its order, never a hole. The node's own bulletins, deposits and mail go
        through the durable methods (rule 1). A failure undoes this batch only (the
        group keeps the earlier ones). ``origins`` (one per bulletin; default
        :data:`LOCAL`) is what public admission weighs (rule 8).
        """
        if origins is None:
            origins = [LOCAL] * len(bulletins)
        db = self._db
        if not db.in_transaction:
            if not self._relaxed:  # (left so for the next group: _transaction restores FULL)
                db.execute("PRAGMA synchronous=NORMAL")
                self._relaxed = True
            db.execute("BEGIN IMMEDIATE")
        db.execute("SAVEPOINT batch")
        try:
            results = self._insert_many(bulletins, origins, now)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK TO batch")
                db.execute("RELEASE batch")
            raise
        db.execute("RELEASE batch")
        self._group.extend(b.id for b, r in zip(bulletins, results, strict=True) if r.stored)
        return results

    def _insert_many(
        self, bulletins: Sequence[Bulletin], origins: Sequence[Origin], now: int
    ) -> list[Insert]:
        """Rules 3, 4 and 8 for a batch, in a transaction the caller opened.

        The queries are per batch, not per bulletin: one lookup of the ids already
        held, one of usage per author, per source and of the frontier per (author,
        stream), then one ``executemany`` per table. A rival (a held bulletin with the
        same author, stream and seq) is looked for only where one can exist: at a seq
        no higher than the frontier (``max_seq`` never falls, not even when a bulletin
        expires or is evicted), or one taken earlier in this batch. Eviction, when a
        share is full, deletes held rows at once (never this batch's).
        """
        held: set[bytes] = set()
        ids = list(dict.fromkeys(b.id for b in bulletins))
        for start in range(0, len(ids), 500):  # under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            held.update(
                bytes(r[0])
                for r in self._db.execute(f"SELECT id FROM bulletins WHERE id IN ({marks})", chunk)
            )
        tally = _Tally(self._db)
        frontier: dict[tuple[bytes, bytes], int] = {}
        """(stream, author) -> the highest seq held before this batch (0 if none)."""
        taken: dict[tuple[bytes, bytes, int], bytes] = {}
        """(stream, author, seq) -> the first id this batch added there."""
        added_frontier: dict[tuple[bytes, bytes], list[int]] = {}
        """(stream, author) -> [highest seq added, how many added]."""
        rows: list[tuple[object, ...]] = []
        forks: list[tuple[bytes, bytes, int, bytes, bytes, int]] = []
        results: list[Insert] = []
        for b, origin in zip(bulletins, origins, strict=True):
            if b.id in held:
                results.append(Insert.DUPLICATE)
                continue
            if b.expired(now):
                results.append(Insert.EXPIRED)
                continue
            author, stream, seq = b.author, b.stream, b.seq
            share = share_of(b)
            trust = Trust.OWN if author == self._owner else origin.trust
            if share is Share.CHANNELS:
                trust = min(trust, Trust.KNOWN)
            # Membership operations are never charged (docs/spec/membership.md).
            size = 0 if b.kind == Kind.MEMBERSHIP else len(b.raw)
            stranger = share is Share.PUBLIC and trust is Trust.STRANGER
            sources = _sources(origin.peer, origin.network) if stranger else ()
            refusal = self._admit(tally, author, share, trust, size, sources)
            if refusal is not None:
                results.append(refusal)
                continue
            key = (stream, author)
            top = frontier.get(key)
            if top is None:
                row = self._db.execute(
                    "SELECT max_seq FROM frontiers WHERE stream = ? AND author = ?", key
                ).fetchone()
                top = frontier[key] = row[0] if row else 0
            rival: bytes | None = None
            if seq <= top:
                row = self._db.execute(
                    "SELECT id FROM bulletins WHERE stream = ? AND author = ? AND seq = ? LIMIT 1",
                    (stream, author, seq),
                ).fetchone()
                rival = None if row is None else bytes(row[0])
            if rival is None:
                rival = taken.get((stream, author, seq))
            taken.setdefault((stream, author, seq), b.id)
            held.add(b.id)
            tally.add(author, share, trust, sources, size)
            counts = added_frontier.setdefault(key, [seq, 0])
            counts[0] = max(counts[0], seq)
            counts[1] += 1
            via, net = (origin.peer or None, origin.network or None) if sources else (None, None)
            rows.append(
                (
                    b.id, author, stream, seq, int(b.kind), b.channel_id, b.created_at,
                    b.expires_at, now, b.raw, int(share), int(trust), via, net,
                )
            )  # fmt: skip
            if rival is None:
                results.append(Insert.ADDED)
            else:
                forks.append((author, stream, seq, rival, b.id, now))
                results.append(Insert.FORK)
        if not rows:
            return results
        self._db.executemany(
            "INSERT INTO bulletins (id, author, stream, seq, kind, channel_id, created_at, "
            "expires_at, received_at, raw, share, trust, via, net) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        tally.write()
        self._db.executemany(
            "INSERT INTO frontiers (stream, author, max_seq, held) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (stream, author) DO UPDATE SET "
            "max_seq = max(max_seq, excluded.max_seq), held = held + excluded.held",
            [(stream, author, top, n) for (stream, author), (top, n) in added_frontier.items()],
        )
        if forks:
            self._db.executemany(
                "INSERT INTO forks (author, stream, seq, first_id, second_id, detected_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                forks,
            )
        return results

    def _admit(
        self,
        tally: _Tally,
        author: bytes,
        share: Share,
        trust: Trust,
        size: int,
        sources: Sequence[bytes],
    ) -> Insert | None:
        """Why a bulletin is refused (rules 4 and 8), or None to take it, after
        evicting what it may displace."""
        if trust is Trust.OWN:
            return None
        used = tally.author(author)
        if used + size > self._quota:
            return Insert.OVER_QUOTA
        if trust is Trust.STRANGER and share is Share.PUBLIC:
            if used + size > self._budget.stranger_per_author:
                return Insert.OVER_QUOTA
            if any(tally.source(s) + size > self._budget.stranger_per_source for s in sources):
                return Insert.NO_ROOM
        bound = self._budget.channels if share is Share.CHANNELS else self._budget.public
        over = tally.share(share) + size - bound
        if over <= 0:
            return None
        if share is Share.CHANNELS or tally.evictable(trust) < over:
            return Insert.NO_ROOM
        self._evict(tally, trust, over)
        return None

    def author_of(self, bulletin_id: bytes) -> bytes | None:
        """The author of a held bulletin."""
        row = self._db.execute(
            "SELECT author FROM bulletins WHERE id = ?", (bulletin_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def has(self, bulletin_id: bytes) -> bool:
        """Whether the bulletin is held."""
        return (
            self._db.execute("SELECT 1 FROM bulletins WHERE id = ?", (bulletin_id,)).fetchone()
            is not None
        )

    def get(self, bulletin_id: bytes) -> StoredBulletin | None:
        """A held bulletin by id, or None."""
        row = self._db.execute(f"{_STORED} WHERE id = ?", (bulletin_id,)).fetchone()
        return None if row is None else _stored(row)

    def get_many(self, ids: Sequence[bytes], *, now: int) -> list[StoredBulletin]:
        """The held ones among ``ids`` not expired at ``now``, in the order asked;
        others are left out."""
        found = {}
        for start in range(0, len(ids), 500):  # under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"{_STORED} WHERE id IN ({marks}) AND {_LIVE}"
            for row in self._db.execute(query, [*chunk, now]):
                found[bytes(row[1])] = _stored(row)
        return [found[i] for i in ids if i in found]

    def channel_bulletins(
        self, channel_id: bytes, *, since: int | None = None, limit: int | None = None
    ) -> list[StoredBulletin]:
        """A channel's bulletins in order: by creation time, then author and sequence."""
        rows = self._db.execute(
            f"{_STORED} WHERE channel_id = ? AND created_at >= ? "
            "ORDER BY created_at, author, seq LIMIT ?",
            (channel_id, since or 0, -1 if limit is None else limit),
        )
        return [_stored(r) for r in rows]

    def stream_bulletins(self, stream: bytes) -> list[StoredBulletin]:
        """Every held bulletin of one stream, in arrival order."""
        rows = self._db.execute(f"{_STORED} WHERE stream = ? ORDER BY cursor", (stream,))
        return [_stored(r) for r in rows]

    def arrivals(self, *, after: int = 0, limit: int = 1000) -> list[StoredBulletin]:
        """Bulletins in the order this node received them, after a cursor (for follow)."""
        rows = self._db.execute(
            f"{_STORED} WHERE cursor > ? ORDER BY cursor LIMIT ?", (after, limit)
        )
        return [_stored(r) for r in rows]

    def last_cursor(self) -> int:
        """The cursor of the newest arrival (0 for an empty store)."""
        row = self._db.execute("SELECT max(cursor) FROM bulletins").fetchone()
        return int(row[0] or 0)

    def frontiers(self, stream: bytes) -> dict[bytes, int]:
        """For one stream: each author's highest sequence number held."""
        rows = self._db.execute("SELECT author, max_seq FROM frontiers WHERE stream = ?", (stream,))
        return {bytes(a): s for a, s in rows}

    def after(
        self, stream: bytes, author: bytes, seq: int, *, limit: int = 256
    ) -> list[StoredBulletin]:
        """What this node holds of an author's stream after ``seq``, in order (bounded)."""
        rows = self._db.execute(
            f"{_STORED} WHERE stream = ? AND author = ? AND seq > ? ORDER BY seq LIMIT ?",
            (stream, author, seq, limit),
        )
        return [_stored(r) for r in rows]

    def id_at(self, stream: bytes, author: bytes, seq: int) -> bytes | None:
        """The id of a held bulletin at (stream, author, seq), the first one if forked."""
        row = self._db.execute(
            "SELECT id FROM bulletins WHERE stream = ? AND author = ? AND seq = ? "
            "ORDER BY cursor LIMIT 1",
            (stream, author, seq),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def items(self, stream: bytes, *, now: int) -> list[tuple[int, bytes]]:
        """Every (created_at, id) held on a stream and not expired at ``now``: what
        anti-entropy reconciles."""
        rows = self._db.execute(
            f"SELECT created_at, id FROM bulletins WHERE stream = ? AND {_LIVE}", (stream, now)
        )
        return [(t, bytes(i)) for t, i in rows]

    def gaps(self, stream: bytes, author: bytes, *, limit: int = 256) -> list[int]:
        """Sequence numbers below the author's frontier that this node lacks (bounded)."""
        missing: list[int] = []
        expected = 1
        rows = self._db.execute(
            "SELECT DISTINCT seq FROM bulletins WHERE stream = ? AND author = ? ORDER BY seq",
            (stream, author),
        )
        for (seq,) in rows:
            while expected < seq and len(missing) < limit:
                missing.append(expected)
                expected += 1
            if len(missing) >= limit:
                break
            expected = seq + 1
        return missing

    def forks(self, author: bytes | None = None) -> list[Fork]:
        """Recorded forks, for one author or all."""
        query = "SELECT author, stream, seq, first_id, second_id, detected_at FROM forks"
        rows = (
            self._db.execute(f"{query} WHERE author = ?", (author,))
            if author is not None
            else self._db.execute(query)
        )
        return [Fork(bytes(a), bytes(s), q, bytes(f), bytes(n), d) for a, s, q, f, n, d in rows]

    def count(self) -> int:
        """How many bulletins are held."""
        return int(self._db.execute("SELECT count(*) FROM bulletins").fetchone()[0])

    def channel_posts(self, channel_id: bytes) -> int:
        """How many of a channel's bulletins are posts (its membership operations are
        read through its log, not counted here)."""
        row = self._db.execute(
            "SELECT count(*) FROM bulletins WHERE channel_id = ? AND kind != ?",
            (channel_id, int(Kind.MEMBERSHIP)),
        ).fetchone()
        return int(row[0])

    def _expire_bulletins(self, now: int) -> int:
        """Delete the bulletins expired at ``now``, in the caller's transaction; returns
        how many."""
        rows = self._db.execute(
            f"{_DROPPED} WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        ).fetchall()
        self._drop(rows)
        # Frontiers keep max_seq: an expired bulletin is not a gap to fetch again.
        return len(rows)


def _stored(row: tuple[int, bytes, bytes, int]) -> StoredBulletin:
    return StoredBulletin(row[0], bytes(row[1]), bytes(row[2]), row[3])
