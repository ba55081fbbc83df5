"""The node's status: what ``meshnode status`` shows, gathered from every room.

A watcher learns of a change from the context's ``status_changed`` event (see
``net/context.py``); this room only reads, except for the time of the last
completed sync, which the machine reports.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from meshnode.core import views

if TYPE_CHECKING:
    from meshnode.net.channels import Channels
    from meshnode.net.context import Context
    from meshnode.net.peers import Peers


class Status:
    """The node's status on demand."""

    def __init__(self, ctx: Context, peers: Peers, channels: Channels) -> None:
        self._ctx = ctx
        self._peers = peers
        self._channels = channels
        self._last_sync: float | None = None

    def synced(self) -> None:
        """A sync with a peer completed."""
        self._last_sync = time.time()
        self._ctx.changed()

    def now(self) -> views.NodeStatus:
        ctx = self._ctx
        archive, store = ctx.archive, ctx.archive.store
        return views.NodeStatus(
            name=ctx.identity.name,
            key=ctx.identity.public_key,
            address=ctx.announce,
            peers=len(self._peers),
            dht_size=ctx.dht.size_estimate(),
            channels=len(archive.channels()),
            last_sync=self._last_sync,
            pending_deliveries=store.pending_count(now=int(time.time())),
            held_mail=store.mail_count(),
            removed=tuple(
                f"removed from {c.name} by {by}"
                for c in archive.channels()
                if (by := self._channels.removed_by(c)) is not None
            ),
            reachable=self._peers.reachable,
            unreadable=archive.unreadable_count(),
            storage=store.state.value,
            shares=tuple(
                views.ShareUse(name, used, budget)
                for name, (used, budget) in store.budget_use().items()
            ),
            evicted=store.evicted_count(),
        )
