"""The file and its schema (rules 1 and 7 of :mod:`meshnode.store`): creating it
private, opening it with the pragmas durability needs, and the migrations.

The layout each version has is normative in ``docs/spec/store.md``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import TYPE_CHECKING, Final

from meshnode.errors import StorageFull, StoreError
from meshnode.store._base import _is_full, _rollback

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE channels (
        id        BLOB PRIMARY KEY,
        name      TEXT NOT NULL UNIQUE,
        joined_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE channel_epochs (
        channel_id    BLOB NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
        epoch         INTEGER NOT NULL,
        sealed_secret BLOB NOT NULL,
        PRIMARY KEY (channel_id, epoch)
    ) WITHOUT ROWID;

    CREATE TABLE contacts (
        key      BLOB PRIMARY KEY,
        petname  TEXT NOT NULL UNIQUE,
        verified INTEGER NOT NULL DEFAULT 0,
        blocked  INTEGER NOT NULL DEFAULT 0,
        added_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE bulletins (
        cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
        id          BLOB NOT NULL UNIQUE,
        author      BLOB NOT NULL,
        stream      BLOB NOT NULL,
        seq         INTEGER NOT NULL,
        kind        INTEGER NOT NULL,
        channel_id  BLOB,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        received_at INTEGER NOT NULL,
        raw         BLOB NOT NULL
    );
    CREATE INDEX bulletins_by_stream ON bulletins (stream, author, seq);
    CREATE INDEX bulletins_by_channel ON bulletins (channel_id, created_at, author, seq);
    CREATE INDEX bulletins_by_expiry ON bulletins (expires_at) WHERE expires_at IS NOT NULL;

    CREATE TABLE frontiers (
        stream  BLOB NOT NULL,
        author  BLOB NOT NULL,
        max_seq INTEGER NOT NULL,
        held    INTEGER NOT NULL,
        PRIMARY KEY (stream, author)
    ) WITHOUT ROWID;

    CREATE TABLE usage (
        author BLOB PRIMARY KEY,
        bytes  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE forks (
        author      BLOB NOT NULL,
        stream      BLOB NOT NULL,
        seq         INTEGER NOT NULL,
        first_id    BLOB NOT NULL,
        second_id   BLOB NOT NULL,
        detected_at INTEGER NOT NULL,
        PRIMARY KEY (author, stream, seq, second_id)
    ) WITHOUT ROWID;

    CREATE TABLE mail (
        arrival     INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient   BLOB NOT NULL,
        id          BLOB NOT NULL,
        author      BLOB NOT NULL,
        size        INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        raw         BLOB NOT NULL,
        UNIQUE (recipient, id)
    );
    CREATE INDEX mail_by_sender ON mail (recipient, author);
    CREATE INDEX mail_by_expiry ON mail (expires_at);

    CREATE TABLE outbox (
        id         BLOB NOT NULL,
        recipient  BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        delivered  INTEGER NOT NULL DEFAULT 0,
        holders    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (id, recipient)
    ) WITHOUT ROWID;

    CREATE TABLE dht_records (
        key        BLOB PRIMARY KEY,
        value      BLOB NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: a channel name is a label, not a key (docs/spec/channel.md, "Names"): a join
    # may bring a second channel of a name already held. Epochs are numbered by depth,
    # so one number may hold several secrets (siblings), and each channel has a
    # membership log (docs/spec/membership.md). SQLite cannot drop a UNIQUE
    # constraint, so the channel tables are rebuilt, the child first so that no
    # ON DELETE CASCADE fires.
    """
    CREATE TABLE new_channels (
        id            BLOB PRIMARY KEY,
        name          TEXT NOT NULL,
        joined_at     INTEGER NOT NULL,
        current_epoch BLOB,
        root          BLOB
    ) WITHOUT ROWID;
    INSERT INTO new_channels (id, name, joined_at) SELECT id, name, joined_at FROM channels;
    CREATE TABLE held_secrets (
        channel_id    BLOB NOT NULL,
        epoch         INTEGER NOT NULL,
        sealed_secret BLOB NOT NULL
    );
    INSERT INTO held_secrets SELECT channel_id, epoch, sealed_secret FROM channel_epochs;
    DROP TABLE channel_epochs;
    DROP TABLE channels;
    ALTER TABLE new_channels RENAME TO channels;
    CREATE TABLE channel_secrets (
        channel_id    BLOB NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
        epoch         INTEGER NOT NULL,
        sealed_secret BLOB NOT NULL,
        PRIMARY KEY (channel_id, sealed_secret)
    ) WITHOUT ROWID;
    INSERT INTO channel_secrets SELECT channel_id, epoch, sealed_secret FROM held_secrets;
    DROP TABLE held_secrets;

    CREATE TABLE membership_ops (
        channel_id BLOB NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
        id         BLOB NOT NULL,
        raw        BLOB NOT NULL,
        PRIMARY KEY (channel_id, id)
    ) WITHOUT ROWID;
    """,
    # 3: mail is accounted in running totals, so holding one more costs the same
    # however much is held. A row per (recipient, author), per recipient (author
    # x''), per author (recipient x'') and in all (both x''). ``strangers`` is the
    # part held for authors without standing. Mail held before has no standing.
    """
    ALTER TABLE mail ADD COLUMN standing INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE mail_usage (
        recipient BLOB NOT NULL,
        author    BLOB NOT NULL,
        count     INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        strangers INTEGER NOT NULL,
        PRIMARY KEY (recipient, author)
    ) WITHOUT ROWID;
    INSERT INTO mail_usage
        SELECT recipient, author, count(*), sum(size), sum(size) FROM mail
        GROUP BY recipient, author;
    INSERT INTO mail_usage
        SELECT recipient, x'', sum(count), sum(bytes), sum(strangers) FROM mail_usage
        GROUP BY recipient;
    INSERT INTO mail_usage
        SELECT x'', author, sum(count), sum(bytes), sum(strangers) FROM mail_usage
        WHERE author != x'' GROUP BY author;
    INSERT INTO mail_usage
        SELECT x'', x'', sum(count), sum(bytes), sum(strangers) FROM mail_usage
        WHERE recipient != x'' AND author != x'' GROUP BY x'';
    """,
    # 4: the budget (docs/spec/store.md, "Budget"). Each bulletin counts against a
    # share (1: our channels and direct bulletins to us, 2: the public topic) at a
    # trust (0 own .. 3 stranger); strangers' public bulletins also against the peer
    # (via) and source network (net) that delivered them. Bulletins held before
    # have neither peer nor network; the node raises its contacts' and members'
    # trust when it starts, and the store its owner's.
    """
    ALTER TABLE bulletins ADD COLUMN share INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE bulletins ADD COLUMN trust INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE bulletins ADD COLUMN via BLOB;
    ALTER TABLE bulletins ADD COLUMN net BLOB;
    UPDATE bulletins SET share = 2, trust = 3 WHERE channel_id IS NULL AND kind NOT IN (2, 4);
    CREATE INDEX bulletins_by_author ON bulletins (author, trust);
    CREATE INDEX bulletins_evictable ON bulletins (trust DESC, cursor)
        WHERE share = 2 AND trust > 0;
    CREATE TABLE share_usage (
        share INTEGER NOT NULL,
        trust INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (share, trust)
    ) WITHOUT ROWID;
    INSERT INTO share_usage
        SELECT share, trust, sum(CASE WHEN kind = 5 THEN 0 ELSE length(raw) END)
        FROM bulletins GROUP BY share, trust;
    CREATE TABLE source_usage (
        source BLOB PRIMARY KEY,
        bytes  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE evicted (
        n  INTEGER PRIMARY KEY AUTOINCREMENT,
        id BLOB NOT NULL UNIQUE
    );
    CREATE TABLE endorsed (
        author BLOB PRIMARY KEY,
        since  INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)


def connect(path: Path) -> sqlite3.Connection:
    """The store at ``path``, created (mode 0600) if missing and migrated to the
    newest schema; see :meth:`meshnode.store.Store.open` for what it raises."""
    _create_private(path)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        if _is_full(exc):
            raise StorageFull(f"cannot open the store {path}: the disk is full") from None
        raise StoreError(f"{path} is not a meshnode store or is damaged ({exc})") from None
    except StoreError:
        db.close()
        raise
    for suffix in ("-wal", "-shm"):
        _chmod_private(path.with_name(path.name + suffix))
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path} was written by a newer meshnode (schema {version}); upgrade meshnode"
        )
    if version == len(MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _statements(script: str) -> Iterator[str]:
    # executescript() would commit the open transaction; run statement by statement.
    for part in script.split(";"):
        if part.strip():
            yield part


def _create_private(path: Path) -> None:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None
    _chmod_private(path)


def _chmod_private(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.chmod(0o600)
