"""Benchmark of the sans-I/O core and the store: bulletins per second on one core.

Every figure is for bulletins carrying 1 KiB of text and is set against the bare
libsodium Ed25519 rate for 1 KiB messages measured in the same run: creating is
compared with ``crypto_sign``, ingesting with ``crypto_sign_open``, since a
signature is the one cost no implementation can avoid. See bench/README.md.

Run with ``make bench`` or ``.venv/bin/python bench/core.py [--duration S] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium

from meshnode.core.bulletin import Bulletin
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity
from meshnode.store import Store

TEXT_SIZE = 1024
BATCH = 256
"""Bulletins per store transaction (one commit, one fsync) when ingesting into the store."""
NOW = 1_700_000_000
MAX_OPS = 200_000
"""Upper bound on operations in one timed measurement, whatever the duration."""

Step = Callable[[int], int]
"""Performs up to ``n`` operations and returns how many it did (0: nothing left)."""


@dataclass(frozen=True)
class Line:
    """One row of the table: a pipeline, the bare rate it is set against and its target."""

    key: str
    label: str
    base: str  # "sign" or "verify"; a bare line is its own base
    target: float | None  # the least acceptable ratio, or None for an informative line


LINES = (
    Line("sign", "libsodium Ed25519 sign, 1 KiB (bare)", "sign", None),
    Line("verify", "libsodium Ed25519 verify, 1 KiB (bare)", "verify", None),
    Line("x25519", "libsodium X25519 key exchange (bare)", "x25519", None),
    Line("xchacha", "libsodium XChaCha20-Poly1305, 1 KiB (bare)", "xchacha", None),
    Line("create", "create: seal + sign, channel", "sign", 0.50),
    Line("create_direct", "create: seal + sign, direct to 1 recipient", "sign", None),
    Line("ingest", "ingest: decode + verify + open", "verify", 0.60),
    Line("ingest_store", f"ingest + store (batches of {BATCH})", "verify", 0.40),
)


def identity(name: str) -> Identity:
    """A deterministic identity, as the tests make them."""
    return Identity.from_seed(hashlib.blake2b(name.encode(), digest_size=32).digest(), name)


def timed(
    step: Step, duration: float, chunk: int = 64, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Operations per second of ``step``, run for about ``duration`` seconds of ``clock``
    (``time.process_time`` counts only this process's CPU, whatever else runs)."""
    gc.collect()
    done = 0
    start = clock()
    deadline = start + duration
    while done < MAX_OPS:
        n = step(min(chunk, MAX_OPS - done))
        done += n
        now = clock()
        if n == 0 or now >= deadline:
            break
    elapsed = clock() - start
    return done / elapsed if elapsed > 0 else 0.0


class Bench:
    """The fixtures and one step function per line of the table."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.author = identity("Local 12")
        self.reader = identity("Tenants United")
        self.channel = Channel.from_secret(
            "strike-support", hashlib.blake2b(b"strike-support", digest_size=32).digest()
        )
        self.text = (b"Strike vote Friday 6pm, bring banners. " * 32)[:TEXT_SIZE]
        self.message = os.urandom(TEXT_SIZE)
        self.secret_key = self.author._secret_key
        self.signed = sodium.crypto_sign(self.message, self.secret_key)
        self.dh_secret = hashlib.blake2b(b"x25519 secret", digest_size=32).digest()
        self.dh_public = sodium.crypto_scalarmult_base(
            hashlib.blake2b(b"x25519 peer", digest_size=32).digest()
        )
        self.aead_key = hashlib.blake2b(b"xchacha key", digest_size=32).digest()
        self.seq = 0
        self.prev: bytes | None = None
        self.pool: list[bytes] = []  # channel bulletins made by "create", for ingesting
        self.direct_seq = 0
        self.direct_prev: bytes | None = None
        self.stores = 0

    # Bare libsodium -------------------------------------------------------------

    def sign(self, n: int) -> int:
        crypto_sign, message, sk = sodium.crypto_sign, self.message, self.secret_key
        for _ in range(n):
            crypto_sign(message, sk)
        return n

    def verify(self, n: int) -> int:
        crypto_sign_open, signed, pk = sodium.crypto_sign_open, self.signed, self.author.public_key
        for _ in range(n):
            crypto_sign_open(signed, pk)
        return n

    def x25519(self, n: int) -> int:
        scalarmult, secret, public = sodium.crypto_scalarmult, self.dh_secret, self.dh_public
        for _ in range(n):
            scalarmult(secret, public)
        return n

    def xchacha(self, n: int) -> int:
        encrypt, message, key = (
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt, self.message, self.aead_key
        )
        nonce = bytes(24)
        for _ in range(n):
            encrypt(message, b"", nonce, key)
        return n

    # Pipelines ------------------------------------------------------------------

    def create(self, n: int) -> int:
        seal, author, channel, text, pool = Bulletin.seal, self.author, self.channel, self.text, []
        seq, prev = self.seq, self.prev
        for _ in range(n):
            seq += 1
            b = seal(author, channel, text, seq=seq, prev=prev, now=NOW, rng=os.urandom)
            prev = b.id
            pool.append(b.raw)
        self.seq, self.prev = seq, prev
        self.pool.extend(pool)
        return n

    def create_direct(self, n: int) -> int:
        seal, author, to, text = Bulletin.seal, self.author, [self.reader.public_key], self.text
        seq, prev = self.direct_seq, self.direct_prev
        for _ in range(n):
            seq += 1
            prev = seal(author, to, text, seq=seq, prev=prev, now=NOW, rng=os.urandom).id
        self.direct_seq, self.direct_prev = seq, prev
        return n

    def ingest(self) -> Step:
        raws = self.cycle(self.pool)
        from_bytes, channel = Bulletin.from_bytes, self.channel

        def step(n: int) -> int:
            for _ in range(n):
                from_bytes(next(raws)).open(channel)
            return n

        return step

    def ingest_store(self) -> tuple[Step, Store]:
        """Each measurement gets a new store file, so every bulletin is new to it."""
        self.stores += 1
        store = Store.open(self.workdir / f"bench-{self.stores}.db", seal_key=bytes(32))
        pending = iter(self.pool)
        from_bytes, channel = Bulletin.from_bytes, self.channel

        def step(n: int) -> int:
            batch = []
            for raw in pending:
                b = from_bytes(raw)
                b.open(channel)
                batch.append(b)
                if len(batch) == n:
                    break
            if batch:
                store.add_many(batch, now=NOW)
            return len(batch)

        return step, store

    @staticmethod
    def cycle(items: Sequence[bytes]) -> Iterator[bytes]:
        while True:
            yield from items


def run(
    duration: float, rounds: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """The best rate of each line over ``rounds`` rounds (the machine is shared: noise
    only ever slows a measurement down), timed by ``clock``."""
    best: dict[str, float] = {line.key: 0.0 for line in LINES}
    with tempfile.TemporaryDirectory(prefix="meshnode-bench-") as tmp:
        bench = Bench(Path(tmp))
        for _ in range(rounds):
            rates = {
                "sign": timed(bench.sign, duration, clock=clock),
                "create": timed(bench.create, duration, clock=clock),
                "create_direct": timed(bench.create_direct, duration, clock=clock),
                "verify": timed(bench.verify, duration, clock=clock),
                "x25519": timed(bench.x25519, duration, clock=clock),
                "xchacha": timed(bench.xchacha, duration, clock=clock),
                "ingest": timed(bench.ingest(), duration, clock=clock),
            }
            step, store = bench.ingest_store()
            with store:
                rates["ingest_store"] = timed(step, duration, chunk=BATCH, clock=clock)
            for key, rate in rates.items():
                best[key] = max(best[key], rate)
    return best


def table(rates: dict[str, float]) -> tuple[str, bool]:
    """The printed table, and whether every target was met."""
    rows = [
        f"{'pipeline (1 KiB text, one core)':<44} {'per s':>8}  {'ratio':>6} {'of':<6}  "
        f"{'target':>6}  result",
        "-" * 86,
    ]
    ok = True
    for line in LINES:
        rate = rates[line.key]
        if line.key == line.base:
            rows.append(f"{line.label:<44} {rate:>8,.0f}")
            continue
        ratio = rate / rates[line.base] if rates[line.base] else 0.0
        if line.target is None:
            target, verdict = "-", "(no target)"
        else:
            met = ratio >= line.target
            ok = ok and met
            target, verdict = f"{line.target:.0%}", "PASS" if met else "MISS"
        rows.append(
            f"{line.label:<44} {rate:>8,.0f}  {ratio:>6.1%} {line.base:<6}  {target:>6}  {verdict}"
        )
    return "\n".join(rows), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=0.6,
        help="seconds per measurement (default 0.6; each line is measured once a round)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; each line reports its best (default 3)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if a target is missed"
    )
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 10 or not 1 <= args.rounds <= 10:
        parser.error("--duration is 0 to 10 seconds and --rounds 1 to 10")
    started = time.perf_counter()
    rates = run(args.duration, args.rounds)
    text, ok = table(rates)
    print(text)
    print(
        f"\nbest of {args.rounds} rounds of {args.duration:g} s per line, "
        f"{time.perf_counter() - started:.1f} s in all; targets {'met' if ok else 'MISSED'}"
    )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
