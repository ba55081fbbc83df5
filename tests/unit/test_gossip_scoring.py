"""Scores on their own: penalties, the drop threshold, decay and broken promises."""

from __future__ import annotations

import pytest

from meshnode.core.gossip import DEFAULT_PENALTIES, GossipConfig, Offence
from meshnode.core.gossip._scoring import Scores
from meshnode.core.wire import PeerId

A, B = PeerId(b"\x01" * 32), PeerId(b"\x02" * 32)


def scores(config: GossipConfig | None = None) -> Scores:
    board = Scores(config or GossipConfig())
    board.add(A)
    board.add(B)
    return board


def test_every_offence_has_a_penalty_and_charges_it() -> None:
    assert set(DEFAULT_PENALTIES) == set(Offence)
    board = scores()
    for offence in (Offence.FLOOD, Offence.REPLAY, Offence.UNANSWERED):
        board.charge(A, offence)
    assert board.score(A) == -(5.0 + 10.0 + 2.0)
    assert board.score(B) == 0.0
    assert not board.in_good_standing(A)
    assert board.in_good_standing(B)


def test_the_charge_that_reaches_drop_score_is_reported() -> None:
    board = scores(GossipConfig(drop_score=-30.0))
    assert [board.charge(A, Offence.REPLAY) for _ in range(3)] == [False, False, True]
    board.charge(B, Offence.MALFORMED)  # one malformed message is enough at any threshold
    assert board.score(B) == -100.0


def test_scores_decay_toward_zero_at_each_heartbeat() -> None:
    board = scores(GossipConfig(score_decay=0.5))
    board.charge(A, Offence.WRONG_TOPIC)
    board.decay()
    assert board.score(A) == -5.0
    board.decay()
    assert board.score(A) == -2.5
    # spread out, offences never add up to a drop: ten replays a heartbeat apart
    for _ in range(10):
        assert not board.charge(B, Offence.REPLAY)
        board.decay()
    assert -20.0 < board.score(B) < 0


def test_broken_promises_are_free_up_to_the_allowance_and_decay() -> None:
    board = scores(GossipConfig(broken_promises=2.0, score_decay=0.5))
    assert [board.broke_promise(A) for _ in range(3)] == [False, False, True]
    assert board.score(A) == 0.0  # the caller charges Offence.UNANSWERED, not the count
    board.decay()
    board.decay()  # 3 -> 0.75: one more is free again
    assert [board.broke_promise(A) for _ in range(2)] == [False, True]


def test_peers_come_and_go() -> None:
    board = scores()
    board.charge(A, Offence.FLOOD)
    board.remove(A)
    assert board.score(A) == 0.0  # forgotten: unknown peers are clean
    board.remove(A)  # twice is harmless
    board.add(A)
    assert board.in_good_standing(A)
    with pytest.raises(KeyError):
        board.charge(PeerId(b"\x09" * 32), Offence.FLOOD)


def test_a_charged_peer_is_back_in_good_standing_once_its_penalty_fades() -> None:
    """Decay alone only approaches 0: a score that close is 0 (``DECAY_TO_ZERO``), so a
    peer charged once is grafted and announced to again."""
    board = scores()
    board.charge(A, Offence.FLOOD)
    assert not board.in_good_standing(A)
    for _ in range(60):  # a minute of heartbeats at the default decay
        board.decay()
    assert board.score(A) == 0.0
    assert board.in_good_standing(A)
