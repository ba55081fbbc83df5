"""The membership log of a channel: signed, hash-linked operations and their merge.

Theory of operation (normative text: docs/spec/membership.md):

1. Membership is data. Every change to who is in a channel is an *operation*
   signed by the member who made it: create, epoch start, invite issued, invite
   revoked, add, remove, leave. An operation names the operations its author had
   seen last (its *parents*), so the log is a DAG whose root is the channel's
   create operation. Nothing else (rendezvous or contact records, posts) confers
   membership.
2. The state is a pure function of the *set* of operations held: two nodes
   holding the same operations derive the same members, epochs and invites,
   whatever order they arrived in. Operations whose parents are not all held yet
   wait (bounded) and count for nothing.
3. An operation is checked against the state of its own causal past (its
   ancestors): its author must be a member there, a remove may name only members
   there, an add must redeem an invite that is issued, unrevoked, unused and
   unexpired there, and so on. Each author numbers its operations upwards: one
   must be numbered above every operation of its author in its past, and two
   operations with the same number (a fork) void that author's operations from
   the fork on.
4. Removals are resolved against the whole log, because anyone can make an
   operation look concurrent by citing old parents. A removal voids every
   operation of the removed group that is not in the removal's causal past, and
   every operation that has a void one in its past. Removals are applied senior
   remover first, so in a mutual removal the member added earlier wins. Seniority
   is a group's *rank*: the creator's is ``()``; a group added by operation number
   ``n`` of member ``X`` has ``rank(X) + (n,)``, compared as tuples. No author can
   choose or grind it: it is fixed by who added the group and where in the adder's
   own numbered operations. Removal and leaving are final within a channel.
5. Epochs form a tree rooted at epoch 0 (named in the create operation). An epoch
   start names one or more parent epochs; its number is its depth, so concurrent
   siblings share a number and nothing anyone sends can use up the number space.
   It carries the member set with ranks as a checkpoint, which must equal the
   state of its causal past. Each member starts at most ``MAX_REKEYS_PER_HOUR``
   epochs in any hour of its operations' clock. The current epoch is the deepest
   leaf, the senior author's first; several leaves call for a merge epoch, which
   the most senior member starts first (:meth:`Log.merge_starter`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from meshnode.core import codec
from meshnode.errors import InvalidOperation

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


from meshnode.core.operation import (
    HOUR,
    MAX_MEMBERS,
    MAX_OP_SIZE,
    MAX_OPS,
    MAX_PARENTS,
    MAX_PENDING,
    MAX_RANK,
    MAX_REKEYS_PER_HOUR,
    MAX_UINT,
    VERSION,
    CheckpointEntry,
    Frontier,
    Op,
    OpType,
    Rank,
    is_key,
)

# -- the state of a set of operations ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A member as the log shows it."""

    key: bytes
    rank: Rank
    added_by: bytes | None
    """None for the creator."""
    added_at: int
    invite: bytes | None
    """The invite token the member redeemed, if any."""


@dataclass(frozen=True, slots=True)
class Epoch:
    """One node of the epoch tree."""

    id: bytes
    number: int
    parents: tuple[bytes, ...]
    op: bytes
    """The id of the operation that started it (the create operation for epoch 0)."""
    author: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class InviteState:
    """An invite as the log shows it."""

    token: bytes
    op: bytes
    issued_by: bytes
    created_at: int
    expires_at: int
    for_group: bytes | None
    with_history: bool
    used_by: bytes | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class Departure:
    """How a group stopped being a member: removed by another, or left."""

    key: bytes
    by: bytes
    op: bytes
    at: int
    frontier: Frontier | None
    """For a removal: the removed group's stream as the remover saw it."""


@dataclass(slots=True)
class State:
    """What a causally closed set of operations says."""

    members: dict[bytes, Member] = field(default_factory=dict)
    departed: dict[bytes, Departure] = field(default_factory=dict)
    epochs: dict[bytes, Epoch] = field(default_factory=dict)
    invites: dict[bytes, InviteState] = field(default_factory=dict)
    void: frozenset[bytes] = frozenset()


class Post(IntEnum):
    """What to do with a member's channel bulletin (:meth:`Log.admit`)."""

    ACCEPT = 0
    REFUSE = 1
    HOLD = 2
    """The author is not in the log held here yet: keep it (bounded) until the log
    syncs."""


class Log:
    """One channel's membership log, as one node holds it.

    Args:
        root: the channel's create operation (the one this node learned with the
            channel; any other create operation is refused).
    """

    def __init__(self, root: Op) -> None:
        if root.type != OpType.CREATE or root.parents or root.seq != 1:
            raise InvalidOperation("a log starts with a create operation")
        self.root = root
        self.channel_id = root.channel_id
        self._ops: dict[bytes, Op] = {root.id: root}
        self._order: list[bytes] = [root.id]
        """Every op, in an order where parents come first (arrival order)."""
        self._index: dict[bytes, int] = {root.id: 0}
        self._past: list[int] = [0]
        """Bit i of _past[j]: op _order[i] is an ancestor of op _order[j]."""
        self._pending: dict[bytes, Op] = {}
        self._memo: dict[int, State] = {}
        self._ok: dict[bytes, bool] = {}
        self._state: State | None = None

    # -- holding operations -----------------------------------------------------------

    def add(self, op: Op) -> list[Op]:
        """Take an operation; returns those it let into the log (itself, and any that
        waited for it). An operation whose parents are missing waits.

        Raises:
            InvalidOperation: another channel's, a second root, or too many held.
        """
        if op.channel_id != self.channel_id:
            raise InvalidOperation("an operation of another channel")
        if op.type == OpType.CREATE and op.id != self.root.id:
            raise InvalidOperation("a second create operation for this channel")
        if op.id in self._ops or op.id in self._pending:
            return []
        if len(self._ops) + len(self._pending) >= MAX_OPS:
            raise InvalidOperation(f"this channel's log holds {MAX_OPS} operations already")
        if not op.parents:
            raise InvalidOperation("only the create operation has no parents")
        self._pending[op.id] = op
        if len(self._pending) > MAX_PENDING:
            del self._pending[op.id]
            raise InvalidOperation("too many operations waiting for their parents")
        admitted: list[Op] = []
        progress = True
        while progress:
            progress = False
            for pending in list(self._pending.values()):
                if all(p in self._ops for p in pending.parents):
                    del self._pending[pending.id]
                    self._insert(pending)
                    admitted.append(pending)
                    progress = True
        if admitted:
            self._state = None
        return admitted

    def _insert(self, op: Op) -> None:
        i = len(self._order)
        past = 0
        for p in op.parents:
            j = self._index[p]
            past |= self._past[j] | (1 << j)
        self._ops[op.id] = op
        self._order.append(op.id)
        self._index[op.id] = i
        self._past.append(past)

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._ops

    def __len__(self) -> int:
        return len(self._ops)

    @property
    def pending(self) -> int:
        """Operations waiting for a parent."""
        return len(self._pending)

    def get(self, op_id: bytes) -> Op | None:
        return self._ops.get(op_id)

    def could_count(self, op: Op) -> bool:
        """Whether ``op`` could ever count, judged by its own past alone (so the answer
        does not depend on what else has arrived): an operation whose parents are all
        held but in whose past its author was never added is void for good."""
        if op.author == self.root.author or any(p not in self._ops for p in op.parents):
            return True
        past = 0
        for p in op.parents:
            j = self._index[p]
            past |= self._past[j] | (1 << j)
        return any(
            o.type == OpType.ADD and o.key == op.author
            for o in (self._ops[self._order[i]] for i in _bits(past))
        )

    def authored(self, author: bytes) -> int:
        """How many operations of ``author`` are held."""
        return sum(1 for o in self._ops.values() if o.author == author)

    def is_named(self, op_id: bytes) -> bool:
        """Whether an operation held or waiting names ``op_id`` as a parent: then it
        belongs in the log whoever wrote it (it may be in a removal's past)."""
        return any(op_id in o.parents for o in (*self._ops.values(), *self._pending.values()))

    def ops(self) -> list[Op]:
        """Every operation held (waiting ones aside), parents before children, by
        time where the order is free: the audit trail."""
        return [self._ops[i] for i in self._topological()]

    def heads(self) -> list[bytes]:
        """The operations no other held operation names: the parents of our next one.
        Void operations are left out, so nothing we write depends on them."""
        state = self.state()
        named: set[bytes] = set()
        for op in self._ops.values():
            if op.id not in state.void:
                named.update(op.parents)
        heads = [i for i in self._order if i not in named and i not in state.void]
        heads.sort(key=lambda i: (self._ops[i].created_at, i), reverse=True)
        return sorted(heads[:MAX_PARENTS])

    def next_seq(self, author: bytes) -> int:
        """The number of ``author``'s next operation."""
        return 1 + max((o.seq for o in self._ops.values() if o.author == author), default=0)

    # -- the state ----------------------------------------------------------------------

    def state(self) -> State:
        """The state of every operation held (cached until the next one arrives)."""
        if self._state is None:
            self._state = self._evaluate((1 << len(self._order)) - 1)
        return self._state

    def members(self) -> dict[bytes, Member]:
        return dict(self.state().members)

    def is_member(self, key: bytes) -> bool:
        return key in self.state().members

    def departure(self, key: bytes) -> Departure | None:
        """How ``key`` stopped being a member, if it did."""
        return self.state().departed.get(key)

    def invites(self) -> list[InviteState]:
        return sorted(self.state().invites.values(), key=lambda i: (i.created_at, i.token))

    def epochs(self) -> dict[bytes, Epoch]:
        return dict(self.state().epochs)

    def leaves(self) -> list[Epoch]:
        """The epochs no epoch follows, current first."""
        state = self.state()
        followed = {p for e in state.epochs.values() for p in e.parents}
        leaves = [e for e in state.epochs.values() if e.id not in followed]
        leaves.sort(key=lambda e: (-e.number, self._rank_of(state, e.author), e.op))
        return leaves

    def current_epoch(self) -> Epoch:
        """The epoch new bulletins use: the deepest leaf, the senior author's first."""
        return self.leaves()[0]

    def needs_merge(self) -> bool:
        """Several leaves: some member should start an epoch following all of them."""
        return len(self.leaves()) > 1

    def merge_starter(self) -> bytes:
        """The member expected to start the merge epoch first (the most senior); any
        member may after a timeout."""
        members = self.state().members.values()
        return min(members, key=lambda m: (m.rank, m.key)).key

    def admit(self, author: bytes, seq: int) -> Post:
        """Whether a channel bulletin by ``author`` with stream ``seq`` is heard: a
        member's is; a departed group's only up to its frontier (or its leave); an
        author the log does not know yet waits."""
        state = self.state()
        if author in state.members:
            return Post.ACCEPT
        gone = state.departed.get(author)
        if gone is None:
            return Post.HOLD
        if gone.frontier is not None and seq <= gone.frontier.seq:
            return Post.ACCEPT
        return Post.REFUSE

    def check(self, op: Op) -> str | None:
        """Why ``op`` would not count if it were held now, or None: checked against
        its own causal past, which must be held."""
        if op.channel_id != self.channel_id:
            return "an operation of another channel"
        if op.id in self._ops:
            return None if op.id not in self.state().void else "it is void"
        if any(p not in self._ops for p in op.parents):
            return "its parents are not in this node's log yet"
        past = 0
        for p in op.parents:
            j = self._index[p]
            past |= self._past[j] | (1 << j)
        return self._problem(op, self._evaluate(past), past)

    def check_epoch_start(self, op: Op) -> str | None:
        """Why an epoch start (as a key update carries it) may not be taken, or None.

        It must come from a member of its parent epochs, follow only epochs this
        log knows, and agree with the log: evaluated as if it were held.
        """
        if op.type != OpType.EPOCH:
            return "not an epoch start"
        if op.id not in self._ops and not any(p in self.state().epochs for p in op.parent_epochs):
            return "it follows no epoch this node knows"
        return self.check(op)

    # -- evaluation ---------------------------------------------------------------------

    def _topological(self, mask: int | None = None) -> list[bytes]:
        """Parents first; among ready ops, oldest (created_at, id) first. The order
        decides nothing in the state: it only makes lists stable."""
        ids = [
            self._order[i]
            for i in range(len(self._order))
            if mask is None or mask >> i & 1
        ]
        inside = set(ids)
        waiting = {i: sum(1 for p in self._ops[i].parents if p in inside) for i in ids}
        children: dict[bytes, list[bytes]] = {}
        for i in ids:
            for p in self._ops[i].parents:
                if p in inside:
                    children.setdefault(p, []).append(i)
        ready = [(self._ops[i].created_at, i) for i in ids if waiting[i] == 0]
        heapq.heapify(ready)
        out: list[bytes] = []
        while ready:
            _, i = heapq.heappop(ready)
            out.append(i)
            for c in children.get(i, ()):
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, (self._ops[c].created_at, c))
        return out

    def _past_of(self, op: Op) -> int:
        return self._past[self._index[op.id]]

    def _ok_alone(self, op: Op) -> bool:
        """Whether ``op`` is valid against the state of its own causal past (memoised:
        that past never changes)."""
        ok = self._ok.get(op.id)
        if ok is None:
            if op.id == self.root.id:
                ok = True
            else:
                past = self._past_of(op)
                ok = self._problem(op, self._evaluate(past), past) is None
            self._ok[op.id] = ok
        return ok

    def _problem(self, op: Op, before: State, past: int) -> str | None:
        """What is wrong with ``op`` given the state ``before`` of its causal past."""
        if any(p in before.void for p in op.parents):
            return "it builds on a void operation"
        if op.author not in before.members:
            return "its author is not a member"
        mine = [self._ops[self._order[i]] for i in _bits(past)]
        mine = [o for o in mine if o.author == op.author]
        if any(o.seq >= op.seq for o in mine):
            return "its number is not above its author's earlier ones"
        if any(op.created_at < self._ops[p].created_at for p in op.parents):
            return "it is dated before its parents"
        match op.type:
            case OpType.CREATE:
                return "a second create operation"
            case OpType.EPOCH:
                if not all(p in before.epochs for p in op.parent_epochs):
                    return "it follows an epoch not in its past"
                if op.epoch_id in before.epochs:
                    return "that epoch exists already"
                recent = [
                    o
                    for o in mine
                    if o.type == OpType.EPOCH and o.created_at > op.created_at - HOUR
                ]
                if len(recent) >= MAX_REKEYS_PER_HOUR:
                    return f"more than {MAX_REKEYS_PER_HOUR} new epochs in an hour"
                if op.checkpoint != checkpoint_of(before):
                    return "its checkpoint is not the member set of its past"
            case OpType.INVITE:
                if op.token is None or op.token in before.invites:
                    return "that invite exists already"
                if op.expires_at <= op.created_at:
                    return "it expires before it is issued"
            case OpType.REVOKE:
                if op.token not in before.invites:
                    return "no such invite"
            case OpType.ADD:
                if op.key in before.members or op.key in before.departed:
                    return "that group is or was a member"
                if len(before.members) >= MAX_MEMBERS:
                    return f"a channel has at most {MAX_MEMBERS} members"
                if len(before.members[op.author].rank) >= MAX_RANK:
                    return "the adder is too deep in the chain of adders"
                if op.token is not None:
                    invite = before.invites.get(op.token)
                    if invite is None:
                        return "no such invite"
                    if invite.revoked:
                        return "the invite was revoked"
                    if invite.used_by is not None:
                        return "the invite was used"
                    if op.created_at >= invite.expires_at:
                        return "the invite had expired"
                    if invite.for_group is not None and invite.for_group != op.key:
                        return "the invite is for another group"
            case OpType.REMOVE:
                for t in op.targets:
                    if t.key == op.author or t.key not in before.members:
                        return "it removes a group that is not another member"
            case OpType.LEAVE:
                pass
        return None

    def _evaluate(self, mask: int) -> State:
        """The state of the causally closed set ``mask`` (bit i: ``_order[i]``)."""
        cached = self._memo.get(mask)
        if cached is not None:
            return cached
        order = [self._ops[i] for i in self._topological(mask)]
        ok = {op.id: self._ok_alone(op) for op in order}
        # Ranks come from every add that is valid in its own past: they never depend
        # on removals, so removals can be ordered by them.
        ranks = _ranks(self.root, [o for o in order if o.type == OpType.ADD and ok[o.id]])
        removals = sorted(
            (o for o in order if o.type in (OpType.REMOVE, OpType.LEAVE) and ok[o.id]),
            key=lambda o: (
                o.type == OpType.LEAVE, ranks.get(o.author, (MAX_UINT,)), o.author, o.seq
            ),
        )
        void: set[bytes] = {o.id for o in order if not ok[o.id]} | _forked(order)
        departed: dict[bytes, Departure] = {}
        for _round in range(len(removals) + 1):
            departed = {}
            for r in removals:
                if r.id in void:
                    continue
                gone = departed.get(r.author)
                if gone is not None and not self._in_past(r.id, gone.op):
                    continue
                if r.type == OpType.LEAVE:
                    left = Departure(r.author, r.author, r.id, r.created_at, None)
                    departed.setdefault(r.author, left)
                for t in r.targets:
                    departed.setdefault(t.key, Departure(t.key, r.author, r.id, r.created_at, t))
            grown = set(void)
            for op in order:
                if op.id in grown:
                    continue
                gone = departed.get(op.author)
                if (
                    gone is not None
                    and op.id != gone.op
                    and not self._in_past(op.id, gone.op)
                ) or any(p in grown for p in op.parents):
                    grown.add(op.id)
            if grown == void:
                break
            void = grown
        state = _replay(self.root, order, frozenset(void), departed, ranks)
        self._memo[mask] = state
        return state

    def _in_past(self, op_id: bytes, of: bytes) -> bool:
        """Whether ``op_id`` is an ancestor of ``of``."""
        return bool(self._past[self._index[of]] >> self._index[op_id] & 1)

    def _rank_of(self, state: State, key: bytes) -> Rank:
        member = state.members.get(key)
        if member is not None:
            return member.rank
        return (MAX_UINT,)


def _bits(mask: int) -> Iterable[int]:
    i = 0
    while mask:
        if mask & 1:
            yield i
        mask >>= 1
        i += 1


def _forked(order: Sequence[Op]) -> set[bytes]:
    """The operations of each author from its first fork on (two operations with
    one number)."""
    seen: dict[tuple[bytes, int], bytes] = {}
    fork_at: dict[bytes, int] = {}
    for op in order:
        other = seen.setdefault((op.author, op.seq), op.id)
        if other != op.id:
            fork_at[op.author] = min(op.seq, fork_at.get(op.author, op.seq))
    return {o.id for o in order if o.author in fork_at and o.seq >= fork_at[o.author]}


def _ranks(root: Op, adds: Sequence[Op]) -> dict[bytes, Rank]:
    """Each group's rank: the least over the adds of it by a ranked adder."""
    ranks: dict[bytes, Rank] = {root.author: ()}
    by_adder: dict[bytes, list[Op]] = {}
    for a in adds:
        by_adder.setdefault(a.author, []).append(a)
    heap: list[tuple[Rank, bytes]] = [((), root.author)]
    done: set[bytes] = set()
    while heap:
        rank, key = heapq.heappop(heap)
        if key in done:
            continue
        done.add(key)
        for a in by_adder.get(key, ()):
            candidate = (*rank, a.seq)
            if a.key not in ranks or candidate < ranks[a.key]:
                ranks[a.key] = candidate
                heapq.heappush(heap, (candidate, a.key))
    return ranks


def _replay(
    root: Op,
    order: Sequence[Op],
    void: frozenset[bytes],
    departed: dict[bytes, Departure],
    ranks: dict[bytes, Rank],
) -> State:
    """The state once void operations are set aside: every rule left commutes."""
    state = State(void=void, departed=departed)
    state.members[root.author] = Member(root.author, (), None, root.created_at, None)
    state.epochs[root.epoch_id] = Epoch(root.epoch_id, 0, (), root.id, root.author, root.created_at)
    used: dict[bytes, bytes] = {}
    revoked: set[bytes] = set()
    for op in order:
        if op.id in void:
            continue
        match op.type:
            case OpType.EPOCH:
                number = 1 + max(
                    (state.epochs[p].number for p in op.parent_epochs if p in state.epochs),
                    default=0,
                )
                state.epochs[op.epoch_id] = Epoch(
                    op.epoch_id, number, op.parent_epochs, op.id, op.author, op.created_at
                )
            case OpType.INVITE:
                assert op.token is not None
                state.invites[op.token] = InviteState(
                    op.token, op.id, op.author, op.created_at, op.expires_at,
                    op.for_group, op.with_history, None, False,
                )
            case OpType.REVOKE:
                assert op.token is not None
                revoked.add(op.token)
            case OpType.ADD:
                if op.key not in departed:
                    rank = ranks.get(op.key, (MAX_UINT,))
                    held = state.members.get(op.key)
                    if held is None or (rank, op.created_at) < (held.rank, held.added_at):
                        state.members[op.key] = Member(
                            op.key, rank, op.author, op.created_at, op.token
                        )
                if op.token is not None:
                    used.setdefault(op.token, op.key)
            case _:
                pass
    for token, invite in list(state.invites.items()):
        state.invites[token] = InviteState(
            invite.token, invite.op, invite.issued_by, invite.created_at, invite.expires_at,
            invite.for_group, invite.with_history, used.get(token), token in revoked,
        )
    for key in departed:
        state.members.pop(key, None)
    return state


def checkpoint_of(state: State) -> tuple[CheckpointEntry, ...]:
    """The member set of ``state`` as an epoch start writes it: by rank, then key."""
    members = sorted(state.members.values(), key=lambda m: (m.rank, m.key))
    return tuple(CheckpointEntry(m.key, m.rank) for m in members)


OP_CONTENT_TYPE: Final = "application/vnd.meshnode.membership-op"
MAX_KEY_UPDATE_OPS: Final = MAX_PARENTS + 1


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """What a key-update bulletin hands a member: an epoch start with the operations
    it follows (so a member whose log lags can check it at once) and the new epoch's
    secret; or, without a secret, operations alone (a removed group gets its removal
    this way, since it shares no epoch with the others any more)."""

    channel_id: bytes
    ops: tuple[bytes, ...]
    """Signed operations, the epoch start last."""
    secret: bytes | None

    def encode(self) -> bytes:
        return codec.pack([VERSION, self.channel_id, list(self.ops), self.secret])

    @classmethod
    def decode(cls, data: bytes) -> KeyUpdate:
        """Read a key update's content; anything wrong raises InvalidOperation."""
        try:
            doc = codec.unpack_canonical(
                data, max_size=64 * 1024, max_str=0, max_bin=MAX_OP_SIZE,
                max_array=MAX_KEY_UPDATE_OPS,
            )
        except codec.DecodeError:
            raise InvalidOperation("a key update with damaged contents") from None
        if not (
            isinstance(doc, list)
            and len(doc) == 4
            and doc[0] == VERSION
            and type(doc[0]) is int
            and is_key(doc[1])
            and isinstance(doc[2], list)
            and 1 <= len(doc[2]) <= MAX_KEY_UPDATE_OPS
            and all(isinstance(o, bytes) for o in doc[2])
            and (doc[3] is None or is_key(doc[3]))
        ):
            raise InvalidOperation("a key update with damaged contents")
        return cls(channel_id=doc[1], ops=tuple(doc[2]), secret=doc[3])
