"""Channel and membership operations: create, invite, join, remove, rekey, merge, upgrade.

Theory of operation (docs/spec/membership.md):
1. Every operation is written to the channel's membership log by
   :class:`~meshnode.memberships.Memberships`, carried in a bulletin of
   ours and published with the next commit pass; key updates and handovers go
   to each member as direct bulletins (:mod:`meshnode.net.delivery`), 16
   members to a bulletin, so they reach members that are offline through
   holders.
2. An invite code is redeemed online, in the session with the inviter's node:
   the joining node proves the token (REDEEM) bound to the session's
   handshake, and the inviter answers with the grant in parts (REDEEMED). An
   offline code carries the grant itself; the first member met redeems the
   token, which makes the holder a member.
3. When a channel's log or epoch changes, the node subscribes to its topic
   proving every leaf epoch it holds (so sibling epochs do not split the
   topic), takes in the bulletins that waited for the log, and sees that
   sibling epochs get merged: the most senior member starts the merging epoch
   at once, any other after ``merge_delay`` if nobody did.
4. A member who shares no epoch with us may be on a stale one: after
   ``merge_delay`` it is handed our newest keys again, once per epoch of ours.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from typing import TYPE_CHECKING, Final

import trio

from meshnode import redact
from meshnode.core import crypto, views, wire
from meshnode.core.gossip import channel_keys
from meshnode.core.identity import fingerprint
from meshnode.core.invite import MAX_GRANT, Grant, InviteCode, make_code, parse_code, redeem_proof
from meshnode.core.membership import KeyUpdate, Log
from meshnode.core.operation import Frontier, OpType
from meshnode.core.wire import PeerId, Topic
from meshnode.errors import (
    InvalidInvite,
    InviterUnreachable,
    MeshError,
    UnknownContact,
    UnknownInvite,
)
from meshnode.memberships import refusal

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from meshnode.core.channel import Channel
    from meshnode.net.context import Context
    from meshnode.net.delivery import Courier
    from meshnode.net.intake import Intake
    from meshnode.net.peers import Peers
    from meshnode.net.presence import Presence

log = logging.getLogger("meshnode.node")

DEFAULT_INVITE_EXPIRY: Final = 7 * 86400
MAX_LEAF_PROOFS: Final = 8
"""Leaf epochs of one channel a HELLO proves at most (current first)."""
REDEEM_PARTS: Final = 256
"""Parts of a grant a joining node takes at most (each up to 64 KiB)."""


class Channels:
    """The channels this group is in, and the operations on their membership."""

    def __init__(
        self,
        ctx: Context,
        peers: Peers,
        intake: Intake,
        delivery: Courier,
        presence: Presence,
        *,
        merge_delay: float,
        redeem_timeout: float,
    ) -> None:
        self._ctx = ctx
        self._peers = peers
        self._intake = intake
        self._delivery = delivery
        self._presence = presence
        self._merge_delay = merge_delay
        self._redeem_timeout = redeem_timeout
        self._merging: set[bytes] = set()
        """Channels whose sibling epochs a task of ours is about to merge."""
        self._caught_up: set[tuple[bytes, bytes]] = set()
        """(member, our epoch id) pairs already handed our newest keys."""
        self._redeeming: dict[bytes, trio.MemorySendChannel[wire.Redeemed]] = {}
        """Inviter key -> where its answers to our REDEEM go, while we wait for them."""

    # Operations ----------------------------------------------------------------------

    async def create(self, name: str) -> views.ChannelInfo:
        channel, carriers = self._ctx.archive.found_channel(name)
        self.subscribe(channel)
        for carrier in carriers:
            self._intake.publish(carrier)
        self._ctx.nursery.start_soon(self._presence.find_members, channel)
        return self.info(channel)

    async def invite(
        self,
        channel: views.ChannelRef,
        expires: int | None,
        *,
        offline: bool,
        with_history: bool,
        for_group: str | bytes | None,
    ) -> str:
        archive = self._ctx.archive
        held = archive.require_channel(channel)
        lifetime = DEFAULT_INVITE_EXPIRY if expires is None else expires
        if lifetime <= 0:
            raise MeshError("an invite's expiry must be in the future")
        group = None if for_group is None else self._group_key(for_group)
        seed = os.urandom(crypto.KEY_SIZE)
        token = crypto.signing_keypair(seed)[0]
        now = int(time.time())
        op = archive.memberships.write(
            held,
            OpType.INVITE,
            token=token,
            expires_at=now + lifetime,
            for_group=group,
            with_history=with_history,
        )
        self._intake.publish(archive.carry(held, op))
        grant = archive.memberships.grant(held, with_history=with_history) if offline else None
        try:
            return make_code(
                self._ctx.identity,
                channel=held,
                token_seed=seed,
                addresses=[self._ctx.announce],
                now=now,
                expires_at=now + lifetime,
                grant=grant,
            )
        except ValueError as exc:
            raise MeshError(str(exc)) from None

    async def join(self, code: str) -> views.ChannelInfo:
        archive = self._ctx.archive
        parsed = parse_code(code, now=int(time.time()))
        if parsed.grant is not None:
            channel = archive.keep(archive.memberships.accept_offline(parsed))
            for address in parsed.addresses:  # (the inviter's node, if it is up)
                if address != self._ctx.announce:
                    with contextlib.suppress(MeshError):
                        await self._peers.dial(address)
        else:
            grant = await self._redeem(parsed)
            channel = archive.joined(parsed, grant)
        self.subscribe(channel)
        self._ctx.nursery.start_soon(self._presence.find_members, channel)
        return self.info(channel)

    async def leave(self, channel: views.ChannelRef) -> None:
        ctx = self._ctx
        held = ctx.archive.require_channel(channel)
        log = ctx.archive.memberships.log(held.id)
        if log is not None and log.is_member(ctx.identity.public_key):
            op = ctx.archive.memberships.write(held, OpType.LEAVE)
            self._intake.publish(ctx.archive.carry(held, op))
            self._peers.flush()
        ctx.archive.remove_channel(held)
        ctx.handle(ctx.gossip.unsubscribe(Topic(held.id), now=trio.current_time()))
        ctx.changed()
        self._peers.flush()

    async def remove(
        self, channel: views.ChannelRef, groups: Sequence[str | bytes]
    ) -> views.ChannelInfo:
        archive = self._ctx.archive
        held = archive.require_channel(channel)
        log = self._log(held)
        targets = []
        frontiers = archive.store.frontiers(held.id)
        for group in groups:
            key = self._member_key(log, group)
            if key == self._ctx.identity.public_key:
                raise UnknownContact("to take this group out of a channel, leave it")
            seq = frontiers.get(key, 0)
            frontier_id = archive.store.id_at(held.id, key, seq) if seq else None
            targets.append(Frontier(key, seq, frontier_id))
        if not targets:
            raise UnknownContact("name at least one group to remove")
        op = archive.memberships.write(held, OpType.REMOVE, targets=tuple(targets))
        self._intake.publish(archive.carry(held, op))
        # The removed share no epoch with us from now on: their removal goes to them
        # as direct mail, which reaches them through holders even while offline.
        removed = [t.key for t in targets]
        notice = KeyUpdate(held.id, (op.raw,), None)
        self._delivery.queue(archive.key_update(notice, removed), removed)
        return await self._new_epoch(held)

    async def rekey(
        self, channel: views.ChannelRef, remove: Sequence[str | bytes]
    ) -> views.ChannelInfo:
        if remove:
            return await self.remove(channel, remove)
        return await self._new_epoch(self._ctx.archive.require_channel(channel))

    async def _merge(self, channel_id: bytes, delay: float) -> None:
        """Start the epoch that follows every leaf (docs/spec/membership.md, "Epochs"):
        the most senior member at once, any other after ``merge_delay`` if nobody did."""
        archive = self._ctx.archive
        try:
            await trio.sleep(delay)
            held = archive.channel(channel_id)
            log = archive.memberships.log(channel_id)
            if held is None or log is None or not log.needs_merge():
                return
            if not log.is_member(self._ctx.identity.public_key):
                return
            with contextlib.suppress(MeshError):
                await self._new_epoch(held)
        finally:
            self._merging.discard(channel_id)

    async def _new_epoch(self, held: Channel) -> views.ChannelInfo:
        archive = self._ctx.archive
        log = self._log(held)
        channel, op, update = archive.memberships.new_epoch(held)
        channel = archive.keep(channel)
        self.subscribe(channel)
        self._intake.publish(archive.carry(channel, op))
        self._hand_over(channel, update, log)
        self._ctx.nursery.start_soon(self._presence.find_members, channel)
        return self.info(channel)

    def _hand_over(self, channel: Channel, update: KeyUpdate, log: Log) -> None:
        """Key updates to every member the log keeps (16 to a bulletin)."""
        members = sorted(k for k in log.members() if k != self._ctx.identity.public_key)
        for start in range(0, len(members), 16):
            batch = members[start : start + 16]
            self._delivery.queue(self._ctx.archive.key_update(update, batch), batch)

    async def upgrade(
        self, channel: views.ChannelRef, keep: Sequence[str | bytes]
    ) -> views.ChannelInfo:
        archive = self._ctx.archive
        held = archive.require_channel(channel)
        authors = archive.store.frontiers(held.id)
        kept = [self._group_key(group, among=authors) for group in keep]
        upgraded, carriers, grant = archive.upgrade(held, kept)
        self.subscribe(upgraded)
        for carrier in carriers:
            self._intake.publish(carrier)
        others = [k for k in dict.fromkeys(kept) if k != self._ctx.identity.public_key]
        for start in range(0, len(others), 16):
            batch = others[start : start + 16]
            self._delivery.queue(archive.hand_over(grant, batch), batch)
        self._ctx.nursery.start_soon(self._presence.find_members, upgraded)
        return self.info(upgraded)

    async def revoke_invite(self, channel: views.ChannelRef, invite_id: bytes | str) -> None:
        archive = self._ctx.archive
        held = archive.require_channel(channel)
        log = self._log(held)
        token = _find_invite(log, invite_id)
        op = archive.memberships.write(held, OpType.REVOKE, token=token)
        self._intake.publish(archive.carry(held, op))

    # Redeeming invites -----------------------------------------------------------------

    async def _redeem(self, code: InviteCode) -> Grant:
        """Dial the inviter, prove the token in that session, and collect the grant."""
        problem = "no address in the code"
        for address in code.addresses:
            try:
                key = await self._peers.dial(address)
            except MeshError as exc:
                problem = str(exc)
                continue
            if key != code.inviter or key not in self._peers:
                problem = f"{address} is not the inviting group's node"
                continue
            grant = await self._redeem_at(key, code.token_seed)
            if grant is not None:
                return grant
            problem = f"{address} did not answer"
        raise InviterUnreachable(
            f"could not reach the inviting group's node ({problem}): this code works only "
            "while that node is online; if you cannot be online together, ask them for one "
            "made with 'meshnode channel invite NAME --offline'"
        )

    async def _redeem_at(self, key: bytes, token_seed: bytes) -> Grant | None:
        """Prove the token to the node of group ``key`` in our session with it, and
        collect its grant (None if it does not answer in time).

        Raises:
            InvalidInvite: it refused (InviteUsed, InviteRevoked, InviteExpired).
        """
        session = self._peers.session(key)
        if session is None or key in self._redeeming:
            return None
        me = self._ctx.identity.public_key
        proof = redeem_proof(token_seed, session.handshake_hash, me)
        token = crypto.signing_keypair(token_seed)[0]
        send, receive = trio.open_memory_channel[wire.Redeemed](REDEEM_PARTS)
        self._redeeming[key] = send
        try:
            self._ctx.gossip.send(PeerId(key), wire.Redeem(token=token, proof=proof))
            self._peers.flush()
            with trio.move_on_after(self._redeem_timeout):
                return Grant.decode(await _grant_parts(receive))
            return None
        finally:
            self._redeeming.pop(key, None)

    async def _redeem_offline(self, key: bytes, channel_id: bytes) -> None:
        """We joined with an offline code and met a member: have it redeem the token,
        which makes us a member (its add reaches the others as any operation)."""
        memberships = self._ctx.archive.memberships
        seed = memberships.pending_token(channel_id)
        if seed is None:
            return
        try:
            grant = await self._redeem_at(key, seed)
        except InvalidInvite as exc:
            log.warning("an offline invite was refused when redeemed: %s", redact.peer(exc))
            memberships.forget_token(channel_id)
            return
        if grant is None:
            return
        with contextlib.suppress(InvalidInvite):
            channel = self._ctx.archive.keep(memberships.accept_grant(channel_id, grant))
            self.log_changed(channel)
            self._ctx.changed()

    def redeem_received(self, peer: PeerId, message: wire.Redeem | wire.Redeemed) -> None:
        """A REDEEM to answer, or a part of the answer to ours (through direct delivery,
        which writes what this queues)."""
        if isinstance(message, wire.Redeem):
            self._answer_redeem(peer, message)
            return
        waiting = self._redeeming.get(bytes(peer))
        if waiting is not None:  # else a late answer, after we gave up
            try:
                waiting.send_nowait(message)
            except (trio.WouldBlock, trio.BrokenResourceError):
                self._redeeming.pop(bytes(peer), None)

    def _answer_redeem(self, peer: PeerId, message: wire.Redeem) -> None:
        archive, gossip = self._ctx.archive, self._ctx.gossip
        session = self._peers.session(bytes(peer))
        if session is None:
            return
        verdict, grant, added = archive.memberships.redeem(
            archive.channels(),
            token=message.token,
            proof=message.proof,
            handshake_hash=session.handshake_hash,
            invitee=bytes(peer),
        )
        if added is not None:
            self._intake.publish(archive.carry(added[0], added[1]))
        if grant is None:
            gossip.send(peer, wire.Redeemed(verdict=verdict, part=b"", more=False))
            return
        data = grant.encode()
        size = wire.MAX_GRANT_PART - 64
        parts = [data[i : i + size] for i in range(0, len(data), size)]
        for i, part in enumerate(parts):
            more = i < len(parts) - 1
            gossip.send(peer, wire.Redeemed(verdict=verdict, part=part, more=more))

    # Views ---------------------------------------------------------------------------

    def info(self, channel: Channel) -> views.ChannelInfo:
        """What :meth:`Node.channels` shows of ``channel``."""
        archive = self._ctx.archive
        log = archive.memberships.log(channel.id)
        members = (
            len(log.members()) if log is not None else len(archive.store.frontiers(channel.id))
        )
        return views.ChannelInfo(
            id=channel.id,
            name=channel.name,
            epoch=channel.epoch,
            members=members,
            bulletins=archive.store.channel_posts(channel.id),
            read_only=log is None,
            removed_by=self.removed_by(channel),
        )

    def members(self, channel: views.ChannelRef) -> list[views.MemberInfo]:
        archive = self._ctx.archive
        log = self._log(archive.require_channel(channel))
        ranked = sorted(log.members().values(), key=lambda m: (m.rank, m.key))
        return [
            views.MemberInfo(
                key=m.key, name=archive.author_name(m.key), added_by=m.added_by, added_at=m.added_at
            )
            for m in ranked
        ]

    def invites(self, channel: views.ChannelRef) -> list[views.InviteInfo]:
        log = self._log(self._ctx.archive.require_channel(channel))
        return [
            views.InviteInfo(
                id=i.token,
                issued_by=i.issued_by,
                created_at=i.created_at,
                expires_at=i.expires_at,
                used_by=i.used_by,
                revoked=i.revoked,
            )
            for i in log.invites()
        ]

    def log(self, channel: views.ChannelRef) -> list[views.OperationInfo]:
        archive = self._ctx.archive
        log = self._log(archive.require_channel(channel))
        state = log.state()
        epochs = log.epochs()
        out = []
        for op in log.ops():
            groups = (op.key,) if op.type == OpType.ADD else tuple(t.key for t in op.targets)
            epoch = epochs.get(op.epoch_id) if op.type in (OpType.EPOCH, OpType.CREATE) else None
            out.append(
                views.OperationInfo(
                    id=op.id,
                    kind=op.type.name.lower(),
                    author=op.author,
                    author_name=archive.author_name(op.author),
                    created_at=op.created_at,
                    groups=groups,
                    group_names=tuple(archive.author_name(g) for g in groups),
                    invite=op.token,
                    epoch=None if epoch is None else epoch.number,
                    void=op.id in state.void,
                )
            )
        return out

    def removed_by(self, channel: Channel) -> str | None:
        """Who removed this group from ``channel`` (its own name if it left), if so."""
        archive = self._ctx.archive
        log = archive.memberships.log(channel.id)
        gone = None if log is None else log.departure(self._ctx.identity.public_key)
        return None if gone is None else archive.author_name(gone.by)

    def check_member(self, channel: Channel) -> None:
        """Refuse to post where this group is no longer a member, or in a channel from
        0.1.0 (no log says who may read it)."""
        removed_by = self.removed_by(channel)
        if removed_by is not None:
            raise MeshError(f"this group was removed from {channel.name!r} by {removed_by}")
        if self._ctx.archive.memberships.log(channel.id) is None:
            raise MeshError(
                f"{channel.name!r} was made by meshnode 0.1.0 and is read-only: a member "
                f"makes it writable with 'meshnode channel upgrade {channel.name}'"
            )

    def _log(self, channel: Channel) -> Log:
        log = self._ctx.archive.memberships.log(channel.id)
        if log is None:
            raise MeshError(
                f"{channel.name!r} was made by meshnode 0.1.0 and has no membership log: "
                f"run 'meshnode channel upgrade {channel.name}' first"
            )
        return log

    def _member_key(self, log: Log, group: str | bytes) -> bytes:
        """A member's key from a petname, a key text, a key or a fingerprint."""
        key = self._group_key(group, among=log.members())
        if not log.is_member(key):
            name = self._ctx.archive.author_name(key)
            raise UnknownContact(f"{name} is not a member of this channel")
        return key

    def _group_key(self, group: str | bytes, among: Iterable[bytes] = ()) -> bytes:
        """A group's key from a key, a petname, a key text, or the fingerprint of one of
        ``among`` (fingerprints name only groups we can list)."""
        if isinstance(group, bytes):
            return group
        wanted = group.strip().lower()
        by_print = [k for k in among if fingerprint(k) == wanted]
        return by_print[0] if by_print else self._ctx.archive.resolve_group(group)

    # Keeping the topic and the members up to date ------------------------------------

    def subscribe(self, channel: Channel) -> None:
        """Take part in the channel's topic, proving every leaf epoch we hold (so
        sibling epochs do not split the topic), else the newest."""
        ctx = self._ctx
        log = ctx.archive.memberships.log(channel.id)
        leaves = [] if log is None else [e.id for e in log.leaves()[:MAX_LEAF_PROOFS]]
        held = [wire.member_key(k.secret) for k in channel.keys if k.id in leaves]
        keys = tuple(held) if held else channel_keys(channel)
        ctx.handle(ctx.gossip.subscribe(Topic(channel.id), keys, now=trio.current_time()))
        ctx.changed()
        self._peers.flush()

    def log_changed(self, channel: Channel) -> None:
        """A channel's log or epoch changed: present its keys, take in what waited,
        and see that sibling epochs get merged."""
        archive = self._ctx.archive
        self.subscribe(channel)
        log = archive.memberships.log(channel.id)
        if log is not None and log.needs_merge() and channel.id not in self._merging:
            self._merging.add(channel.id)
            me = self._ctx.identity.public_key
            delay = 0.0 if log.merge_starter() == me else self._merge_delay
            self._ctx.nursery.start_soon(self._merge, channel.id, delay)
        self._intake.know_again()
        released = archive.memberships.released(channel.id)
        if released:
            self._intake.release(released)

    def catch_up(self, peer: bytes, shared: frozenset[Topic]) -> None:
        """A member of one of our channels who shares no epoch with us may be on a
        stale one (offline across rekeys, say): if it still shares none after
        ``merge_delay`` (a rekey's own key updates take less), hand it our newest
        keys again, once per epoch of ours. (If it is we who are stale, it ignores
        keys it holds.)"""
        archive = self._ctx.archive
        for channel in archive.channels():
            log = archive.memberships.log(channel.id)
            if log is None or not log.is_member(peer):
                continue
            if Topic(channel.id) in shared:
                if archive.memberships.pending_token(channel.id) is not None:
                    self._ctx.spawn(functools.partial(self._redeem_offline, peer, channel.id))
                continue
            if (peer, channel.current) not in self._caught_up:
                self._caught_up.add((peer, channel.current))
                self._ctx.spawn(functools.partial(self._hand_again, peer, channel.id))

    async def _hand_again(self, peer: bytes, channel_id: bytes) -> None:
        await trio.sleep(self._merge_delay)
        archive = self._ctx.archive
        channel = archive.channel(channel_id)
        if channel is None or Topic(channel_id) in self._ctx.gossip.shared_topics(PeerId(peer)):
            return
        for update in archive.memberships.handovers(channel):
            self._delivery.queue(archive.key_update(update, [peer]), [peer])


async def _grant_parts(receive: trio.MemoryReceiveChannel[wire.Redeemed]) -> bytes:
    """The parts of an inviter's answer, joined; a refusal raises its error."""
    parts: list[bytes] = []
    size = 0
    async for message in receive:
        if message.verdict != wire.Verdict.GRANTED:
            raise refusal(message.verdict)
        parts.append(message.part)
        size += len(message.part)
        if size > MAX_GRANT:
            break
        if not message.more:
            return b"".join(parts)
    raise InvalidInvite("the inviter's answer is too large or cut short: ask for a new code")


def _find_invite(log: Log, invite_id: bytes | str) -> bytes:
    """An invite's token from its id (bytes, hex or a unique hex prefix of 8 or more)."""
    tokens = [i.token for i in log.invites()]
    if isinstance(invite_id, bytes):
        found = [t for t in tokens if t == invite_id]
    else:
        wanted = invite_id.strip().lower()
        found = [t for t in tokens if len(wanted) >= 8 and t.hex().startswith(wanted)]
    if len(found) != 1:
        raise UnknownInvite(
            f"no single invite {invite_id if isinstance(invite_id, str) else invite_id.hex()} "
            "in this channel (see 'meshnode channel invites')"
        )
    return found[0]
