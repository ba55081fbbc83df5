"""A bounded, seeded slice of the control decoder fuzzer (control_decoder.py) for
``make test``; run the module itself for longer."""

from __future__ import annotations

import pytest

from tests.fuzz.control_decoder import CORPUS, decode, run


def test_the_corpus_decodes() -> None:
    for body in CORPUS:
        decode(body)


@pytest.mark.parametrize("seed", range(4))
def test_mutants_decode_or_raise_only_control_protocol_errors(seed: int) -> None:
    accepted = run(2_000, seed)
    assert 0 < accepted < 2_000
