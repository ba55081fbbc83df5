"""The public overlay's upkeep (``plan_overlay``): what to keep, what to give up.

Sessions are listed by hand (examples) or drawn (properties); plans are compared
exactly. d_low is 4 and d_high 12, the defaults; the grace is 30 s.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.core.gossip import OverlayPlan, OverlaySession, plan_overlay
from meshnode.core.wire import PeerId

D_LOW, D_HIGH, GRACE, NOW = 4, 12, 30.0, 1000.0


def peer(n: int) -> PeerId:
    return PeerId(n.to_bytes(32, "big"))


def session(
    n: int, *, outbound: bool = True, age: float = 100.0, relayed: bool = False,
    member: bool = False,
) -> OverlaySession:
    return OverlaySession(
        peer=peer(n), outbound=outbound, opened=NOW - age, relayed=relayed, member=member
    )


def plan(sessions: list[OverlaySession]) -> OverlayPlan:
    return plan_overlay(sessions, d_low=D_LOW, d_high=D_HIGH, now=NOW, grace=GRACE)


def test_sessions_that_serve_are_enough_at_d_low() -> None:
    serving = [session(n, relayed=n % 2 == 0, member=n % 2 == 1) for n in range(D_LOW)]
    assert plan(serving) == OverlayPlan(keep=D_LOW, close=())
    assert plan(serving + [session(n) for n in range(10, 30)]) == OverlayPlan(keep=D_LOW, close=())


def test_sessions_that_never_relay_do_not_count() -> None:
    assert plan([session(n) for n in range(D_LOW)]) == OverlayPlan(keep=D_HIGH, close=())
    three = [session(n, relayed=True) for n in range(D_LOW - 1)]
    assert plan(three) == OverlayPlan(keep=D_HIGH, close=())


def test_cut_off_at_d_high_gives_up_every_idle_session_it_dialled() -> None:
    sessions = [session(n, age=100.0 - n) for n in range(8)]
    sessions += [session(8, age=GRACE - 1)]  # too young to judge
    sessions += [session(n, outbound=False) for n in range(9, 12)]  # dialled us: kept
    assert plan(sessions) == OverlayPlan(keep=D_HIGH, close=tuple(peer(n) for n in range(8)))


def test_served_by_some_the_oldest_idle_session_goes_alone() -> None:
    sessions = [session(0, relayed=True, age=500.0), session(1, member=True, age=400.0)]
    sessions += [session(n, age=100.0 + n) for n in range(2, 12)]
    assert plan(sessions) == OverlayPlan(keep=D_HIGH, close=(peer(11),))


def test_nothing_to_give_up() -> None:
    young = [session(n, age=1.0) for n in range(D_HIGH)]
    assert plan(young) == OverlayPlan(keep=D_HIGH, close=())
    inbound = [session(n, outbound=False) for n in range(300)]  # a crowd of Sybils
    assert plan(inbound) == OverlayPlan(keep=D_HIGH, close=())
    assert plan([]) == OverlayPlan(keep=D_HIGH, close=())


sessions_drawn = st.lists(
    st.builds(
        session,
        st.integers(0, 10_000),
        outbound=st.booleans(),
        age=st.floats(0.0, 200.0),
        relayed=st.booleans(),
        member=st.booleans(),
    ),
    max_size=40,
    unique_by=lambda s: s.peer,
)


@settings(max_examples=300, deadline=None)
@given(sessions_drawn)
def test_what_a_plan_may_give_up(sessions: list[OverlaySession]) -> None:
    result = plan(sessions)
    by_peer = {s.peer: s for s in sessions}
    serving = sum(1 for s in sessions if s.serving)
    assert result.keep == (D_LOW if serving >= D_LOW else D_HIGH)
    closed = [by_peer[p] for p in result.close]
    assert len(set(result.close)) == len(result.close)
    assert all(s.outbound and not s.serving and NOW - s.opened >= GRACE for s in closed)
    if serving >= D_LOW or len(sessions) < D_HIGH:
        assert not closed
    elif serving:
        assert len(closed) <= 1
        idle = [s for s in sessions if s.outbound and not s.serving and NOW - s.opened >= GRACE]
        assert len(closed) == min(1, len(idle))
    else:
        idle = {s.peer for s in sessions if s.outbound and NOW - s.opened >= GRACE}
        assert set(result.close) == idle
