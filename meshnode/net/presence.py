"""The background loops that keep a node present on the mesh (docs/spec/gossip.md,
"Finding peers").

Theory of operation:
1. The ticker wakes the machine at its next deadline (heartbeats, wants,
   syncs) and writes what the tick queued.
2. The contact record is republished every ``overlay_interval``, before it
   expires; each channel's rendezvous record is published for each new day,
   and members found there are dialled until ``d`` peers share the channel's
   topic (also when the node creates or joins a channel, and after a rekey).
3. The mesh-wide (public) overlay is kept by ``plan_overlay``: at least
   ``d_low`` sessions, and up to ``d_high`` until ``d_low`` of them serve
   (relay bulletins on the public topic), giving up one idle session a round
   when full; new ones are dialled from the DHT's routing table in random
   order (a node's sessions listen on its DHT port, so routing entries are
   dialable).
4. Expired bulletins and mail are purged every ``purge_interval``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING

import trio

from meshnode.core import records
from meshnode.core.channel import Channel, day_of
from meshnode.core.gossip import plan_overlay
from meshnode.core.wire import PeerId, Topic
from meshnode.errors import MeshError, StoreError

if TYPE_CHECKING:
    from meshnode.net.context import Context
    from meshnode.net.peers import Peers

log = logging.getLogger("meshnode.node")


class Presence:
    """The node's loops: machine ticks, records and overlays, purges."""

    def __init__(
        self,
        ctx: Context,
        peers: Peers,
        *,
        overlay_interval: float,
        purge_interval: float,
        d: int,
        d_low: int,
        d_high: int,
        discover: bool,
    ) -> None:
        """``d``: the members of a channel to dial; ``d_low``: the sessions to keep, and
        to see serving before dialling stops at ``d_high``; ``discover``: whether to
        dial members and overlay peers at all (else only the sessions dialled by hand,
        through invites or by other nodes)."""
        self._ctx = ctx
        self._peers = peers
        self._overlay_interval = overlay_interval
        self._purge_interval = purge_interval
        self._d = d
        self._d_low = d_low
        self._d_high = d_high
        self._discover = discover
        self._shuffle = random.SystemRandom().shuffle

    async def run_ticks(self) -> None:
        """Tick the machine when it asks to, or sooner when an input moved its deadline
        (see ``Context.machine_ran``)."""
        ctx = self._ctx
        gossip = ctx.gossip
        while True:
            ctx.tick_sooner = trio.Event()
            ctx.tick_at = gossip.next_deadline()
            with trio.move_on_at(ctx.tick_at):
                await ctx.tick_sooner.wait()
            ctx.handle(gossip.tick(trio.current_time()))
            self._peers.flush()

    async def run_presence(self) -> None:
        """Publish our contact record, then our channels' rendezvous, again and again;
        keep the mesh-wide (public) overlay."""
        ctx = self._ctx
        while True:
            with contextlib.suppress(MeshError):
                await ctx.dht.publish_contact([ctx.announce])
            for channel in ctx.archive.channels():
                await self.find_members(channel)
            await self._fill_overlay()
            await trio.sleep(self._overlay_interval)

    async def _fill_overlay(self) -> None:
        """One round of ``plan_overlay``: give up the session it names, then dial nodes
        from the routing table, in random order, while there are fewer sessions than
        it keeps.

        Random order, so that a node giving up idle sessions draws new peers, not
        the next entries of the same buckets. Sessions given up are not dialled
        again this round."""
        if not self._discover:
            return
        plan = plan_overlay(
            self._peers.overlay_sessions(), d_low=self._d_low, d_high=self._d_high,
            now=time.time(), grace=self._overlay_interval / 2,
        )  # fmt: skip
        skip = {records.node_id(k) for k in self._peers}
        if plan.close:
            log.info("giving up %d public-overlay sessions that relay nothing", len(plan.close))
        for key in plan.close:
            await self._peers.close(key)
        entries = self._ctx.dht.routing_snapshot()
        self._shuffle(entries)
        for node_id, host, port in entries:
            if len(self._peers) >= plan.keep:
                return
            if node_id in skip:
                continue
            with contextlib.suppress(MeshError):
                await self._peers.dial(f"{host}:{port}")

    async def find_members(self, channel: Channel) -> None:
        """Put our contact in today's rendezvous of ``channel`` and dial members found there
        until the mesh has ``d`` of them (when the node discovers peers)."""
        ctx = self._ctx
        tag = channel.rendezvous_tag(day_of(int(time.time())))
        with contextlib.suppress(MeshError):
            if ctx.dht.contact is None:
                await ctx.dht.publish_contact([ctx.announce])
            await ctx.dht.publish_rendezvous(tag)
        if not self._discover:
            return
        found = await ctx.dht.lookup_rendezvous(tag)
        sharing = [
            k for k in self._peers if Topic(channel.id) in ctx.gossip.shared_topics(PeerId(k))
        ]
        for contact in found:
            if len(sharing) >= self._d:
                break
            key = contact.group_key
            if key == ctx.identity.public_key or key in self._peers or ctx.blocked(key):
                continue
            for address in contact.addresses:
                try:
                    await self._peers.dial(address)
                except MeshError:
                    continue
                sharing.append(key)
                break

    async def run_purges(self) -> None:
        while True:
            await trio.sleep(self._purge_interval)
            try:
                purged = self._ctx.archive.purge_expired()
            except StoreError as exc:  # tried again next time
                log.error("could not purge expired data: %s", exc)
                continue
            if purged:
                self._ctx.changed()  # (held mail and unreadable bulletins may have expired)
