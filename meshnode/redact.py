"""Peers in the daemon's log: named at INFO and above only when the operator asks.

A seized log must not be a map of which groups met. So:
1. Every log call at INFO or above whose arguments name a peer (a fingerprint, key
   text or address) or may (an error raised by or about a peer) wraps each such
   argument in :func:`peer`. Nothing else decides.
2. The daemon's log handler carries :class:`PeerFilter`: unless ``[log] peers =
   true``, it replaces every wrapped argument of a record at INFO or above with
   :data:`HIDDEN`. DEBUG records keep them: debug logs are for debugging.
3. Third-party loggers (the DHT library's ``kademlia`` and ``rpcudp``) cannot wrap
   their arguments, and they put addresses in them; under the filter every
   argument of theirs at INFO or above is hidden.
A program that embeds a node and sets up its own logging sees the peers as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection

HIDDEN: Final = "[peer hidden]"


@dataclass(frozen=True, slots=True)
class PeerText:
    """A log argument that names a peer (see the module's rule 1)."""

    text: str

    def __str__(self) -> str:
        return self.text


def peer(value: object) -> PeerText:
    """``value`` (a fingerprint, key text, address or error) marked as naming a peer."""
    return PeerText(str(value))


class PeerFilter(logging.Filter):
    """Hide peers from a handler's records at INFO and above, unless ``peers`` is on."""

    def __init__(self, *, peers: bool, foreign: Collection[str]) -> None:
        super().__init__()
        self.peers = peers
        self.foreign = frozenset(foreign)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.peers or record.levelno < logging.INFO or not isinstance(record.args, tuple):
            return True
        if record.name.partition(".")[0] in self.foreign:
            record.args = tuple(HIDDEN for _ in record.args)
        else:
            record.args = tuple(HIDDEN if isinstance(a, PeerText) else a for a in record.args)
        return True
