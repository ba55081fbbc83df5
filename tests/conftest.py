"""Shared fixtures: cheap, deterministic identities, a channel, a seeded RNG and a
stopped clock for the public classes' conveniences.

Only generic fixtures belong here. Identities come from fixed seeds (no
Argon2, no os.urandom), so tests are reproducible and fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from meshnode.api import SystemProviders
from meshnode.core import codec
from meshnode.core.bulletin import SIGN_LABEL, Bulletin
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity

Rng = Callable[[int], bytes]


def seeded_rng(seed: bytes | str = b"meshnode-tests") -> Rng:
    """A deterministic stand-in for ``os.urandom``: BLAKE2b over a seed and a counter."""
    key = seed.encode() if isinstance(seed, str) else seed
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            counter += 1
            out += hashlib.blake2b(counter.to_bytes(8, "big"), key=key[:64]).digest()
        return out[:n]

    return rng


class StoppedClock(SystemProviders):
    """The system's providers with the clock stopped at ``at`` (set it to move time),
    and with ``rng``, when given, as the random source: for
    :func:`meshnode.core.providers.installed`."""

    def __init__(self, at: int, rng: Rng | None = None) -> None:
        self.at = at
        self.rng = rng

    def now(self) -> int:
        return self.at

    def random(self, size: int) -> bytes:
        return super().random(size) if self.rng is None else self.rng(size)


def make_identity(name: str) -> Identity:
    """An identity whose seed is derived from its name, the same in every run."""
    return Identity.from_seed(hashlib.blake2b(name.encode(), digest_size=32).digest(), name)


def corrupt_box(author: Identity, bulletin: Bulletin) -> Bulletin:
    """``bulletin`` (a channel or direct one by ``author``) with one bit of its
    ciphertext flipped, then signed again: valid as an envelope, so every carrier
    takes it, but its box no longer opens for anyone."""
    payload = bulletin.payload
    if isinstance(payload, bytes):
        payload = _flipped(payload)
    else:
        assert isinstance(payload, list)
        payload = [*payload[:2], _flipped(payload[2])]
    return resigned(author, bulletin, payload)


def resigned(author: Identity, bulletin: Bulletin, payload: object) -> Bulletin:
    """``bulletin`` (by ``author``) with another payload, signed again."""
    body = bulletin.raw[: bulletin.ad_size] + codec.pack(payload)
    return Bulletin.from_bytes(body + author.sign(SIGN_LABEL + body))


def _flipped(box: bytes) -> bytes:
    return box[:-1] + bytes([box[-1] ^ 1])


@pytest.fixture
def rng() -> Rng:
    """A fresh seeded RNG per test."""
    return seeded_rng()


@pytest.fixture(scope="session")
def make_rng() -> Callable[[bytes | str], Rng]:
    """:func:`seeded_rng` as a fixture, for tests that need several independent streams."""
    return seeded_rng


@pytest.fixture(scope="session")
def alice() -> Identity:
    return make_identity("Local 12")


@pytest.fixture(scope="session")
def bob() -> Identity:
    return make_identity("Tenants United")


@pytest.fixture(scope="session")
def carol() -> Identity:
    return make_identity("Food Bank")


@pytest.fixture(scope="session")
def channel() -> Channel:
    secret = hashlib.blake2b(b"strike-support", digest_size=32).digest()
    return Channel.from_secret("strike-support", secret)
