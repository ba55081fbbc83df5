"""The group's bulletins: its own posted, durable before they leave; all of them read.

Theory of operation:
1. A post, a public post or an endorsement is sealed and stored durably by
   the archive, then published with the next commit pass
   (:meth:`~meshnode.net.intake.Intake.publish`): every operation that returns
   a bulletin returns a durable one.
2. A direct bulletin is sealed, stored and queued for direct delivery
   (:meth:`~meshnode.net.delivery.Courier.queue`) to each recipient.
3. Posting is refused where this group is no longer a member, and in a
   channel from 0.1.0 (no log says who may read it).
4. An endorsement of a bulletin by a group we do not know yet vouches for that
   group, as a known group's endorsement would (see ``net/intake.py``).
5. Reading yields the stored history, then, following, what arrives: it waits
   on the context's ``arrived`` event, taken before each query of the store so
   that a store made after the query wakes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshnode.core.bulletin import Bulletin, Kind
from meshnode.errors import StoreError, UnknownContact
from meshnode.net.delivery import DIRECT_EXPIRY, Courier

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from meshnode.core import views
    from meshnode.net.channels import Channels
    from meshnode.net.context import Context
    from meshnode.net.intake import Intake


class Bulletins:
    """Seals, stores and sends the bulletins this group writes; reads what is stored."""

    def __init__(
        self, ctx: Context, intake: Intake, delivery: Courier, channels: Channels
    ) -> None:
        self._ctx = ctx
        self._intake = intake
        self._delivery = delivery
        self._channels = channels

    def post(
        self,
        channel: views.ChannelRef,
        text: str,
        reply_to: bytes | None,
        expires: int | None,
    ) -> views.BulletinRecord:
        archive = self._ctx.archive
        held = archive.require_channel(channel)
        self._channels.check_member(held)
        bulletin = archive.seal(held, text.encode("utf-8"), reply_to=reply_to, expires_in=expires)
        return self._published(bulletin)

    def post_public(self, text: str, expires: int | None) -> views.BulletinRecord:
        bulletin = self._ctx.archive.seal(None, text.encode("utf-8"), expires_in=expires)
        return self._published(bulletin)

    def endorse(self, bulletin_id: bytes) -> views.BulletinRecord:
        archive = self._ctx.archive
        target = archive.bulletin(bulletin_id)
        channel = archive.channel(target.channel_id) if target.channel_id else None
        if target.channel_id is not None and channel is None:
            raise StoreError("that bulletin is in a channel this group is not in")
        if channel is not None:
            self._channels.check_member(channel)
        bulletin = archive.seal(channel, b"", endorses=target.id, kind=Kind.ENDORSEMENT)
        record = self._published(bulletin)
        self._intake.vouch(target.author)
        return record

    def send(
        self, recipients: Sequence[str | bytes], text: str, expires: int | None
    ) -> views.BulletinRecord:
        archive = self._ctx.archive
        keys = [k if isinstance(k, bytes) else archive.resolve_group(k) for k in recipients]
        if not keys:
            raise UnknownContact("name at least one recipient")
        bulletin = archive.seal(keys, text.encode("utf-8"), expires_in=expires or DIRECT_EXPIRY)
        self._delivery.queue(bulletin, keys)
        record = self._record(bulletin)
        self._ctx.notify()
        return record

    def _published(self, bulletin: Bulletin) -> views.BulletinRecord:
        """Publish one of ours (stored already) with the next pass; its record."""
        self._intake.publish(bulletin)
        return self._record(bulletin)

    def _record(self, bulletin: Bulletin) -> views.BulletinRecord:
        stored = self._ctx.archive.store.get(bulletin.id)
        assert stored is not None
        record = self._ctx.archive.record(stored)
        assert record is not None
        return record

    async def read(
        self, channel: views.ChannelRef | None, since: int | None, follow: bool
    ) -> AsyncGenerator[views.BulletinRecord, None]:
        archive = self._ctx.archive
        held = archive.require_channel(channel) if channel is not None else None
        cursor = archive.store.last_cursor()
        for record in archive.history(held, since=since):
            yield record
        while follow:
            arrived = self._ctx.arrived  # (taken before the query: a later store sets it)
            batch = archive.store.arrivals(after=cursor)
            if not batch:
                await arrived.wait()
                continue
            for stored in batch:
                cursor = stored.cursor
                live = archive.record(stored)
                if live is None or (held is not None and live.channel_id != held.id):
                    continue
                if since is None or live.created_at >= since:
                    yield live
