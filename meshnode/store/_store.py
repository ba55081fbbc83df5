"""The :class:`Store`: one connection to the node's SQLite file, shared by the rooms
it is made of; opening and closing it, its state, metadata, and expiry across rooms.
The rules are in :mod:`meshnode.store`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from meshnode.core import crypto
from meshnode.errors import StoreError
from meshnode.store._base import StorageState, _typed_errors
from meshnode.store.budget import DEFAULT_AUTHOR_QUOTA, Budget, Trust
from meshnode.store.bulletins import _Bulletins
from meshnode.store.channels import _Channels
from meshnode.store.contacts import Contact, _Contacts
from meshnode.store.dht_records import _DhtRecords
from meshnode.store.mail import _Mail
from meshnode.store.schema import connect

if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from types import TracebackType


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
        self._group: list[bytes] = []
        """Ids stored in the open relay group (see :meth:`add_relayed`)."""
        self._endorsed: dict[bytes, bool] = {}
        """Author -> whether a known group endorsed it, for :meth:`endorsed`; kept true by
        :meth:`endorse`, the table's one writer (nothing is deleted from it)."""
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
        """Commit the relay group, checkpoint the log into the main file and close."""
        with contextlib.suppress(StoreError):
            self.commit_relayed()
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
