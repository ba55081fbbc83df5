"""Channels (rule 5 of :mod:`meshnode.store`): each channel with every epoch secret
held for it, sealed under a key only the identity's seed yields, and its membership
log's operations.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from meshnode.core import crypto
from meshnode.core.channel import Channel, EpochKey
from meshnode.errors import AuthenticationError, StoreError
from meshnode.store._base import _Room

if TYPE_CHECKING:
    from collections.abc import Sequence

_SEAL_NONCE_SIZE: Final = 24


class _Channels(_Room):
    """The channels this node is in, their sealed secrets and membership logs."""

    _seal_key: bytes

    def save_channel(self, channel: Channel, *, now: int, root: bytes | None = None) -> None:
        """Keep a channel, every epoch secret it holds (new ones are added) and its
        current epoch; ``root`` names its membership log's create operation.

        Two channels may share a name; the id tells them apart."""
        held = self._channel_secrets(channel.id)
        with self._transaction():
            self._db.execute(
                "INSERT INTO channels (id, name, joined_at) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (channel.id, channel.name, now),
            )
            self._db.execute(
                "UPDATE channels SET current_epoch = ?, root = coalesce(root, ?) WHERE id = ?",
                (channel.current, root, channel.id),
            )
            self._db.executemany(
                "INSERT INTO channel_secrets (channel_id, epoch, sealed_secret) VALUES (?, ?, ?)",
                [
                    (channel.id, k.number, self._seal(k.secret, channel.id, k.number))
                    for k in channel.keys
                    if k.secret not in held
                ],
            )

    def channels(self) -> list[Channel]:
        """Every channel this node is in, with all its epochs, by name."""
        rows = self._db.execute(
            "SELECT id, name, current_epoch FROM channels ORDER BY name"
        ).fetchall()
        return [self._load_channel(bytes(cid), name, current) for cid, name, current in rows]

    def channel(self, channel_id: bytes) -> Channel | None:
        """The channel with this id, or None."""
        row = self._db.execute(
            "SELECT name, current_epoch FROM channels WHERE id = ?", (channel_id,)
        ).fetchone()
        return None if row is None else self._load_channel(channel_id, row[0], row[1])

    def channel_root(self, channel_id: bytes) -> bytes | None:
        """The id of the channel's create operation; None for a channel of 0.1.0,
        which has no membership log until a member upgrades it."""
        row = self._db.execute("SELECT root FROM channels WHERE id = ?", (channel_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def delete_channel(self, channel_id: bytes) -> bool:
        """Leave a channel: forget its secrets (its bulletins stay, unreadable). True if found."""
        with self._transaction():
            cur = self._db.execute("DELETE FROM channels WHERE id = ?", (channel_id,))
        return cur.rowcount > 0

    def _channel_secrets(self, channel_id: bytes) -> dict[bytes, int]:
        """The secrets held for a channel, with their epoch numbers."""
        rows = self._db.execute(
            "SELECT epoch, sealed_secret FROM channel_secrets WHERE channel_id = ?",
            (channel_id,),
        ).fetchall()
        return {self._unseal(bytes(sealed), channel_id, e): e for e, sealed in rows}

    def _load_channel(self, channel_id: bytes, name: str, current: bytes | None) -> Channel:
        keys = tuple(EpochKey(e, secret) for secret, e in self._channel_secrets(channel_id).items())
        if current is None:  # written by 0.1.0: the highest epoch is the current one
            current = max(keys, key=lambda k: k.number).id if keys else b""
        try:
            return Channel(name=name, id=channel_id, keys=keys, current=bytes(current))
        except ValueError:
            raise StoreError(f"the store's record of channel {name!r} is damaged") from None

    # Membership logs ----------------------------------------------------------------

    def save_ops(self, channel_id: bytes, ops: Sequence[tuple[bytes, bytes]]) -> None:
        """Keep membership operations (id, signed bytes) of a channel, durably."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO membership_ops (channel_id, id, raw) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(channel_id, op_id, raw) for op_id, raw in ops],
            )

    def ops(self, channel_id: bytes) -> list[bytes]:
        """The signed bytes of every membership operation held for a channel."""
        rows = self._db.execute(
            "SELECT raw FROM membership_ops WHERE channel_id = ?", (channel_id,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def _seal(self, secret: bytes, channel_id: bytes, epoch: int) -> bytes:
        key = self._epoch_seal_key(channel_id, epoch)
        nonce = os.urandom(_SEAL_NONCE_SIZE)
        return nonce + crypto.secretbox_seal(key, nonce, secret)

    def _unseal(self, sealed: bytes, channel_id: bytes, epoch: int) -> bytes:
        key = self._epoch_seal_key(channel_id, epoch)
        try:
            return crypto.secretbox_open(key, sealed[:_SEAL_NONCE_SIZE], sealed[_SEAL_NONCE_SIZE:])
        except AuthenticationError:
            raise StoreError(
                "the store's channel secrets do not open with this identity: "
                "the store belongs to another identity or is damaged"
            ) from None

    def _epoch_seal_key(self, channel_id: bytes, epoch: int) -> bytes:
        # One key per (channel, epoch), so a sealed secret cannot be moved to
        # another row and opened there.
        return crypto.derive(
            self._seal_key,
            b"meshnode/v1/store/channel-secret" + channel_id + epoch.to_bytes(4, "big"),
        )
