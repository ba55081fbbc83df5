"""The records a DHT node holds: validated on entry, charged to their source, persisted.

kademlia's ``IStorage`` interface over :mod:`meshnode.core.records` (rule 4 of
the package docstring): every value is a signed record, checked and merged
before it is held; each source IP has a quota and all records together a cap;
what is held goes to a :class:`RecordStore` and comes back from it on start.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from kademlia.storage import IStorage

from meshnode.core import records
from meshnode.core.records import Record, RendezvousRecord
from meshnode.errors import InvalidRecord, StaleRecord, StoreError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from meshnode.net.dht.config import DHTConfig, _Counters

LOG: Final = logging.getLogger("meshnode.net.dht")

VALIDATED: Final = 256
"""Answers :class:`_Validator` remembers (a record is at most 7 KiB, so at most 1.8 MiB)."""


class RecordStore(Protocol):
    """Where the DHT keeps its records and routing table across restarts.

    ``meshnode.store.Store`` implements it; values are opaque to the store
    (they are checked again when loaded).
    """

    def dht_records(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair put and not deleted."""
        ...

    def dht_put(self, key: bytes, value: bytes, expires_at: int) -> None:
        """Keep ``value`` under ``key`` (replacing any), until Unix time ``expires_at``."""
        ...

    def dht_delete(self, key: bytes) -> None:
        """Forget ``key`` (no error if absent)."""
        ...

    def get_meta(self, name: str) -> bytes | None:
        """A small named value, or None."""
        ...

    def set_meta(self, name: str, value: bytes) -> None:
        """Keep a small named value."""
        ...


class _Validator:
    """:func:`records.validate`, remembered for the last :data:`VALIDATED` inputs.

    ``validate(key, value, now)`` is a pure function of its three arguments (``now``
    in whole seconds), so the same bytes under the same key in the same second get
    the same answer without a second signature check. A lookup gets one record
    from up to ``value_quorum`` nodes, byte for byte the same: one check, not
    several. Refusals are not remembered (each costs what it did before).
    """

    def __init__(self) -> None:
        self._known: OrderedDict[tuple[bytes, bytes, int], Record] = OrderedDict()

    def __call__(self, key: bytes, value: bytes, now: int) -> Record:
        """The record, checked.

        Raises:
            InvalidRecord: as :func:`records.validate`.
        """
        inputs = (key, value, now)
        record = self._known.get(inputs)
        if record is None:
            record = records.validate(key, value, now)
            self._known[inputs] = record
            if len(self._known) > VALIDATED:
                self._known.popitem(last=False)
        return record


@dataclass
class _Held:
    record: Record
    value: bytes
    source: str | None
    stored_at: float = field(default_factory=time.monotonic)


class _RecordStorage(IStorage):  # type: ignore[misc]  # kademlia ships no type hints
    """kademlia's storage interface over validated records, with quotas and persistence.

    Keys are the 20-byte DHT keys. ``source`` is the IP that wrote a record
    (None for our own and for records loaded from the store); each source may
    hold ``quota_per_source`` bytes, all records together ``storage_cap``.
    """

    def __init__(self, config: DHTConfig, store: RecordStore | None, counters: _Counters) -> None:
        self._config = config
        self._store = store
        self._counters = counters
        self._held: dict[bytes, _Held] = {}
        self._usage: dict[str, int] = {}
        self.total = 0
        self.validate = _Validator()
        """Every record from the network passes here: STOREs and FIND_VALUE answers."""

    def __len__(self) -> int:
        return len(self._held)

    def load(self, now: int) -> None:
        """Take back the records persisted in the store, dropping those no longer valid."""
        if self._store is None:
            return
        for key, value in self._store.dht_records():
            try:
                record = records.validate(key, value, now)
            except InvalidRecord:
                self._unpersist(key)
                continue
            self._put(key, record, record.encode(), None, persist=False)

    def offer(self, key: bytes, value: object, source: str | None, now: int) -> bool:
        """Validate, merge and keep a record; whether the key now holds it (or newer).

        ``True`` for a valid record already superseded (the network holds it),
        ``False`` when refused: invalid, over quota or over the cap.
        """
        if not isinstance(value, bytes):
            self._counters.refuse("invalid")
            return False
        try:
            record = self.validate(key, value, now)
        except InvalidRecord:
            self._counters.refuse("invalid")
            return False
        return self.offer_record(key, record, source, now)

    def offer_record(self, key: bytes, record: Record, source: str | None, now: int) -> bool:
        """:meth:`offer` for a record already validated under ``key``."""
        held = self._held.get(key)
        if held is not None:
            try:
                record = records.merge(held.record, record, now)
            except StaleRecord:
                self._counters.refuse("stale")
                return True
            except InvalidRecord:
                self._counters.refuse("invalid")
                return False
        value = record.encode()
        size = len(value)
        old_size = len(held.value) if held is not None else 0
        if source is not None:
            mine = old_size if held is not None and held.source == source else 0
            if self._usage.get(source, 0) - mine + size > self._config.quota_per_source:
                self._counters.refuse("quota")
                return False
            if self.total - old_size + size > self._config.storage_cap:
                self._counters.refuse("full")
                return False
        return self._put(key, record, value, source, persist=True)

    def _put(
        self, key: bytes, record: Record, value: bytes, source: str | None, *, persist: bool
    ) -> bool:
        """Hold ``record``, encoded as ``value`` (and persist it first): False if the
        store refused it (a full disk, say), which leaves what was held as it was."""
        if persist and self._store is not None:
            try:
                self._store.dht_put(key, value, record.expires)
            except StoreError as exc:
                LOG.warning("refused a DHT record: %s", exc)
                self._counters.refuse("store")
                return False
        self._discard(key)
        self._held[key] = _Held(record, value, source)
        self.total += len(value)
        if source is not None:
            self._usage[source] = self._usage.get(source, 0) + len(value)
        return True

    def _unpersist(self, key: bytes) -> None:
        """Forget ``key`` on disk; if the store fails, the record stays there until it
        is found expired or invalid on a later load."""
        if self._store is not None:
            try:
                self._store.dht_delete(key)
            except StoreError as exc:
                LOG.warning("could not forget a DHT record: %s", exc)

    def _discard(self, key: bytes) -> _Held | None:
        held = self._held.pop(key, None)
        if held is not None:
            self.total -= len(held.value)
            if held.source is not None:
                left = self._usage[held.source] - len(held.value)
                if left:
                    self._usage[held.source] = left
                else:
                    del self._usage[held.source]
        return held

    def record(self, key: bytes, now: int) -> Record | None:
        """The record held under ``key``, if any and not expired."""
        held = self._held.get(key)
        if held is None:
            return None
        if held.record.expires <= now:
            self._discard(key)
            self._unpersist(key)
            return None
        return held.record

    def holds(self, key: bytes, now: int) -> bool:
        """Whether a live record is held under ``key``; unlike :meth:`record`, it changes
        nothing, so the trio side may ask while the asyncio side runs in another thread."""
        held = self._held.get(key)
        return held is not None and held.record.expires > now

    def cull(self, now: int) -> None:
        """Forget expired records (and prune expired rendezvous entries)."""
        for key, held in list(self._held.items()):
            if held.record.expires <= now:
                self.record(key, now)
            elif isinstance(held.record, RendezvousRecord):
                live = held.record.checked(now)
                if live is not held.record:
                    self._put(key, live, live.encode(), held.source, persist=True)

    # kademlia's IStorage: the stock Server and protocol reach storage through these.

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if not self.offer(key, value, None, int(time.time())):
            raise InvalidRecord("refused to store an invalid record")

    def __getitem__(self, key: bytes) -> bytes:
        if self.record(key, int(time.time())) is None:
            raise KeyError(key)
        return self._held[key].value

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        if self.record(key, int(time.time())) is None:
            return default
        return self._held[key].value

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        cutoff = time.monotonic() - seconds_old
        return [(k, h.value) for k, h in self._held.items() if h.stored_at <= cutoff]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter([(k, h.value) for k, h in self._held.items()])
