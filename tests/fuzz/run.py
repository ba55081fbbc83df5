"""Feed every decoder mutated and random inputs; only its documented error may come out.

    python -m tests.fuzz [--count N] [--seed S] [--target NAME ...] [--replay HEX]

For each target: its valid seeds first, then ``count`` inputs, seven in eight
a mutation of a seed (or of an earlier accepted input), one in eight random
bytes. Each input must be accepted or rejected with the target's error; any
other exception is a crash, printed with the input in hex for ``--replay``.
Memory is bounded per input: tracemalloc's peak while decoding must stay
under ``--max-memory`` (16 MiB). The run is deterministic for a seed. Exit
status 1 when anything crashed or grew too large.

Modelled on h11's ``fuzz/afl-server.py``: the decoder, its one expected
error, and nothing else allowed through.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
import tracemalloc
from dataclasses import dataclass, field

from tests.fuzz.mutate import mutate, random_bytes
from tests.fuzz.targets import TARGETS, Target

MAX_MEMORY = 16 << 20
MAX_CORPUS = 256


@dataclass
class Report:
    """What one target's run found."""

    name: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    peak: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.name:<16} {self.inputs:>8} inputs  {self.accepted:>7} accepted  "
            f"{self.rejected:>8} rejected  {len(self.failures):>3} failures  "
            f"{self.seconds:7.1f} s  {self.rate:8.0f}/s  peak {self.peak / 1024:7.0f} KiB"
        )


def one(target: Target, data: bytes, *, max_memory: int = MAX_MEMORY) -> tuple[bool, int]:
    """Run one input: (accepted, peak bytes). Raises AssertionError on a crash or
    on memory beyond ``max_memory``, with the input in hex."""
    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    try:
        target.check(data)
        accepted = True
    except target.expected:
        accepted = False
    except Exception as exc:
        raise AssertionError(
            f"{target.name}: {type(exc).__name__}: {exc}\n"
            f"  replay: python -m tests.fuzz --target {target.name} --replay {data.hex()}\n"
            + "".join(traceback.format_exception(exc)[-4:])
        ) from exc
    peak = tracemalloc.get_traced_memory()[1] - base if tracing else 0
    if peak > max_memory:
        raise AssertionError(
            f"{target.name}: {peak} bytes allocated for one input (limit {max_memory})\n"
            f"  replay: python -m tests.fuzz --target {target.name} --replay {data.hex()}"
        )
    return accepted, peak


def fuzz(
    target: Target, *, count: int, seed: str, max_memory: int = MAX_MEMORY, stop_after: int = 5
) -> Report:
    """``count`` inputs for ``target`` (plus its seeds), deterministic for ``seed``."""
    rng = random.Random(f"{seed}/{target.name}")
    seeds = target.seeds()
    corpus = list(seeds)
    longest = max((len(s) for s in seeds), default=64)
    max_size = max(2 * longest, 1024)  # inputs may grow, but not without end
    report = Report(target.name)
    started = time.perf_counter()
    queue: list[bytes] = list(seeds)
    produced = 0
    while produced < count or queue:
        if queue:
            data = queue.pop()
        else:
            produced += 1
            if rng.random() < 0.125:
                data = random_bytes(rng, longest)
            else:
                data = mutate(
                    rng.choice(corpus), rng, seeds=seeds, tokens=target.tokens, max_size=max_size
                )
        report.inputs += 1
        try:
            accepted, peak = one(target, data, max_memory=max_memory)
        except AssertionError as exc:
            report.failures.append(str(exc))
            if len(report.failures) >= stop_after:
                break
            continue
        report.peak = max(report.peak, peak)
        if accepted:
            report.accepted += 1
            if data not in seeds and len(corpus) < MAX_CORPUS:
                corpus.append(data)  # accepted variants seed further mutations
        else:
            report.rejected += 1
    report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=summary)
    parser.add_argument("--count", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", default="meshnode", help="the run's seed (any text)")
    parser.add_argument(
        "--target", action="append", choices=sorted(TARGETS), help="only these (repeatable)"
    )
    parser.add_argument("--replay", metavar="HEX", help="run one input (with one --target)")
    parser.add_argument("--max-memory", type=int, default=MAX_MEMORY, help="bytes per input")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the memory bound")
    args = parser.parse_args(argv)
    names = args.target or list(TARGETS)
    if args.replay is not None:
        if len(names) != 1:
            parser.error("--replay needs exactly one --target")
        tracemalloc.start()
        accepted, peak = one(TARGETS[names[0]], bytes.fromhex(args.replay))
        print(f"{'accepted' if accepted else 'rejected'}; peak {peak} bytes")
        return 0
    if not args.no_tracemalloc:
        tracemalloc.start()
    print(f"fuzz: seed {args.seed!r}, {args.count} inputs per target, {len(names)} targets")
    reports = []
    started = time.perf_counter()
    for name in names:
        report = fuzz(TARGETS[name], count=args.count, seed=args.seed, max_memory=args.max_memory)
        reports.append(report)
        print(report.line(), flush=True)
        for failure in report.failures:
            print(failure, file=sys.stderr)
    total = time.perf_counter() - started
    inputs = sum(r.inputs for r in reports)
    failures = sum(len(r.failures) for r in reports)
    print(f"total: {inputs} inputs in {total:.1f} s ({inputs / total:.0f}/s), {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
