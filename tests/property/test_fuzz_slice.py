"""A bounded slice of ``make fuzz``: every decoder target, a few hundred inputs each.

The full run (``make fuzz``, ``python -m tests.fuzz``) feeds 100,000 inputs per
target; this slice keeps every target and the harness itself exercised by
``make test`` in seconds. Same harness, same checks: only the target's typed
error may come out, and tracemalloc's peak per input stays under 16 MiB.
"""

from __future__ import annotations

import tracemalloc
from typing import TYPE_CHECKING

import pytest

from tests.fuzz.run import MAX_MEMORY, fuzz
from tests.fuzz.targets import TARGETS, Target

if TYPE_CHECKING:
    from collections.abc import Iterator

SLICE = 500


@pytest.fixture
def traced() -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.usefixtures("traced")
def test_decoder_raises_only_its_typed_error(name: str) -> None:
    report = fuzz(TARGETS[name], count=SLICE, seed="make-test")
    assert report.failures == []
    assert report.inputs >= SLICE
    assert report.accepted >= 1  # the valid seeds decode: the target really reaches the decoder
    assert report.peak < MAX_MEMORY


def _target(check: object) -> Target:
    return Target("selftest", lambda: [b"\x93\x01\x02\x03"], check, (ValueError,))  # type: ignore[arg-type]


def _crash(data: bytes) -> None:
    if len(data) != 4:
        raise KeyError("not the documented error")


def _hog(data: bytes) -> None:
    if len(data) != 4:
        bytearray(32 << 20)


@pytest.mark.usefixtures("traced")
def test_an_undocumented_exception_is_reported_with_the_input_in_hex() -> None:
    report = fuzz(_target(_crash), count=50, seed="s")
    assert report.failures
    assert "KeyError" in report.failures[0]
    assert "--replay " in report.failures[0]


@pytest.mark.usefixtures("traced")
def test_an_input_that_allocates_too_much_is_reported() -> None:
    report = fuzz(_target(_hog), count=20, seed="s")
    assert report.failures
    assert "bytes allocated for one input" in report.failures[0]


def test_runs_are_deterministic_for_a_seed() -> None:
    one = fuzz(TARGETS["wire"], count=200, seed="same")
    two = fuzz(TARGETS["wire"], count=200, seed="same")
    assert (one.accepted, one.rejected) == (two.accepted, two.rejected)
