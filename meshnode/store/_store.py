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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from meshnode.core import crypto
from meshnode.store._base import StorageState, _typed_errors
from meshnode.store.budget import DEFAULT_AUTHOR_QUOTA, Budget, Trust
from meshnode.store.bulletins import _Bulletins
from meshnode.store.channels import _Channels
from meshnode.store.contacts import Contact, _Contacts
from meshnode.store.dht_records import _DhtRecords
from meshnode.store.mail import _Mail
from meshnode.store.schema import connect


@_typed_errors
class Store(_Bulletins, _Channels, _Contacts, _Mail, _DhtRecords):
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
            purged = self._expire_bulletins(now)
            self._expire_mail(now)
            self._expire_records(now)
        return purged
