"""Direct delivery (rule 4 of :mod:`meshnode.store`): the outbox of our direct
bulletins still to deliver, and the mail held for offline recipients, bounded from
running totals (``mail_usage``) per sender, author, recipient and in all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from meshnode.store._base import _Room

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshnode.core.bulletin import Bulletin
    from meshnode.store.budget import Budget

DEFAULT_DIRECT_LIFETIME: Final = 7 * 86400
"""How long a direct bulletin without an expiry waits for an offline recipient."""
MAIL_PER_SENDER: Final = 64
"""Bulletins held for one (author, recipient)."""
MAIL_BYTES_PER_SENDER: Final = 1024 * 1024
"""Bytes held for one (author, recipient)."""
MAIL_BYTES_PER_AUTHOR: Final = 8 * 1024 * 1024
"""Bytes held for one author, over every recipient."""


class _Mail(_Room):
    """What we send directly (the outbox), and what we hold for others (mail)."""

    _budget: Budget

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

    def _expire_mail(self, now: int) -> None:
        """Forget the mail and the deliveries expired at ``now``, in the caller's
        transaction."""
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

    def mail_count(self) -> int:
        """How many bulletins this node holds for offline recipients."""
        row = self._db.execute(
            "SELECT count FROM mail_usage WHERE recipient = x'' AND author = x''"
        ).fetchone()
        return 0 if row is None else int(row[0])
