"""Where the asyncio island runs: an asyncio loop in a thread of its own, or trio-asyncio.

kademlia is asyncio code and the node is trio. A :class:`Host` runs asyncio
coroutines for the trio side (:meth:`Host.run`), carries the asyncio side's news
back to it (:meth:`Host.soon`) and hands the asyncio side a store it may call
(:meth:`Host.store`). Two hosts, both measured by ``bench/dht.py``
(``docs/performance.md``, "DHT lookups"):

- **thread** (:data:`DEFAULT_HOST`): a plain asyncio loop in a thread of its own.
  trio submits coroutines with ``asyncio.run_coroutine_threadsafe`` and is woken
  through its ``TrioToken``. Every asyncio callback runs at plain asyncio's cost,
  and nothing of this module imports trio-asyncio, whose import patches asyncio's
  loop lookups for the whole process (each then asks trio for a current task).
- **trio-asyncio**: asyncio's callbacks run as trio tasks in the trio thread.
  One thread, but each callback costs a trio scheduling round, a cancel scope and
  a memory channel: about 40 % of a lookup's CPU under cProfile.

Rules of the thread host:
1. kademlia's state (routing table, storage, pending requests) changes on the
   asyncio thread only. The trio side asks for changes through :meth:`Host.run`
   and reads snapshots made by single C-level copies (``list(...)``,
   ``dict(...)``), which the GIL makes atomic.
2. The store (SQLite, one connection) is used from the trio thread only: the
   asyncio side's calls are carried over with ``trio.from_thread.run_sync``
   (:class:`_StoreInTrio`). The trio thread never waits for the asyncio thread
   synchronously, so neither can block the other for good.
3. News for waiters (``DHTNode.wait_until``) crosses with ``run_sync_soon``, at
   most one wake-up in flight, and only while someone waits.

Which host a node uses: the one opened in the caller's context
(:func:`open_dht_thread`, or a trio-asyncio loop), else a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import trio

from meshnode.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from meshnode.net.dht.storage import RecordStore

DEFAULT_HOST: Final = "thread"
"""The host a node opens when none is open in its context."""

T = TypeVar("T")


class Host(Protocol):
    """What the trio side needs of the loop that runs kademlia."""

    name: str
    threaded: bool
    """Whether the asyncio side runs in another thread than trio."""

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the asyncio loop; cancelling the caller cancels it."""
        ...

    def soon(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` in the trio thread soon; from any thread, never blocking."""
        ...

    def store(self, store: RecordStore | None) -> RecordStore | None:
        """``store`` as the asyncio side may call it."""
        ...


class _ThreadHost:
    """An asyncio loop running forever in a thread of its own (rules 1 to 3)."""

    name = "thread"
    threaded = True

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self._loop = loop
        self._token = token
        self._trio_thread = threading.get_ident()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        done = trio.Event()
        future.add_done_callback(lambda _: self.soon(done.set))
        try:
            await done.wait()
        except BaseException:
            future.cancel()  # cancels the asyncio task, whose callbacks tidy up
            raise
        return future.result()

    def soon(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # trio has ended: nobody to tell
            self._token.run_sync_soon(fn)

    def store(self, store: RecordStore | None) -> RecordStore | None:
        return None if store is None else _StoreInTrio(store, self._token, self._trio_thread)


class _StoreInTrio:
    """A :class:`RecordStore` whose calls from the asyncio thread run in the trio
    thread (rule 2), so one SQLite connection never sees two threads at once."""

    def __init__(
        self, store: RecordStore, token: trio.lowlevel.TrioToken, trio_thread: int
    ) -> None:
        self._store = store
        self._token = token
        self._trio_thread = trio_thread

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        if threading.get_ident() == self._trio_thread:
            return fn(*args)
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise StoreError("the node is closing; the DHT store is gone") from None

    def dht_records(self) -> list[tuple[bytes, bytes]]:
        return self._call(self._store.dht_records)

    def dht_put(self, key: bytes, value: bytes, expires_at: int) -> None:
        self._call(self._store.dht_put, key, value, expires_at)

    def dht_delete(self, key: bytes) -> None:
        self._call(self._store.dht_delete, key)

    def get_meta(self, name: str) -> bytes | None:
        return self._call(self._store.get_meta, name)

    def set_meta(self, name: str, value: bytes) -> None:
        self._call(self._store.set_meta, name, value)


class _TrioAsyncioHost:
    """asyncio's callbacks as trio tasks, on a trio-asyncio loop."""

    name = "trio-asyncio"
    threaded = False

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        import trio_asyncio

        result: T = await trio_asyncio.aio_as_trio(coro, loop=self._loop)
        return result

    def soon(self, fn: Callable[[], object]) -> None:
        fn()

    def store(self, store: RecordStore | None) -> RecordStore | None:
        return store


_current_thread: contextvars.ContextVar[_ThreadHost | None] = contextvars.ContextVar(
    "meshnode_dht_thread", default=None
)


async def _drain() -> None:
    """Cancel what is left on the loop and let it finish, as ``asyncio.run`` does."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def open_dht_thread() -> AsyncIterator[None]:
    """Run an asyncio loop in a thread of its own for every DHT node opened in the block.

    Nodes share it, as the nodes of one process share a trio-asyncio loop; a
    node opened outside any host gets a thread of its own. On exit, whatever is
    left on the loop is cancelled and the thread joined.
    """
    async with _open_thread():
        yield


@contextlib.asynccontextmanager
async def _open_thread() -> AsyncIterator[_ThreadHost]:
    loop = asyncio.SelectorEventLoop()
    thread = threading.Thread(target=loop.run_forever, name="meshnode-dht", daemon=True)
    thread.start()
    host = _ThreadHost(loop, trio.lowlevel.current_trio_token())
    reset = _current_thread.set(host)
    try:
        yield host
    finally:
        _current_thread.reset(reset)
        with trio.CancelScope(shield=True):
            await host.run(_drain())
            loop.call_soon_threadsafe(loop.stop)
            await trio.to_thread.run_sync(thread.join)
            loop.close()


@contextlib.asynccontextmanager
async def open_host() -> AsyncIterator[Host]:
    """The host open in this context, or a thread of our own for the block."""
    thread = _current_thread.get()
    if thread is not None:
        yield thread
        return
    # trio-asyncio patches asyncio when imported: if nobody imported it, no loop is open.
    if "trio_asyncio" in sys.modules:
        import trio_asyncio

        loop = trio_asyncio.current_loop.get()
        if loop is not None:
            yield _TrioAsyncioHost(loop)
            return
    async with _open_thread() as own:
        yield own
