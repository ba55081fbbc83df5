"""``python -m sim``: run the simulation's scenarios, print their tables and targets,
write the JSON record and the plots (docs/performance.md, "Simulation")."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sim import report
from sim.scenarios import record_of

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="Simulate meshnode at internet scale: the real gossip, sync, delivery "
        "and record machines on a simulated network (docs/performance.md, 'Simulation').",
    )
    parser.add_argument("--quick", action="store_true",
                        help="the same kinds of runs, smaller (up to 1,000 nodes)")
    parser.add_argument("--only", nargs="+", metavar="RUN",
                        help="run only these (names as in the tables: sweep-1000, churn, ...)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs at once, one process each (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="where the JSON record and the PNGs go (default: bench/results)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    parser.add_argument("--replot", action="store_true",
                        help="run nothing: draw the PNGs again from the JSON record in --out")
    args = parser.parse_args(argv)
    stem = "sim-quick" if args.quick else "sim"
    if args.replot:
        saved = json.loads((args.out / f"{stem}.json").read_text())
        for p in report.plot(saved["runs"], args.out, stem):
            print(f"wrote {p}", file=sys.stderr)
        return 0

    scenarios = report.full_set(quick=args.quick)
    if args.only:
        unknown = set(args.only) - {s.name for s in scenarios}
        if unknown:
            parser.error(f"no such run: {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s.name in args.only]
    # The largest first, so the two processes finish close together.
    order = sorted(scenarios, key=lambda s: -(s.nodes + s.silent + s.flooders + s.eclipsers))
    started = time.monotonic()
    print(f"running {len(order)} scenarios, {args.jobs} at a time", file=sys.stderr)
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            done = pool.map(record_of, order, chunksize=1)
    else:
        done = [record_of(s) for s in order]
    wall = time.monotonic() - started
    by_name = {str(r["name"]): r for r in done}
    records = {s.name: by_name[s.name] for s in scenarios}
    found = report.targets(records)
    print(report.tables(records))
    print()
    print(report.targets_table(found))
    print(f"\n{len(order)} runs in {wall:.0f} s wall", file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps({
        "runs": records,
        "targets": [vars(t) for t in found],
        "wall_seconds": round(wall, 1),
        "jobs": args.jobs,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    if not args.no_plots:
        try:
            written = report.plot(records, args.out, stem)
        except ImportError:
            print("no plots: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
        else:
            for p in written:
                print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
