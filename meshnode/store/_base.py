"""What every room of the store shares: the connection, its durable transactions
and the typed errors (rules 1 and 6 of :mod:`meshnode.store`).

Each room (:mod:`~meshnode.store.bulletins`, :mod:`~meshnode.store.channels`, ...)
is a mixin of :class:`_Room`; :class:`~meshnode.store.Store` is made of them all,
and :func:`_typed_errors` wraps every public method and property it gets from any
of them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sqlite3
from enum import Enum
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from meshnode.errors import StorageFull, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType


class StorageState(Enum):
    """How the store's last write went (``NodeStatus.storage``)."""

    OK = "ok"
    FULL = "full"
    """The disk (or SQLite's page limit) had no room: new data is refused."""
    ERROR = "error"
    """Another SQLite error (an I/O error, say): see the log."""


class _Room:
    """The state the rooms share, and the plumbing they write through. Set by
    :class:`~meshnode.store.Store`'s constructor."""

    _db: sqlite3.Connection
    _evictions: list[bytes]
    _group: list[bytes]
    _relaxed: bool
    _state: StorageState
    _watchers: list[Callable[[], None]]

    def _transaction(self) -> _Transaction:
        """A durable transaction (rule 1): its commit fsyncs the log, and the open relay
        group's writes with it, which it commits first."""
        self.commit_relayed()
        if self._relaxed:
            self._db.execute("PRAGMA synchronous=FULL")
            self._relaxed = False
        return _Transaction(self._db, self._committed)

    def commit_relayed(self) -> None:
        """Commit the relay group (see ``add_relayed``), if one is open. If the commit
        fails, the group is rolled back and its bulletins come back from
        ``take_evictions``, so the indexes above the store let go of them
        (anti-entropy fetches them again)."""
        group, self._group = self._group, []
        if not self._db.in_transaction:
            return
        try:
            _commit(self._db, self._committed)
        except sqlite3.Error:
            self._evictions.extend(group)
            raise

    def _committed(self) -> None:
        self._set_state(StorageState.OK)

    def _failed(self, exc: sqlite3.Error) -> StoreError:
        """The typed error for ``exc`` (rule 6), noted in :attr:`state`."""
        if _is_full(exc):
            self._set_state(StorageState.FULL)
            return StorageFull(
                "the disk holding the store is full: free space there; the node keeps "
                "serving what it holds and takes new data again once there is room"
            )
        self._set_state(StorageState.ERROR)
        return StoreError(f"the store failed ({exc}): check the disk of the data directory")

    def _set_state(self, state: StorageState) -> None:
        if state is not self._state:
            self._state = state
            for callback in self._watchers:
                callback()


_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound=_Room)


def _typed(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """``method`` with its ``sqlite3`` errors turned into :class:`StoreError` (rule 6)."""

    @functools.wraps(method)
    def typed(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    return typed


_C = TypeVar("_C", bound=type[_Room])


def _typed_errors(cls: _C) -> _C:
    """Rule 6 for every public method and property of ``cls``, its own and those of
    the rooms it is made of, so none can forget it. The wrapped versions are set on
    ``cls`` itself, which comes first in its method resolution order."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, attr in list(vars(klass).items()):
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if inspect.isfunction(attr):
                setattr(cls, name, _typed(attr))
            elif isinstance(attr, property) and attr.fget is not None:
                setattr(cls, name, property(_typed(attr.fget), doc=attr.__doc__))
    return cls


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception
    (``COMMIT``'s own included), then ``committed()`` after a commit.

    The connection runs in autocommit mode, so transactions are explicit and
    a method's writes land together or not at all.
    """

    def __init__(self, db: sqlite3.Connection, committed: Callable[[], None]) -> None:
        self._db = db
        self._committed = committed

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            _rollback(self._db)
            return
        _commit(self._db, self._committed)


def _commit(db: sqlite3.Connection, committed: Callable[[], None]) -> None:
    """``COMMIT``, then ``committed()``; or, if the commit fails, ``ROLLBACK`` and raise."""
    try:
        db.execute("COMMIT")
    except sqlite3.Error:
        _rollback(db)
        raise
    committed()


def _is_full(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is ``SQLITE_FULL`` (the disk, or ``max_page_count``, has no room)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back after an error without masking it: SQLite may have rolled back
    already (it does after some ``SQLITE_FULL`` and I/O errors), and a ``ROLLBACK``
    that fails too has nothing to add to the first error."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
