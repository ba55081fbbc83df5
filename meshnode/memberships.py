"""The membership logs a node holds, over the store (no networking).

One :class:`~meshnode.core.membership.Log` per channel that has one (channels
from 0.1.0 have none until a member upgrades them: they stay readable,
read-only). This layer:
- writes this group's operations (founding a channel, invites, adds, removals,
  epoch starts, leaving) and keeps every operation durably before anyone hears
  of it;
- takes in operations from carriers, key updates and grants;
- says which channel bulletins are heard (``admit``), holding those whose
  author the log does not know yet until it does;
- answers redemptions of invites (``redeem``).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import TYPE_CHECKING

from meshnode.core import crypto
from meshnode.core.bulletin import Bulletin, Kind
from meshnode.core.channel import Channel, EpochKey
from meshnode.core.invite import Grant, InviteCode, check_redeem_proof
from meshnode.core.membership import InviteState, KeyUpdate, Log, Post, checkpoint_of
from meshnode.core.operation import MAX_PENDING, Op, OpType, decode_op, epoch_id, sign_op
from meshnode.core.wire import Verdict
from meshnode.errors import (
    InvalidInvite,
    InvalidOperation,
    InviteExpired,
    InviteRevoked,
    InviteUsed,
    MeshError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from meshnode.core.identity import Identity
    from meshnode.store import Store

MAX_HELD_PER_CHANNEL = MAX_PENDING
"""Channel bulletins held per channel while their author is unknown to the log."""
MAX_OPS_PER_AUTHOR = 512
"""Operations of one author a channel's log takes at most (from others)."""
MAX_WAITING_UPDATES = 16
"""Key updates a channel keeps waiting for an earlier epoch's (the newest)."""
CATCH_UP_EPOCHS = 4
"""Epoch numbers handed again to a member seen on a stale epoch."""


class Memberships:
    """Every channel's membership log on this node.

    Args:
        identity: this group (the author of our operations).
        store: where operations are kept.
        clock: Unix seconds, written into operations.
        rng: random bytes for epoch secrets and invite tokens.
    """

    def __init__(
        self,
        identity: Identity,
        store: Store,
        *,
        clock: Callable[[], int],
        rng: crypto.Rng,
    ) -> None:
        self.identity = identity
        self.store = store
        self._clock = clock
        self._rng = rng
        self._logs: dict[bytes, Log] = {}
        self._held: dict[bytes, OrderedDict[bytes, Bulletin]] = {}
        self._waiting: dict[bytes, list[KeyUpdate]] = {}
        """Key updates per channel for an epoch after one we do not hold yet."""

    # -- loading ------------------------------------------------------------------------

    def load(self, channel_id: bytes) -> Log | None:
        """Read a channel's log from the store (None for a channel from 0.1.0)."""
        root_id = self.store.channel_root(channel_id)
        if root_id is None:
            return None
        ops = {}
        for raw in self.store.ops(channel_id):
            try:
                op = decode_op(raw)
            except InvalidOperation:
                continue
            ops[op.id] = op
        root = ops.pop(root_id, None)
        if root is None:
            return None
        log = Log(root)
        for op in ops.values():
            _add_quietly(log, op)
        self._logs[channel_id] = log
        return log

    def log(self, channel_id: bytes) -> Log | None:
        return self._logs.get(channel_id)

    def forget(self, channel_id: bytes) -> None:
        self._logs.pop(channel_id, None)
        self._held.pop(channel_id, None)
        self._waiting.pop(channel_id, None)

    # -- writing ------------------------------------------------------------------------

    def found(self, name: str) -> tuple[Channel, list[Op]]:
        """A new channel with this group as its only member: the create operation
        and a first epoch, so the founding secret (from which the id is derived)
        never has to leave this node."""
        now = self._clock()
        channel = Channel.from_secret(name, self._rng(crypto.KEY_SIZE))
        root = sign_op(
            self.identity, channel.id, OpType.CREATE, seq=1, created_at=now, parents=(),
            name=channel.name, epoch_id=channel.current,
        )
        log = Log(root)
        first = EpochKey(1, self._rng(crypto.KEY_SIZE))
        epoch = self._sign(log, OpType.EPOCH, parent_epochs=(channel.current,),
                           epoch_id=first.id, checkpoint=checkpoint_of(log.state()))
        log.add(epoch)
        channel = channel.with_key(first, current=True)
        self.store.save_channel(channel, now=now, root=root.id)
        self.store.save_ops(channel.id, [(root.id, root.raw), (epoch.id, epoch.raw)])
        self._logs[channel.id] = log
        return channel, [root, epoch]

    def write(self, channel: Channel, op_type: OpType, **values: object) -> Op:
        """Sign, keep and take in one operation of ours.

        Raises:
            MeshError: the channel has no log, or the log refuses the operation
                (we are no longer a member, for instance).
        """
        log = self._require(channel)
        op = self._sign(log, op_type, **values)
        problem = log.check(op)
        if problem is not None:
            raise MeshError(f"cannot do that in {channel.name!r}: {problem}")
        log.add(op)
        self.store.save_ops(channel.id, [(op.id, op.raw)])
        return op

    def _sign(self, log: Log, op_type: OpType, **values: object) -> Op:
        heads = log.heads()
        newest = max((o.created_at for o in map(log.get, heads) if o is not None), default=0)
        return sign_op(
            self.identity, log.channel_id, op_type,
            seq=log.next_seq(self.identity.public_key),
            created_at=max(self._clock(), newest), parents=heads, **values,
        )

    def upgrade(self, channel: Channel, keep: Sequence[bytes]) -> tuple[Channel, list[Op]]:
        """Give a channel made by 0.1.0 its membership log: a create operation (for
        the epoch 0 every holder of the old channel knows), an add for each group
        kept, and a fresh epoch only they will get. Returns the channel on it and the
        operations written.

        Raises:
            MeshError: the channel has a log already, or this node lacks its epoch 0.
        """
        if channel.id in self._logs:
            raise MeshError(f"{channel.name!r} has a membership log already")
        founding = channel.founding_secret
        if founding is None:
            raise MeshError(f"this node does not hold the founding secret of {channel.name!r}")
        now = self._clock()
        root = sign_op(
            self.identity, channel.id, OpType.CREATE, seq=1, created_at=now, parents=(),
            name=channel.name, epoch_id=epoch_id(founding),
        )
        log = self._logs[channel.id] = Log(root)
        ops = [root]
        for key in dict.fromkeys(keep):
            if key != self.identity.public_key:
                ops.append(self._sign(log, OpType.ADD, key=key, token=None))
                log.add(ops[-1])
        fresh = EpochKey(1 + max(k.number for k in channel.keys), self._rng(crypto.KEY_SIZE))
        ops.append(self._sign(log, OpType.EPOCH, parent_epochs=(epoch_id(founding),),
                              epoch_id=fresh.id, checkpoint=checkpoint_of(log.state())))
        log.add(ops[-1])
        channel = channel.with_key(fresh, current=True)
        self.store.save_channel(channel, now=now, root=root.id)
        self.store.save_ops(channel.id, [(o.id, o.raw) for o in ops])
        return channel, ops

    def _require(self, channel: Channel) -> Log:
        log = self._logs.get(channel.id)
        if log is None:
            raise MeshError(
                f"{channel.name!r} was made by meshnode 0.1.0 and is read-only: "
                f"run 'meshnode channel upgrade {channel.name}' first"
            )
        return log

    def new_epoch(self, channel: Channel) -> tuple[Channel, Op, KeyUpdate]:
        """Start an epoch following every leaf (a rekey, and a merge of siblings):
        the channel on it, the operation, and the key update for the members."""
        log = self._require(channel)
        leaves = log.leaves()
        key = EpochKey(1 + max(e.number for e in leaves), self._rng(crypto.KEY_SIZE))
        op = self.write(
            channel, OpType.EPOCH, parent_epochs=tuple(sorted(e.id for e in leaves)),
            epoch_id=key.id, checkpoint=checkpoint_of(log.state()),
        )
        channel = channel.with_key(key, current=True)
        self.store.save_channel(channel, now=self._clock())
        parents = [p for p in (log.get(i) for i in op.parents) if p is not None]
        update = KeyUpdate(channel.id, (*(p.raw for p in parents), op.raw), key.secret)
        return channel, op, update

    def handovers(self, channel: Channel, newest: int = CATCH_UP_EPOCHS) -> list[KeyUpdate]:
        """Key updates for the ``newest`` epoch numbers we hold, oldest first: what a
        member seen on a stale epoch gets, so one offline for weeks catches up."""
        log = self._logs.get(channel.id)
        if log is None:
            return []
        epochs = log.epochs()
        numbers = sorted({k.number for k in channel.keys})[-newest:]
        updates = []
        for key in channel.keys:
            epoch = epochs.get(key.id)
            op = None if epoch is None else log.get(epoch.op)
            if key.number not in numbers or op is None or op.type != OpType.EPOCH:
                continue
            parents = [p.raw for p in map(log.get, op.parents) if p is not None]
            updates.append(KeyUpdate(channel.id, (*parents, op.raw), key.secret))
        return updates

    # -- taking in ----------------------------------------------------------------------

    def take(self, channel: Channel, raws: Iterable[bytes]) -> list[Op]:
        """Take in operations of ``channel`` (from carriers or a key update); returns
        those that entered the log, now kept. Anything malformed is skipped."""
        log = self._logs.get(channel.id)
        if log is None:
            return []
        entered: list[Op] = []
        for raw in raws:
            try:
                op = decode_op(raw)
            except InvalidOperation:
                continue
            if op.id in log or not (log.is_named(op.id) or log.could_count(op)):
                continue  # it could only ever be void: it would just fill the log
            if log.authored(op.author) >= MAX_OPS_PER_AUTHOR:
                continue  # one group cannot fill its channel's log
            entered.extend(_add_quietly(log, op))
        if entered:
            self.store.save_ops(channel.id, [(o.id, o.raw) for o in entered])
        return entered

    def apply_key_update(self, channel: Channel, update: KeyUpdate) -> Channel | None:
        """The channel on the epoch a key update starts, if the log takes it: from a
        member of its parent epochs, following an epoch we hold, agreeing with the log."""
        log = self._logs.get(channel.id)
        if log is None or not update.ops:
            return None
        if update.secret is None:
            return self.follow(channel) if self.take(channel, update.ops) else None
        self.take(channel, update.ops[:-1])
        try:
            op = decode_op(update.ops[-1])
        except InvalidOperation:
            return None
        if op.type != OpType.EPOCH or op.epoch_id != epoch_id(update.secret):
            return None
        held = {k.id for k in channel.keys}
        if not any(p in held for p in op.parent_epochs) or any(p not in log for p in op.parents):
            # An update for an epoch after one still on its way (mail comes in any
            # order): it waits for that one (bounded), see ``retry``.
            waiting = self._waiting.setdefault(channel.id, [])
            if update not in waiting:
                waiting.append(update)
                del waiting[:-MAX_WAITING_UPDATES]
            return None
        if log.check_epoch_start(op) is not None:
            return None
        self.take(channel, [op.raw])
        epoch = log.epochs().get(op.epoch_id)
        if epoch is None:
            return None
        channel = channel.with_key(EpochKey(epoch.number, update.secret), current=False)
        self.store.save_channel(channel, now=self._clock())
        return self.follow(channel)

    def retry(self, channel: Channel) -> Channel:
        """``channel`` after the key updates that waited for an epoch it now holds."""
        progress = True
        while progress:
            progress = False
            for update in self._waiting.pop(channel.id, []):
                done = self.apply_key_update(channel, update)
                if done is not None:
                    channel, progress = done, True
        return channel

    def follow(self, channel: Channel) -> Channel:
        """``channel`` on the log's current epoch, if we hold its key (kept)."""
        log = self._logs.get(channel.id)
        if log is None:
            return channel
        current = log.current_epoch().id
        if current != channel.current and any(k.id == current for k in channel.keys):
            channel = dataclasses.replace(channel, current=current)
            self.store.save_channel(channel, now=self._clock())
        return channel

    # -- who is heard -------------------------------------------------------------------

    def admit(self, bulletin: Bulletin) -> Post:
        """Whether a channel bulletin is heard: its author must be a member at its
        epoch (a departed group up to its frontier). Carriers of operations are heard
        from anyone who could seal them: the log judges the operation."""
        if bulletin.channel_id is None:
            return Post.ACCEPT
        log = self._logs.get(bulletin.channel_id)
        if log is None or bulletin.author == self.identity.public_key:
            return Post.ACCEPT
        if bulletin.kind == Kind.MEMBERSHIP:
            return Post.ACCEPT
        verdict = log.admit(bulletin.author, bulletin.seq)
        gone = log.departure(bulletin.author)
        if verdict is Post.ACCEPT and gone is not None and gone.frontier is not None:
            # At or below its frontier: only what it wrote before; a fork written
            # since (another bulletin under a number held, or the frontier's) is not.
            known = (
                gone.frontier.id
                if bulletin.seq == gone.frontier.seq
                else self.store.id_at(bulletin.channel_id, bulletin.author, bulletin.seq)
            )
            if known is not None and known != bulletin.id:
                return Post.REFUSE
        return verdict

    def hold(self, bulletin: Bulletin) -> None:
        """Keep a bulletin whose author the log does not know yet (bounded: the oldest
        held goes first)."""
        assert bulletin.channel_id is not None
        held = self._held.setdefault(bulletin.channel_id, OrderedDict())
        held[bulletin.id] = bulletin
        while len(held) > MAX_HELD_PER_CHANNEL:
            held.popitem(last=False)

    def released(self, channel_id: bytes) -> list[Bulletin]:
        """Held bulletins of a channel the log now admits (the refused are dropped)."""
        held = self._held.get(channel_id)
        if not held:
            return []
        out = []
        for bid, b in list(held.items()):
            verdict = self.admit(b)
            if verdict == Post.HOLD:
                continue
            del held[bid]
            if verdict == Post.ACCEPT:
                out.append(b)
        return out

    # -- invites ------------------------------------------------------------------------

    def redeem(
        self,
        channels: Sequence[Channel],
        *,
        token: bytes,
        proof: bytes,
        handshake_hash: bytes,
        invitee: bytes,
    ) -> tuple[Verdict, Grant | None, tuple[Channel, Op] | None]:
        """Answer a redemption: the verdict, the grant when it is granted, and the add
        operation written for it (to carry). Reasons go only to a valid proof of an
        invite this node's logs hold; a repeat by the same group gets the same grant."""
        if not check_redeem_proof(token, proof, handshake_hash, invitee):
            return Verdict.REFUSED, None, None
        for channel in channels:
            log = self._logs.get(channel.id)
            invite = None if log is None else log.state().invites.get(token)
            if log is None or invite is None:
                continue
            if invite.used_by == invitee and log.is_member(invitee):
                grant = self.grant(channel, with_history=invite.with_history)
                return Verdict.GRANTED, grant, None
            refused = _refused(invite, invitee, self._clock())
            if refused is not None:
                return refused, None, None
            if log.departure(invitee) is not None or log.is_member(invitee):
                return Verdict.REFUSED, None, None
            try:
                op = self.write(channel, OpType.ADD, key=invitee, token=token)
            except MeshError:
                return Verdict.UNAVAILABLE, None, None
            grant = self.grant(channel, with_history=invite.with_history)
            return Verdict.GRANTED, grant, (channel, op)
        return Verdict.REFUSED, None, None

    def grant(self, channel: Channel, *, with_history: bool) -> Grant:
        """What a new member receives: the current epoch (every epoch with history)
        and the whole log."""
        log = self._require(channel)
        founding = channel.founding_secret
        # The founding secret (epoch 0's; the channel id is derived from it) stays with
        # those who hold it: a new channel's founder leaves epoch 0 at once.
        history = tuple(k for k in channel.keys if k.secret != founding)
        keys = history if with_history else (channel.current_key,)
        handed = Channel(name=channel.name, id=channel.id, keys=keys, current=channel.current)
        return Grant(channel=handed, root=log.root.id, ops=tuple(o.raw for o in log.ops()))

    def accept_grant(self, channel_id: bytes, grant: Grant) -> Channel:
        """Hold the channel a grant hands over (an inviter's answer, or an upgrade of
        a channel from 0.1.0), after checking it is ``channel_id``'s.

        Raises:
            InvalidInvite: the grant is another channel's, or its log does not make
                this group a member.
        """
        log = _log_of(channel_id, grant)
        if not log.is_member(self.identity.public_key):
            raise InvalidInvite("the inviter's log does not admit this group")
        channel = self._hold(grant, log)
        self.forget_token(channel.id)
        return channel

    def accept_offline(self, code: InviteCode) -> Channel:
        """Hold the channel an offline code carries. Its log must hold the code's
        invite, unrevoked, unused and unexpired, for this group if it names one. This
        group is no member until a member redeems the token (:meth:`pending_token`);
        until then the others hold its posts.

        Raises:
            InvalidInvite: the code's grant or invite does not hold up; InviteUsed,
                InviteRevoked, InviteExpired as the log says.
        """
        assert code.grant is not None
        log = _log_of(code.channel_id, code.grant)
        invite = log.state().invites.get(code.token)
        me = self.identity.public_key
        if invite is None:
            raise InvalidInvite("the code's log does not hold its invite")
        refused = _refused(invite, me, self._clock(), again=True)
        if refused is not None:
            raise refusal(refused)
        channel = self._hold(code.grant, log)
        if not log.is_member(me):
            self.store.set_meta(_token_name(channel.id), code.token_seed)
        return channel

    def pending_token(self, channel_id: bytes) -> bytes | None:
        """The seed of an offline code this group joined with and no member has
        redeemed yet (it is redeemed at the first member met)."""
        return self.store.get_meta(_token_name(channel_id))

    def forget_token(self, channel_id: bytes) -> None:
        """The offline code's token is redeemed (or refused): nothing is pending."""
        self.store.delete_meta(_token_name(channel_id))

    def _hold(self, grant: Grant, log: Log) -> Channel:
        channel = grant.channel
        held = self.store.channel(channel.id)
        if held is not None:
            for key in held.keys:
                channel = channel.with_key(key, current=False)
        self.store.save_channel(channel, now=self._clock(), root=log.root.id)
        self.store.save_ops(channel.id, [(o.id, o.raw) for o in log.ops()])
        self._logs[channel.id] = log
        return self.follow(channel)


def _refused(
    invite: InviteState, invitee: bytes, now: int, *, again: bool = False
) -> Verdict | None:
    """Why the log refuses ``invitee`` this invite, if it does (``again``: its own use
    of the invite is no refusal)."""
    if invite.revoked:
        return Verdict.REVOKED
    if invite.used_by is not None and not (again and invite.used_by == invitee):
        return Verdict.USED
    if now >= invite.expires_at:
        return Verdict.EXPIRED
    if invite.for_group not in (None, invitee):
        return Verdict.NOT_FOR_YOU
    return None


def refusal(verdict: Verdict) -> InvalidInvite:
    """The error an invitee raises for a refused redemption (one per verdict)."""
    match verdict:
        case Verdict.USED:
            return InviteUsed("this invite was used already: ask for a new code")
        case Verdict.EXPIRED:
            return InviteExpired("this invite has expired: ask for a new code")
        case Verdict.REVOKED:
            return InviteRevoked("this invite was revoked: ask for a new code")
        case Verdict.NOT_FOR_YOU:
            return InvalidInvite("this invite is for another group")
        case Verdict.UNAVAILABLE:
            return InvalidInvite("the inviting node cannot add a member now: try again later")
        case _:
            return InvalidInvite("the inviting node refused this code: ask for a new one")


def _token_name(channel_id: bytes) -> str:
    return f"offline-token/{channel_id.hex()}"


def _log_of(channel_id: bytes, grant: Grant) -> Log:
    """The log a grant carries, checked to be ``channel_id``'s."""
    if grant.channel.id != channel_id:
        raise InvalidInvite("the inviter answered for another channel")
    ops = {}
    for raw in grant.ops:
        try:
            op = decode_op(raw)
        except InvalidOperation:
            raise InvalidInvite("the inviter's answer holds a damaged operation") from None
        ops[op.id] = op
    root = ops.pop(grant.root, None)
    if root is None or root.type != OpType.CREATE or root.channel_id != channel_id:
        raise InvalidInvite("the inviter's answer holds no log of this channel")
    log = Log(root)
    for op in ops.values():
        _add_quietly(log, op)
    return log


def _add_quietly(log: Log, op: Op) -> list[Op]:
    try:
        return log.add(op)
    except InvalidOperation:
        return []
