"""The embedded store: one SQLite file per node, the only module that touches it.

Rules:
1. Durable before acknowledged. The database runs in WAL mode with
   ``synchronous=FULL``, so when a write method returns its transaction is in
   the fsynced log and survives ``kill -9`` and power loss. The one exception,
   :meth:`Store.add_unsynced`, is for bulletins relayed by peers, which
   acknowledge nothing and can be fetched again.
2. Bulletins are kept as the signed bytes they arrived as, beside the fields
   the mesh queries by. They are verified before they get here (the store
   trusts :class:`~meshnode.core.bulletin.Bulletin` objects, which exist only
   verified) and never rewritten.
3. The same bulletin twice is one row. Two different bulletins with the same
   author, stream and sequence number are a *fork*: both rows are kept as
   evidence, the pair is recorded in ``forks`` and the author is flagged.
4. Each author has a storage quota (bytes of bulletins held); a bulletin that
   would exceed it is refused, so one noisy or hostile group cannot fill a
   node's disk. The node's own bulletins are exempt, and so are membership
   operations (each channel's log is bounded by its own limits instead).
   Nothing expired is taken or handed out, and :meth:`Store.purge_expired`
   deletes what expires while held. Mail held for others is bounded from
   running totals (``mail_usage``), so holding one more costs the same however
   much is held, and throw-away keys fill at most half of any share.
5. Channel secrets are sealed (XSalsa20-Poly1305 secretbox) under a key that
   only the identity's seed yields, so with a passphrase-sealed keyfile a
   seized disk hands over no channel.
6. Every ``sqlite3`` error leaves a public method as a :class:`StoreError`; a full
   disk (``SQLITE_FULL``) as :class:`StorageFull`. A failed write rolls back and
   changes nothing, reads go on working, and :attr:`Store.state` says whether the
   last write failed; the next write that succeeds sets it back to ``ok``.
7. The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS`
   holds one script per version and opening a store runs the missing ones in
   one transaction. A file from a newer meshnode is refused, never altered.
8. The store has a budget (:class:`Budget`), split into shares: our channels
   (with direct bulletins to us), the public topic, and mail held for others.
   Our own bulletins are always taken; the channels share refuses when full and
   never evicts; the public share admits by trust (:class:`Trust`: own, known,
   endorsed, stranger) and, when full, evicts what is trusted no more than the
   newcomer, least trusted and oldest first, remembering the evicted ids
   (:meth:`Store.known`) so that they are not fetched again. Strangers' public
   bulletins are further bounded per author and per delivering peer key and
   source network (:class:`Origin`). Every total is a running one, so admission
   costs the same however much is held.

The layout is in ``docs/spec/store.md``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from meshnode.core import crypto
from meshnode.core.bulletin import Bulletin
from meshnode.store._base import StorageState, _typed_errors
from meshnode.store.budget import (
    _DROPPED,
    DEFAULT_AUTHOR_QUOTA,
    Budget,
    Trust,
)
from meshnode.store.bulletins import _Bulletins
from meshnode.store.channels import _Channels
from meshnode.store.contacts import Contact, _Contacts
from meshnode.store.schema import connect

DEFAULT_DIRECT_LIFETIME: Final = 7 * 86400
"""How long a direct bulletin without an expiry waits for an offline recipient."""
MAIL_PER_SENDER: Final = 64
"""Bulletins held for one (author, recipient)."""
MAIL_BYTES_PER_SENDER: Final = 1024 * 1024
"""Bytes held for one (author, recipient)."""
MAIL_BYTES_PER_AUTHOR: Final = 8 * 1024 * 1024
"""Bytes held for one author, over every recipient."""


@_typed_errors
class Store(_Bulletins, _Channels, _Contacts):
    """A node's SQLite store. Open with :meth:`open`; use as a context manager.

    Not thread-safe: one node uses one store from one thread.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        seal_key: bytes,
        *,
        owner: bytes | None,
        quota: int,
        budget: Budget,
    ) -> None:
        self._db = db
        self._seal_key = seal_key
        self._owner = owner
        self._quota = quota
        self._budget = budget
        self._evictions: list[bytes] = []
        """Ids evicted since :meth:`take_evictions` last ran."""
        self._contact_cache: dict[bytes, Contact | None] = {}
        """Key -> its contact row (None: not a contact), for :meth:`contact`; emptied by
        every write to ``contacts``, all of which go through this object."""
        self._relaxed = False
        """Whether the connection runs with ``synchronous=NORMAL`` (after
        :meth:`add_unsynced`); every other write restores ``FULL`` first."""
        self._state = StorageState.OK
        self._watchers: list[Callable[[], None]] = []

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        seal_key: bytes,
        owner: bytes | None = None,
        author_quota: int = DEFAULT_AUTHOR_QUOTA,
        budget: Budget | None = None,
    ) -> Store:
        """Open or create the store at ``path`` (mode 0600), migrating it if needed.

        Args:
            seal_key: 32 bytes that seal channel secrets; from
                :meth:`~meshnode.core.identity.Identity.store_seal_key`.
            owner: this node's group key, whose own bulletins the quota and the
                budget spare.
            author_quota: bytes of bulletins held per author.
            budget: bytes held per share (default :class:`Budget`'s).

        Raises:
            StoreError: the file is not a meshnode store, is damaged, or was
                written by a newer meshnode.
        """
        if len(seal_key) != crypto.KEY_SIZE:
            raise ValueError("the seal key is 32 bytes")
        db = connect(Path(path))
        store = cls(db, seal_key, owner=owner, quota=author_quota, budget=budget or Budget())
        if owner is not None:
            store.raise_trust([owner], Trust.OWN)
        return store

    def close(self) -> None:
        """Checkpoint the log into the main file and close."""
        # Another reader may hold the log; then the next open checkpoints it.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def state(self) -> StorageState:
        """Whether the last write succeeded (``OK``) or why it failed (rule 6)."""
        return self._state

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each change of :attr:`state`."""
        self._watchers.append(callback)

    @property
    def schema_version(self) -> int:
        """The schema version of the open file (the number of migrations applied)."""
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    # Metadata --------------------------------------------------------------------

    def get_meta(self, name: str) -> bytes | None:
        """A metadata value (node name, routing table, ...), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def delete_meta(self, name: str) -> None:
        """Forget a metadata value durably (nothing happens if there is none)."""
        with self._transaction():
            self._db.execute("DELETE FROM meta WHERE name = ?", (name,))

    def set_meta(self, name: str, value: bytes) -> None:
        """Set a metadata value durably."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def purge_expired(self, *, now: int) -> int:
        """Delete bulletins whose expiry has passed; returns how many."""
        with self._transaction():
            rows = self._db.execute(
                f"{_DROPPED} WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).fetchall()
            self._drop(rows)
            self._charge_mail(
                [
                    (bytes(r), bytes(a), -n, -size, -strangers)
                    for r, a, n, size, strangers in self._db.execute(
                        "SELECT recipient, author, count(*), sum(size), "
                        "sum(CASE WHEN standing THEN 0 ELSE size END) FROM mail "
                        "WHERE expires_at <= ? GROUP BY recipient, author",
                        (now,),
                    ).fetchall()
                ]
            )
            self._db.execute("DELETE FROM mail WHERE expires_at <= ?", (now,))
            self._db.execute("DELETE FROM outbox WHERE expires_at <= ?", (now,))
            self._db.execute("DELETE FROM dht_records WHERE expires_at <= ?", (now,))
        # Frontiers keep max_seq: an expired bulletin is not a gap to fetch again.
        return len(rows)

    # Direct delivery: what we send, and what we hold for others ------------------

    def queue_delivery(self, bulletin: Bulletin, recipients: Sequence[bytes]) -> None:
        """Remember to deliver our direct bulletin to each recipient until it expires."""
        expires = bulletin.expires_at or bulletin.created_at + DEFAULT_DIRECT_LIFETIME
        with self._transaction():
            self._db.executemany(
                "INSERT INTO outbox (id, recipient, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(bulletin.id, r, expires) for r in recipients],
            )

    def pending_deliveries(self, *, now: int) -> list[tuple[bytes, bytes, int]]:
        """(bulletin id, recipient, holders so far) not yet delivered and not expired."""
        rows = self._db.execute(
            "SELECT id, recipient, holders FROM outbox "
            "WHERE delivered = 0 AND expires_at > ? ORDER BY expires_at",
            (now,),
        )
        return [(bytes(i), bytes(r), h) for i, r, h in rows]

    def pending_count(self, *, now: int) -> int:
        """How many :meth:`pending_deliveries` there are, without reading them."""
        row = self._db.execute(
            "SELECT count(*) FROM outbox WHERE delivered = 0 AND expires_at > ?", (now,)
        ).fetchone()
        return int(row[0])

    def delivered(self, bulletin_id: bytes, recipient: bytes) -> None:
        """The recipient's own node acknowledged the bulletin."""
        with self._transaction():
            self._db.execute(
                "UPDATE outbox SET delivered = 1 WHERE id = ? AND recipient = ?",
                (bulletin_id, recipient),
            )

    def held_by_one_more(self, bulletin_id: bytes, recipient: bytes) -> None:
        """A holder acknowledged keeping the bulletin for an offline recipient."""
        with self._transaction():
            self._db.execute(
                "UPDATE outbox SET holders = holders + 1 WHERE id = ? AND recipient = ?",
                (bulletin_id, recipient),
            )

    def hold_mail(self, recipient: bytes, bulletin: Bulletin, *, now: int, standing: bool) -> bool:
        """Keep a verified direct bulletin for an offline recipient; False if refused.

        Bounded (docs/spec/gossip.md, "Direct delivery"): per (author, recipient)
        :data:`MAIL_PER_SENDER` bulletins and :data:`MAIL_BYTES_PER_SENDER` bytes,
        :data:`MAIL_BYTES_PER_AUTHOR` per author, :data:`MAIL_BYTES_PER_RECIPIENT`
        per recipient and the budget's mail share in all, of which authors without
        ``standing`` (neither a contact nor a member of a channel shared with the
        recipient: the node decides) fill half at most; nothing already expired,
        nothing kept past its expiry. The bounds are read from running totals, so
        the cost does not grow with the mail held.
        """
        expires = bulletin.expires_at or bulletin.created_at + DEFAULT_DIRECT_LIFETIME
        size = len(bulletin.raw)
        if expires <= now:
            return False
        author = bulletin.author
        with self._transaction():
            held = {
                (bytes(r), bytes(a)): (c, b, x)
                for r, a, c, b, x in self._db.execute(
                    "SELECT recipient, author, count, bytes, strangers FROM mail_usage "
                    "WHERE recipient IN (?, x'') AND author IN (?, x'')",
                    (recipient, author),
                )
            }
            pair, sender, share, total = (
                held.get(key, (0, 0, 0))
                for key in ((recipient, author), (b"", author), (recipient, b""), (b"", b""))
            )
            stranger = 0 if standing else size
            if (
                pair[0] >= MAIL_PER_SENDER
                or pair[1] + size > MAIL_BYTES_PER_SENDER
                or sender[1] + size > MAIL_BYTES_PER_AUTHOR
                or share[1] + size > self._budget.mail_per_recipient
                or share[2] + stranger > self._budget.mail_per_recipient // 2
                or total[1] + size > self._budget.mail
                or total[2] + stranger > self._budget.mail // 2
            ):
                return False
            cur = self._db.execute(
                "INSERT INTO mail (recipient, id, author, size, expires_at, received_at, raw, "
                "standing) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (recipient, bulletin.id, author, size, expires, now, bulletin.raw, standing),
            )
            if cur.rowcount:
                self._charge_mail([(recipient, author, 1, size, stranger)])
        return True

    def mail_for(self, recipient: bytes, *, now: int, limit: int) -> tuple[list[bytes], bool]:
        """Up to ``limit`` held bulletins for ``recipient``, oldest first, and whether
        there are more."""
        rows = self._db.execute(
            "SELECT raw FROM mail WHERE recipient = ? AND expires_at > ? ORDER BY arrival LIMIT ?",
            (recipient, now, limit + 1),
        ).fetchall()
        return [bytes(r[0]) for r in rows[:limit]], len(rows) > limit

    def forget_mail(self, recipient: bytes, ids: Sequence[bytes]) -> None:
        """The recipient has these: stop holding them."""
        with self._transaction():
            gone = [
                self._db.execute(
                    "DELETE FROM mail WHERE recipient = ? AND id = ? "
                    "RETURNING author, size, standing",
                    (recipient, i),
                ).fetchone()
                for i in ids
            ]
            self._charge_mail(
                [
                    (recipient, bytes(a), -1, -size, 0 if standing else -size)
                    for a, size, standing in filter(None, gone)
                ]
            )

    def _charge_mail(self, changes: Sequence[tuple[bytes, bytes, int, int, int]]) -> None:
        """Add (recipient, author, bulletins, bytes, strangers' bytes) to the running
        totals at every level (see migration 3); rows that fall to nothing go."""
        levels: dict[tuple[bytes, bytes], list[int]] = {}
        for recipient, author, *amounts in changes:
            for key in ((recipient, author), (b"", author), (recipient, b""), (b"", b"")):
                row = levels.setdefault(key, [0, 0, 0])
                for n, amount in enumerate(amounts):
                    row[n] += amount
        self._db.executemany(
            "INSERT INTO mail_usage (recipient, author, count, bytes, strangers) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (recipient, author) DO UPDATE SET "
            "count = count + excluded.count, bytes = bytes + excluded.bytes, "
            "strangers = strangers + excluded.strangers",
            [(r, a, *amounts) for (r, a), amounts in levels.items()],
        )
        self._db.executemany(
            "DELETE FROM mail_usage WHERE recipient = ? AND author = ? AND count = 0",
            levels.keys(),
        )

    def mail_count(self) -> int:
        """How many bulletins this node holds for offline recipients."""
        row = self._db.execute(
            "SELECT count FROM mail_usage WHERE recipient = x'' AND author = x''"
        ).fetchone()
        return 0 if row is None else int(row[0])

    # DHT records (the RecordStore protocol of meshnode.net.dht) -------------------

    def dht_records(self) -> list[tuple[bytes, bytes]]:
        """Every stored DHT record as (key, value)."""
        return [
            (bytes(k), bytes(v)) for k, v in self._db.execute("SELECT key, value FROM dht_records")
        ]

    def dht_put(self, key: bytes, value: bytes, expires_at: int) -> None:
        """Store or replace a DHT record (validated by the caller)."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO dht_records (key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at",
                (key, value, expires_at),
            )

    def dht_delete(self, key: bytes) -> None:
        """Forget a DHT record."""
        with self._transaction():
            self._db.execute("DELETE FROM dht_records WHERE key = ?", (key,))
