"""Contacts: the groups this node knows by a petname, marked verified or blocked."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

from meshnode.errors import StoreError
from meshnode.store._base import _Room

_CONTACT: Final = "SELECT key, petname, verified, blocked, added_at FROM contacts"
_CONTACT_CACHE: Final = 4096
"""Keys :meth:`Store.contact` remembers at most (then it starts over)."""


@dataclass(frozen=True, slots=True)
class Contact:
    """A group this node knows by a petname."""

    key: bytes
    petname: str
    verified: bool
    blocked: bool
    added_at: int


class _Contacts(_Room):
    """The petnames this node gives groups."""

    _contact_cache: dict[bytes, Contact | None]

    def add_contact(self, petname: str, key: bytes, *, now: int) -> Contact:
        """Name a group. Raises StoreError if the petname or the key is already known."""
        self._contact_cache.clear()
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO contacts (key, petname, added_at) VALUES (?, ?, ?)",
                    (key, petname, now),
                )
        except sqlite3.IntegrityError:
            known = self.contact(key) or self.contact_by_name(petname)
            assert known is not None
            raise StoreError(f"already a contact: {known.petname!r}") from None
        return Contact(key, petname, False, False, now)

    def contacts(self) -> list[Contact]:
        """Every contact, by petname."""
        return [_contact(r) for r in self._db.execute(f"{_CONTACT} ORDER BY petname")]

    def contact(self, key: bytes) -> Contact | None:
        """The contact with this group key, or None (cached: asked for every arrival)."""
        if key in self._contact_cache:
            return self._contact_cache[key]
        row = self._db.execute(f"{_CONTACT} WHERE key = ?", (key,)).fetchone()
        found = None if row is None else _contact(row)
        if len(self._contact_cache) >= _CONTACT_CACHE:
            self._contact_cache.clear()
        self._contact_cache[key] = found
        return found

    def contact_by_name(self, petname: str) -> Contact | None:
        """The contact with this petname, or None."""
        row = self._db.execute(f"{_CONTACT} WHERE petname = ?", (petname,)).fetchone()
        return None if row is None else _contact(row)

    def update_contact(
        self, key: bytes, *, verified: bool | None = None, blocked: bool | None = None
    ) -> Contact | None:
        """Mark a contact verified or blocked; returns it updated, or None if unknown."""
        self._contact_cache.clear()
        with self._transaction():
            if verified is not None:
                self._db.execute(
                    "UPDATE contacts SET verified = ? WHERE key = ?", (int(verified), key)
                )
            if blocked is not None:
                self._db.execute(
                    "UPDATE contacts SET blocked = ? WHERE key = ?", (int(blocked), key)
                )
        return self.contact(key)


def _contact(row: tuple[bytes, str, int, int, int]) -> Contact:
    return Contact(bytes(row[0]), row[1], bool(row[2]), bool(row[3]), row[4])
