"""The membership log: encoding, the rules of each operation, and the merge rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from meshnode.core import codec, crypto
from meshnode.core.identity import Identity
from meshnode.core.membership import Log, Post, checkpoint_of
from meshnode.core.operation import (
    HOUR,
    MAX_REKEYS_PER_HOUR,
    SIGN_LABEL,
    Frontier,
    Op,
    OpType,
    decode_op,
    epoch_id,
    sign_op,
)
from meshnode.errors import InvalidOperation

if TYPE_CHECKING:
    from collections.abc import Sequence

NOW = 1_760_000_000
CHANNEL = crypto.blake2b_256(b"channel")
EPOCH0 = epoch_id(bytes(32))


def group(name: str) -> Identity:
    return Identity.from_seed(crypto.blake2b_256(name.encode()), name)


A, B, C, D, E = (group(n) for n in ("Local 12", "Tenants", "Bakers", "Nurses", "Outsider"))


def op(
    log: Log,
    who: Identity,
    op_type: OpType,
    *,
    at: int | None = None,
    parents: Sequence[bytes] | None = None,
    seq: int | None = None,
    take: bool = True,
    **values: object,
) -> Op:
    """An operation by ``who`` on top of what ``log`` holds (or the given parents),
    dated a second after the newest one held unless ``at`` says."""
    made = sign_op(
        who,
        CHANNEL,
        op_type,
        seq=log.next_seq(who.public_key) if seq is None else seq,
        created_at=max(o.created_at for o in log.ops()) + 1 if at is None else at,
        parents=log.heads() if parents is None else parents,
        **values,
    )
    if take:
        log.add(made)
    return made


def new_log() -> Log:
    root = sign_op(A, CHANNEL, OpType.CREATE, seq=1, created_at=NOW, parents=(), name="strike",
                   epoch_id=EPOCH0)
    return Log(root)


def admit(log: Log, by: Identity, who: Identity) -> Op:
    """``by`` invites ``who`` and adds it on redemption."""
    token = crypto.blake2b_256(b"token" + who.public_key + by.public_key)
    op(log, by, OpType.INVITE, token=token, expires_at=NOW + 7 * 86400)
    return op(log, by, OpType.ADD, key=who.public_key, token=token)


def remove(log: Log, by: Identity, *who: Identity, **kw: object) -> Op:
    targets = tuple(Frontier(w.public_key, 0, None) for w in who)
    return op(log, by, OpType.REMOVE, targets=targets, **kw)


def members(log: Log) -> set[bytes]:
    return set(log.members())


def keys(*who: Identity) -> set[bytes]:
    return {w.public_key for w in who}


# -- encoding -------------------------------------------------------------------------


def test_every_operation_type_round_trips() -> None:
    log = new_log()
    admit(log, A, B)
    made = [
        log.root,
        op(log, A, OpType.EPOCH, parent_epochs=(EPOCH0,), epoch_id=epoch_id(b"\x01" * 32),
           checkpoint=checkpoint_of(log.state())),
        op(log, A, OpType.REVOKE, token=log.invites()[0].token),
        remove(log, A, B),
        op(log, A, OpType.LEAVE),
    ]
    for original in made:
        again = decode_op(original.raw)
        assert again == original
        assert again.raw == original.raw
        assert again.type == original.type


def test_decoder_refuses_tampering_and_non_canonical_forms() -> None:
    raw = new_log().root.raw
    with pytest.raises(InvalidOperation):
        decode_op(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(InvalidOperation):
        decode_op(raw[:10])
    with pytest.raises(InvalidOperation):
        decode_op("text")  # type: ignore[arg-type]
    body = raw[: -crypto.SIGNATURE_SIZE]
    doc = codec.unpack(body)
    assert isinstance(doc, list)
    doc[5] = [b"\x02" * 32, b"\x01" * 32]  # parents out of order
    bad = codec.pack(doc)
    with pytest.raises(InvalidOperation, match="malformed"):
        decode_op(bad + A.sign(SIGN_LABEL + bad))


def test_writer_refuses_what_the_reader_refuses() -> None:
    with pytest.raises(ValueError, match="malformed"):
        sign_op(A, CHANNEL, OpType.CREATE, seq=1, created_at=NOW, parents=(), name="",
                epoch_id=EPOCH0)
    with pytest.raises(ValueError, match="unknown"):
        sign_op(A, CHANNEL, OpType.LEAVE, seq=1, created_at=NOW, parents=(), colour="red")


# -- adding ---------------------------------------------------------------------------


def test_creator_invites_and_adds() -> None:
    log = new_log()
    admit(log, A, B)
    admit(log, B, C)
    assert members(log) == keys(A, B, C)
    assert log.members()[C.public_key].added_by == B.public_key
    assert log.members()[C.public_key].rank == (3, 2)
    invite = log.invites()[0]
    assert invite.used_by == B.public_key
    assert [o.type for o in log.ops()][:3] == [OpType.CREATE, OpType.INVITE, OpType.ADD]


def test_an_invite_is_used_once_and_only_as_issued() -> None:
    log = new_log()
    token = b"\x07" * 32
    op(log, A, OpType.INVITE, token=token, expires_at=NOW + 100, for_group=B.public_key)
    wrong = op(log, A, OpType.ADD, key=C.public_key, token=token)
    right = op(log, A, OpType.ADD, key=B.public_key, token=token)
    again = op(log, A, OpType.ADD, key=D.public_key, token=token)
    assert members(log) == keys(A, B)
    assert {wrong.id, again.id} <= log.state().void
    assert right.id not in log.state().void


def test_expired_and_revoked_invites_add_nobody() -> None:
    log = new_log()
    op(log, A, OpType.INVITE, token=b"\x01" * 32, expires_at=NOW + 100)
    op(log, A, OpType.INVITE, token=b"\x02" * 32, expires_at=NOW + 100)
    op(log, A, OpType.REVOKE, token=b"\x02" * 32)
    op(log, A, OpType.ADD, at=NOW + 100, key=B.public_key, token=b"\x01" * 32)
    op(log, A, OpType.ADD, at=NOW + 100, key=C.public_key, token=b"\x02" * 32)
    assert members(log) == keys(A)
    assert [i.revoked for i in log.invites()] == [False, True]


def test_non_members_write_nothing_that_counts() -> None:
    log = new_log()
    stranger = op(log, E, OpType.ADD, key=D.public_key, token=None)
    assert members(log) == keys(A)
    assert stranger.id in log.state().void


def test_a_second_root_is_refused() -> None:
    log = new_log()
    with pytest.raises(InvalidOperation, match="second create"):
        log.add(sign_op(E, CHANNEL, OpType.CREATE, seq=1, created_at=NOW, parents=(),
                        name="mine", epoch_id=EPOCH0))


def test_operations_wait_for_their_parents() -> None:
    log = new_log()
    source = new_log()
    first = admit(source, A, B)
    second = admit(source, B, C)
    invite_of_b = source.ops()[1]
    assert log.add(second) == []
    assert log.pending == 1
    assert log.add(first) == []
    assert [o.id for o in log.add(invite_of_b)] == [invite_of_b.id, first.id]
    # C's add waited for B's invite to C, which is not here yet
    assert members(log) == keys(A, B)
    log.add(source.ops()[3])
    assert members(log) == keys(A, B, C)


# -- removing -------------------------------------------------------------------------


def _three() -> Log:
    log = new_log()
    admit(log, A, B)
    admit(log, A, C)
    return log


def test_removed_group_operations_after_the_removal_are_void() -> None:
    log = _three()
    before = log.heads()
    remove(log, A, C)
    # C answers with operations citing the old parents, so they look concurrent
    fake_add = op(log, C, OpType.ADD, parents=before, key=E.public_key, token=None)
    fake_remove = remove(log, C, A, parents=before)
    assert members(log) == keys(A, B)
    assert {fake_add.id, fake_remove.id} <= log.state().void
    assert log.admit(C.public_key, 1) == Post.REFUSE
    assert log.admit(B.public_key, 7) == Post.ACCEPT
    assert log.admit(E.public_key, 1) == Post.HOLD


def test_removal_records_the_frontier() -> None:
    log = _three()
    op(log, A, OpType.REMOVE, targets=(Frontier(C.public_key, 5, b"\x05" * 32),))
    assert log.admit(C.public_key, 5) == Post.ACCEPT
    assert log.admit(C.public_key, 6) == Post.REFUSE
    gone = log.departure(C.public_key)
    assert gone is not None
    assert gone.by == A.public_key


def test_a_remove_names_only_members_of_its_past() -> None:
    log = _three()
    early = log.heads()
    admit(log, A, D)
    premature = remove(log, B, D, parents=early)
    assert premature.id in log.state().void
    assert members(log) == keys(A, B, C, D)


def test_in_a_mutual_removal_the_member_added_earlier_wins() -> None:
    for order in ((0, 1), (1, 0)):
        log = _three()
        heads = log.heads()
        source = [
            remove(log, B, C, parents=heads, take=False),
            remove(log, C, B, parents=heads, take=False),
        ]
        for i in order:
            log.add(source[i])
        assert members(log) == keys(A, B), order


def test_everything_built_on_a_void_operation_is_void() -> None:
    log = _three()
    heads = log.heads()
    remove(log, A, C)
    c_add = op(log, C, OpType.ADD, parents=heads, key=D.public_key, token=None)
    # B saw C's add (not the removal) and built on it
    b_invite = op(log, B, OpType.INVITE, parents=[c_add.id], token=b"\x09" * 32,
                  expires_at=NOW + 100)
    assert b_invite.id in log.state().void
    assert members(log) == keys(A, B)


def test_a_fork_voids_its_author_from_the_fork_on() -> None:
    log = _three()
    heads = log.heads()
    seq = log.next_seq(B.public_key)
    one = op(log, B, OpType.INVITE, parents=heads, seq=seq, token=b"\x01" * 32,
             expires_at=NOW + 9)
    two = op(log, B, OpType.INVITE, parents=heads, seq=seq, token=b"\x02" * 32,
             expires_at=NOW + 9)
    assert {one.id, two.id} <= log.state().void


def test_leaving_is_final() -> None:
    log = _three()
    leave = op(log, C, OpType.LEAVE)
    assert members(log) == keys(A, B)
    gone = log.departure(C.public_key)
    assert gone is not None
    assert gone.op == leave.id
    assert gone.frontier is None
    again = op(log, A, OpType.ADD, key=C.public_key, token=None)
    assert again.id in log.state().void


# -- epochs ---------------------------------------------------------------------------


def epoch(log: Log, who: Identity, follows: Sequence[bytes], name: bytes, **kw: object) -> Op:
    return op(log, who, OpType.EPOCH, parent_epochs=tuple(sorted(follows)),
              epoch_id=epoch_id(name * 32), checkpoint=checkpoint_of(log.state()), **kw)


def test_epoch_numbers_are_depths_and_siblings_merge() -> None:
    log = _three()
    heads = log.heads()
    one = epoch(log, B, [EPOCH0], b"\x01", parents=heads)
    two = epoch(log, C, [EPOCH0], b"\x02", parents=heads)
    assert {e.number for e in log.leaves()} == {1}
    assert log.needs_merge()
    assert log.merge_starter() == A.public_key
    merged = epoch(log, A, [one.epoch_id, two.epoch_id], b"\x03")
    assert not log.needs_merge()
    assert log.current_epoch().id == merged.epoch_id
    assert log.current_epoch().number == 2


def test_an_epoch_start_must_agree_with_its_past() -> None:
    log = _three()
    lying = op(log, B, OpType.EPOCH, parent_epochs=(EPOCH0,), epoch_id=epoch_id(b"\x01" * 32),
               checkpoint=checkpoint_of(_three().state())[:2])
    unknown = op(log, B, OpType.EPOCH, parent_epochs=(b"\x09" * 32,),
                 epoch_id=epoch_id(b"\x02" * 32), checkpoint=checkpoint_of(log.state()))
    assert {lying.id, unknown.id} <= log.state().void
    assert log.current_epoch().id == EPOCH0


def test_rekeys_are_rate_limited() -> None:
    log = _three()
    parent = EPOCH0
    for i in range(MAX_REKEYS_PER_HOUR + 1):
        started = epoch(log, B, [parent], bytes([i + 1]))
        if i < MAX_REKEYS_PER_HOUR:
            parent = started.epoch_id
    assert started.id in log.state().void
    assert log.current_epoch().number == MAX_REKEYS_PER_HOUR
    later = epoch(log, B, [parent], b"\xee", at=started.created_at + HOUR)
    assert later.id not in log.state().void


def test_a_key_update_is_checked_before_it_is_held() -> None:
    log = _three()
    fine = epoch(log, B, [EPOCH0], b"\x01", take=False)
    assert log.check_epoch_start(fine) is None
    remove(log, A, C)
    stale = sign_op(C, CHANNEL, OpType.EPOCH, seq=log.next_seq(C.public_key),
                    created_at=fine.created_at,
                    parents=fine.parents, parent_epochs=(EPOCH0,),
                    epoch_id=epoch_id(b"\x04" * 32), checkpoint=fine.checkpoint)
    assert log.check_epoch_start(stale) is None  # valid in its own past...
    log.add(stale)
    assert stale.id in log.state().void  # ...but void once the removal is held
    assert log.check_epoch_start(stale) == "it is void"
    outsider = sign_op(E, CHANNEL, OpType.EPOCH, seq=1, created_at=NOW + 99,
                       parents=log.heads(),
                       parent_epochs=(EPOCH0,), epoch_id=epoch_id(b"\x05" * 32),
                       checkpoint=checkpoint_of(log.state()))
    assert log.check_epoch_start(outsider) == "its author is not a member"
