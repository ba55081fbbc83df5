"""What every room of a node shares: its machine, its archive, its DHT, its nursery.

The node (:mod:`meshnode.net.node`, which lists them) is a facade over rooms,
one per job. Each room gets this one :class:`Context` and, as constructor
arguments, the rooms below it that it calls, and a callback for each it calls
above it; none imports the node.

Rules:
1. The machine's events go to ``handle``, the node's dispatcher, whichever
   room drew them from the machine (a tick, a reject, a penalty).
2. ``changed`` wakes status watchers; ``notify`` wakes readers of arrivals.
   Each is an event set once and replaced, so a waiter takes the current one
   before it looks, and a change after the look wakes it.
3. A background job started with ``spawn`` ends alone, logged, on a store
   error (a full disk, say): never the node.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from meshnode.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from meshnode.archive import Archive
    from meshnode.core.gossip import Event, Gossip
    from meshnode.core.identity import Identity
    from meshnode.net.dht import DHTNode

log = logging.getLogger("meshnode.node")


class Context:
    """The node's shared parts, and the signals every room raises."""

    def __init__(
        self,
        *,
        identity: Identity,
        archive: Archive,
        dht: DHTNode,
        gossip: Gossip,
        announce: str,
        nursery: trio.Nursery,
        handle: Callable[[list[Event]], None],
    ) -> None:
        self.identity = identity
        self.archive = archive
        self.dht = dht
        self.gossip = gossip
        self.announce = announce
        """The address put in contact records and invites."""
        self.nursery = nursery
        self.handle = handle
        """Acts on the machine's events (the node's dispatcher)."""
        self.arrived = trio.Event()
        """Set (and replaced) whenever bulletins were stored: wakes ``bulletins()`` readers."""
        self.status_changed = trio.Event()
        """Set (and replaced) by ``changed``: wakes ``changes()`` watchers."""
        self.tick_at = math.inf
        """When the tick loop will next call ``gossip.tick``."""
        self.tick_sooner = trio.Event()
        """Set by ``machine_ran`` when the machine wants its tick before ``tick_at``."""

    def machine_ran(self) -> None:
        """After any input to the machine: its next tick may be due sooner (a second
        wave of pushes was queued), and the tick loop must wake for it."""
        if self.gossip.next_deadline() < self.tick_at:
            self.tick_sooner.set()

    def changed(self) -> None:
        self.status_changed.set()
        self.status_changed = trio.Event()

    def notify(self) -> None:
        self.arrived.set()
        self.arrived = trio.Event()

    def spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        """Start ``job`` in the node's nursery; a store error (a full disk, say) ends
        that job alone, logged, and never the node."""

        async def guarded() -> None:
            try:
                await job()
            except StoreError as exc:
                log.error("a background job stopped: %s", exc)

        self.nursery.start_soon(guarded)

    def blocked(self, key: bytes) -> bool:
        contact = self.archive.store.contact(key)
        return contact is not None and contact.blocked
