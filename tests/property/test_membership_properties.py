"""Membership log properties: any delivery order of the same operations gives every node
the same member set and the same current epoch; the decoder raises only its own error."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.membership import Log, checkpoint_of
from meshnode.core.operation import Op, OpType, decode_op, epoch_id
from meshnode.errors import InvalidOperation
from tests.unit.test_membership import A, B, C, D, E, admit, new_log, op, remove

GROUPS = (A, B, C, D, E)

# One step of a history: (action, actor index, target index, how far back its parents go)
steps = st.lists(
    st.tuples(
        st.sampled_from(["admit", "remove", "epoch", "leave", "invite"]),
        st.integers(0, 4),
        st.integers(0, 4),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=14,
)


def _history(plan: list[tuple[str, int, int, int]]) -> list[Op]:
    """Operations made by members acting on stale views of the log (old heads), as
    concurrent or hostile members would."""
    log = new_log()
    snapshots = [log.heads()]
    for n, (action, actor, target, back) in enumerate(plan):
        who, whom = GROUPS[actor], GROUPS[target]
        parents = snapshots[max(0, len(snapshots) - 1 - back)]
        if action == "admit":
            if log.is_member(who.public_key) and not log.is_member(whom.public_key):
                admit(log, who, whom)
        elif action == "remove" and who != whom:
            remove(log, who, whom, parents=parents)
        elif action == "epoch" and log.members():
            follows = tuple(sorted(e.id for e in log.leaves()))
            op(log, who, OpType.EPOCH, parents=parents, parent_epochs=follows,
                           epoch_id=epoch_id(bytes([n + 1]) * 32),
               checkpoint=checkpoint_of(log.state()))
        elif action == "leave":
            op(log, who, OpType.LEAVE, parents=parents)
        else:
            op(log, who, OpType.INVITE, parents=parents, token=bytes([n + 1]) * 32,
               expires_at=2_000_000_000)
        snapshots.append(log.heads())
    return log.ops()[1:]


def _summary(log: Log) -> tuple[object, ...]:
    state = log.state()
    return (
        sorted(state.members.items()),
        sorted(state.departed),
        log.current_epoch().id,
        sorted(state.void),
        [(i.token, i.used_by, i.revoked) for i in log.invites()],
    )


@settings(max_examples=200, deadline=None)
@given(plan=steps, data=st.data())
def test_any_delivery_order_gives_the_same_state(
    plan: list[tuple[str, int, int, int]], data: st.DataObject
) -> None:
    made = _history(plan)
    reference = new_log()
    for o in made:
        reference.add(o)
    shuffled = data.draw(st.permutations(made))
    other = new_log()
    for o in shuffled:
        other.add(o)
    assert other.pending == 0
    assert _summary(other) == _summary(reference)


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, 2000),
    value=st.integers(0, 255),
    cut=st.integers(0, 2000),
)
def test_decoder_raises_only_invalid_operation(position: int, value: int, cut: int) -> None:
    log = new_log()
    raw = admit(log, A, B).raw
    mutated = bytearray(raw[: max(1, len(raw) - cut % 8)])
    mutated[position % len(mutated)] = value
    with contextlib.suppress(InvalidOperation):
        decode_op(bytes(mutated))
