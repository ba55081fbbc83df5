"""DHT records: what this node stores for the DHT, kept across restarts (the
``RecordStore`` protocol of :mod:`meshnode.net.dht`)."""

from __future__ import annotations

from meshnode.store._base import _Room


class _DhtRecords(_Room):
    """Signed DHT records, as opaque bytes (validated above the store)."""

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

    def _expire_records(self, now: int) -> None:
        """Forget the records expired at ``now``, in the caller's transaction."""
        self._db.execute("DELETE FROM dht_records WHERE expires_at <= ?", (now,))
