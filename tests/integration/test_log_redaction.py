"""The one rule for peers in logs (meshnode/redact.py): wrapped arguments are hidden
at INFO and above unless peers are shown; DEBUG keeps them; the DHT library's arguments
are all hidden. No network."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import pytest

from meshnode.redact import HIDDEN, PeerFilter, peer

if TYPE_CHECKING:
    from collections.abc import Iterator

FINGERPRINT = "em76-419x-argj-6777"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, PeerFilter]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    rule = PeerFilter(peers=False, foreign=("kademlia",))
    handler.addFilter(rule)
    loggers = [logging.getLogger(n) for n in ("meshnode.test", "kademlia.protocol")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield out, rule
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)


def test_peers_are_hidden_at_info_and_above_only(
    captured: tuple[io.StringIO, PeerFilter],
) -> None:
    out, _ = captured
    log = logging.getLogger("meshnode.test")
    log.debug("session with %s", peer(FINGERPRINT))
    log.info("session with %s at %s after %d s", peer(FINGERPRINT), peer("10.0.0.1:7447"), 3)
    log.warning("fork: %s signed two bulletins with seq %d", peer(FINGERPRINT), 4)
    logging.getLogger("kademlia.protocol").warning("no response from %s", "10.0.0.1:7447")
    assert out.getvalue().splitlines() == [
        f"meshnode.test DEBUG session with {FINGERPRINT}",
        f"meshnode.test INFO session with {HIDDEN} at {HIDDEN} after 3 s",
        f"meshnode.test WARNING fork: {HIDDEN} signed two bulletins with seq 4",
        f"kademlia.protocol WARNING no response from {HIDDEN}",
    ]


def test_peers_true_shows_them(captured: tuple[io.StringIO, PeerFilter]) -> None:
    out, rule = captured
    rule.peers = True
    logging.getLogger("meshnode.test").info("session with %s", peer(FINGERPRINT))
    logging.getLogger("kademlia.protocol").warning("no response from %s", "10.0.0.1:7447")
    assert out.getvalue().splitlines() == [
        f"meshnode.test INFO session with {FINGERPRINT}",
        "kademlia.protocol WARNING no response from 10.0.0.1:7447",
    ]
