"""The embedded store: one SQLite file per node (rules in :mod:`meshnode.store._store`).

This package only re-exports; the constants are read in the module that defines
them, so a test patches them there, not here.
"""

from meshnode.store._base import StorageState
from meshnode.store._store import Store
from meshnode.store.budget import (
    DEFAULT_AUTHOR_QUOTA,
    EVICTED_KEPT,
    LOCAL,
    MAIL_BYTES_PER_RECIPIENT,
    Budget,
    Origin,
    Share,
    Trust,
    share_of,
)
from meshnode.store.bulletins import Fork, Insert, StoredBulletin
from meshnode.store.contacts import Contact
from meshnode.store.mail import (
    DEFAULT_DIRECT_LIFETIME,
    MAIL_BYTES_PER_AUTHOR,
    MAIL_BYTES_PER_SENDER,
    MAIL_PER_SENDER,
)
from meshnode.store.schema import MIGRATIONS

__all__ = [
    "DEFAULT_AUTHOR_QUOTA",
    "DEFAULT_DIRECT_LIFETIME",
    "EVICTED_KEPT",
    "LOCAL",
    "MAIL_BYTES_PER_AUTHOR",
    "MAIL_BYTES_PER_RECIPIENT",
    "MAIL_BYTES_PER_SENDER",
    "MAIL_PER_SENDER",
    "MIGRATIONS",
    "Budget",
    "Contact",
    "Fork",
    "Insert",
    "Origin",
    "Share",
    "StorageState",
    "Store",
    "StoredBulletin",
    "Trust",
    "share_of",
]
