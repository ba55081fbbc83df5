"""A mutation fuzzer for the control request decoder (in the manner of h11's
``fuzz/afl-server.py``, without AFL): valid request frames are mutated by byte flips,
insertions, deletions, splices and deep nests, and each result must decode to a request
or raise :class:`~meshnode.control.ControlProtocolError`, nothing else.

Run longer than ``make test`` does::

    python tests/fuzz/control_decoder.py [ITERATIONS] [SEED]
"""

from __future__ import annotations

import random
import sys
from typing import TYPE_CHECKING

from meshnode import control
from meshnode.core.views import MemberInfo

if TYPE_CHECKING:
    from collections.abc import Callable

CORPUS: tuple[bytes, ...] = tuple(
    control.frame(control.request(op, **args))[4:]
    for op, args in (
        ("status", {}),
        ("status", {"follow": True}),
        ("send", {"recipients": ["alice", b"k" * 32], "text": "hello"}),
        ("post", {"channel": "general", "text": "hi", "reply_to": None, "expires": 3600}),
        ("read", {"channel": b"\x01" * 16, "since": 0, "limit": 20, "follow": False}),
        ("channel_remove", {"channel": "general", "groups": ["bob", "carol"]}),
        ("post", {"text": [MemberInfo(key=b"k" * 32, name="a", added_by=None, added_at=1)]}),
    )
)


def _flip(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]


def _insert(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.randbytes(rng.randint(1, 8)) + data[i:]


def _delete(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 8) :]


def _splice(rng: random.Random, data: bytes) -> bytes:
    other = rng.choice(CORPUS)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other)) :]


def _nest(rng: random.Random, data: bytes) -> bytes:
    """A deep run of one-element arrays or maps where a value starts."""
    i = rng.randrange(len(data))
    opener = rng.choice([b"\x91", b"\x81\xa5$type"])
    return data[:i] + opener * rng.choice([15, 16, 17, 900, 5000]) + data[i:]


MUTATIONS: tuple[Callable[[random.Random, bytes], bytes], ...] = (
    _flip,
    _insert,
    _delete,
    _splice,
    _nest,
)


def decode(body: bytes) -> None:
    """Decode one frame body as the daemon does; only ControlProtocolError may escape."""
    control.parse_request(control.parse_frame(body))


def run(iterations: int, seed: int) -> int:
    """Fuzz ``iterations`` mutants; how many decoded to a request (the rest were refused)."""
    rng = random.Random(seed)
    accepted = 0
    for _ in range(iterations):
        data = rng.choice(CORPUS)
        for _ in range(rng.randint(1, 4)):
            data = rng.choice(MUTATIONS)(rng, data) or b"\x80"
        try:
            decode(data)
        except control.ControlProtocolError:
            continue
        accepted += 1
    return accepted


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else random.randrange(2**32)
    print(f"seed {seed}: {run(count, seed)} of {count} mutants decoded")
