"""The embedded store: one SQLite file per node, the only package that touches it.

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

The file's layout is in ``docs/spec/store.md``.

Modules: :class:`Store` is made of rooms, one per module, each a mixin over the one
connection; every public method it gets from them obeys rule 6.
- ``_store``: :class:`Store` itself: opening and closing, its state, metadata, expiry.
- ``_base``: what the rooms share: durable transactions and typed errors (rules 1, 6).
- ``schema``: the file, its pragmas and :data:`MIGRATIONS` (rule 7).
- ``budget``: the quota, :class:`Budget`, :class:`Trust`, :class:`Origin`, the running
  totals and eviction (rules 4, 8).
- ``bulletins``: taking bulletins in (admission, forks) and what the mesh asks of
  them (rules 2 to 4).
- ``channels``: channels, their sealed secrets and membership logs (rule 5).
- ``contacts``: the groups this node knows by a petname.
- ``mail``: direct delivery: the outbox, and mail held for others.
- ``dht_records``: the records this node keeps for the DHT.

This package only re-exports. Each constant is read in the module that defines it,
so a test patches it there (``meshnode.store.schema.MIGRATIONS``), not here.
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
