"""meshnode side by side with py-libp2p and js-libp2p GossipSub: the same workload on each.

For each size (default 10 and 30 nodes) the topology comes from bench/mesh.py's
``make_plan`` (node ``i`` dials ``min(3, i)`` random earlier nodes, seeded), and
each implementation runs every node in one process, pinned to one core:

- ``meshnode``: this file with ``--child meshnode``, which runs bench/mesh.py's
  ``run_inproc`` (the in-process side of ``make bench``);
- ``py-libp2p``: bench/peers/py_libp2p_node.py under bench/peers/.venv-libp2p;
- ``js-libp2p``: bench/peers/js/run.mjs under Node.js, after ``npm ci`` there.

Each child speaks JSON lines on stdin and stdout (see ``Child``): it builds its
mesh, says it is ready, and then runs what it is asked: node 0 posts ``count``
1 KiB messages at ``rate`` per second on an absolute schedule, every other node
timestamps each arrival, and the child answers with the post times, the arrivals,
its process's CPU time, the bytes its TCP connections wrote and its resident memory.
This driver computes every figure from those, the same way for all three.

The sweep: a warm-up, then ``--count`` messages at each rate of ``--rates``
(default 5 and 20 per second), then the highest rate each sustains (every message
delivered to every member, p99 per delivery under 1 s, the poster on schedule),
found on a ladder of rates in steps of sqrt(2). It prints one table, writes one
JSON file per run to bench/results/ and, where matplotlib is installed, a PNG.

Run with ``make bench-peers`` (``QUICK=1`` for a smaller sweep) or
``.venv/bin/python bench/peers/run.py [--sizes 10,30] [--rates 5,20] [--count 100]``;
``--impls meshnode --sizes 10 --rates 5 --no-search`` runs one implementation once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import mesh  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Sequence

IMPLS = ("meshnode", "py-libp2p", "js-libp2p")
PEERS = IMPLS[1:]
LIBP2P_PYTHON = HERE / ".venv-libp2p" / "bin" / "python"
JS_DIR = HERE / "js"
RESULTS = BENCH / "results"

P99_LIMIT = 1.0
"""Seconds: a run is sustained when every delivery happened and its p99 is under this."""
POSTING_SHARE = 0.95
"""In a sustained run the poster kept at least this share of the offered rate (a node that
cannot post on time would otherwise show good latencies at a rate it never reached)."""
DRAIN = 10.0
"""Seconds a run waits, after its last post, for every member to have every message."""
WARMUP = (10.0, 5)
"""The warm-up run (rate, count) after the mesh is built: it must reach every member."""
SETUP_TIMEOUT = 120.0
"""The most a child may take to build its mesh and say it is ready."""
REPLY_MARGIN = 60.0
"""Seconds beyond a run's posting and drain time that its answer may take."""
CHILD_LIFETIME = 900.0
"""A child exits after this long whatever happens (the driver may have died)."""
LADDER_BASE = 5.0
"""The sustained-rate ladder: LADDER_BASE * sqrt(2)**k per second, rounded to 2 digits."""
MIN_RATE = 1.0
MAX_RATE = 2000.0


def ladder() -> list[float]:
    rates = []
    k = math.floor(2 * math.log2(MIN_RATE / LADDER_BASE))
    while (rate := LADDER_BASE * math.sqrt(2) ** k) <= MAX_RATE:
        rates.append(float(f"{rate:.2g}") if rate < 100 else float(round(rate, -1)))
        k += 1
    return [r for r in rates if r >= MIN_RATE]


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one run of one implementation measured, computed here from its raw answer."""

    impl: str
    nodes: int
    rate: float
    count: int
    delivered: int = 0
    expected: int = 0
    latency: list[float] = field(default_factory=list)
    """Seconds from a post call to a member having the message, per delivery, sorted."""
    coverage: list[float] = field(default_factory=list)
    """Seconds from a post call to the last member having it, per message all got, sorted."""
    posting_rate: float = math.nan
    """The rate node 0 actually posted at: from its first post call to its last."""
    others: float = math.nan
    """The share of the child's core that other processes used during the run."""
    waited: float = math.nan
    """The share of the run during which the child's main thread was ready to run but
    waited for the core (taken by other processes, or by another of the child's threads)."""
    cpu_s: float = math.nan
    wire_bytes: float = math.nan
    rss_per_node: float = math.nan
    anomalies: dict[str, int] = field(default_factory=dict)
    failed: str | None = None
    per_message: list[tuple[int, float]] = field(default_factory=list, repr=False)
    """(message, latency) for every delivery, in posting order: for the plot only."""

    @classmethod
    def of(cls, impl: str, nodes: int, rate: float, count: int, raw: dict[str, Any]) -> Figures:
        f = cls(impl, nodes, rate, count, expected=count * (nodes - 1))
        posted: list[float] = raw["posted"]
        arrivals: list[list[float]] = raw["arrivals"]
        by_message: dict[int, list[float]] = {}
        for _member, k, at in arrivals:
            lat = at - posted[int(k)]
            by_message.setdefault(int(k), []).append(lat)
            f.per_message.append((int(k), lat))
        f.per_message.sort()
        f.delivered = len(arrivals)
        f.latency = sorted(lat for _, lat in f.per_message)
        f.coverage = sorted(max(v) for v in by_message.values() if len(v) == nodes - 1)
        if len(posted) > 1 and posted[-1] > posted[0]:
            f.posting_rate = (len(posted) - 1) / (posted[-1] - posted[0])
        f.cpu_s = float(raw["cpu_s"])
        f.wire_bytes = float(raw["wire_bytes"])
        f.rss_per_node = float(raw["rss_per_node"])
        f.anomalies = {k: int(v) for k, v in raw.get("anomalies", {}).items() if v}
        return f

    @property
    def complete(self) -> bool:
        return self.failed is None and self.delivered == self.expected

    @property
    def sustained(self) -> bool:
        return (
            self.complete
            and self.p(self.latency, 99) < P99_LIMIT
            and not self.posting_rate < POSTING_SHARE * self.rate
        )

    def why_not(self) -> str:
        """Why the run is not sustained, in a few words ("" if it is)."""
        if self.failed is not None:
            return f"failed: {self.failed}"
        reasons = []
        if self.delivered < self.expected:
            reasons.append(f"{100 * self.delivered / self.expected:.1f} % delivered")
        p99 = self.p(self.latency, 99)
        if not p99 < P99_LIMIT:
            reasons.append(f"p99 {_ms(p99)} ms")
        if self.posting_rate < POSTING_SHARE * self.rate:
            reasons.append(f"posted at {self.posting_rate:.3g}/s")
        return ", ".join(reasons)

    @staticmethod
    def p(values: Sequence[float], q: float) -> float:
        return float(mesh.percentile(values, q))

    def per_delivery(self, total: float) -> float:
        return total / self.delivered if self.delivered else math.nan

    def summary(self, cdf: bool = True) -> dict[str, Any]:
        """The figures for the JSON record (latency distributions as percentiles: with
        ``cdf``, every one from 1 to 100)."""
        return {
            "impl": self.impl,
            "rate": self.rate,
            "count": self.count,
            "delivered": self.delivered,
            "expected": self.expected,
            "sustained": self.sustained,
            "why_not": self.why_not(),
            "latency_ms": _quantiles(self.latency, cdf),
            "coverage_ms": _quantiles(self.coverage, cdf),
            "messages_to_all": len(self.coverage),
            "posting_rate": self.posting_rate,
            "others_on_the_core": self.others,
            "waited_for_the_core": self.waited,
            "cpu_s": self.cpu_s,
            "cpu_ms_per_delivery": self.per_delivery(self.cpu_s * 1000),
            "wire_bytes": self.wire_bytes,
            "bytes_per_delivery": self.per_delivery(self.wire_bytes),
            "rss_mib_per_node": self.rss_per_node / 2**20,
            "anomalies": self.anomalies,
            "failed": self.failed,
        }


def _quantiles(values: Sequence[float], cdf: bool) -> dict[str, Any]:
    """Milliseconds: p50, p90, p99, max and, with ``cdf``, p1 to p100."""
    out: dict[str, Any] = {f"p{q}": mesh.percentile(values, q) * 1000 for q in (50, 90, 99)}
    out["max"] = max(values) * 1000 if values else math.nan
    if cdf:
        out["p1_to_p100"] = [round(mesh.percentile(values, q) * 1000, 2) for q in range(1, 101)]
    return out


def _ms(seconds: float) -> str:
    return (
        "-"
        if math.isnan(seconds)
        else f"{seconds * 1000:.0f}"
        if seconds >= 1
        else (f"{seconds * 1000:.1f}")
    )


# --- the children ----------------------------------------------------------------------------


def child_argv(impl: str, picks: list[list[int]], cpu: int | None) -> list[str]:
    common = [
        "--picks",
        json.dumps(picks),
        "--drain",
        f"{DRAIN:g}",
        "--lifetime",
        f"{CHILD_LIFETIME:g}",
    ]
    if impl == "meshnode":
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", "meshnode", *common]
    elif impl == "py-libp2p":
        argv = [str(LIBP2P_PYTHON), str(HERE / "py_libp2p_node.py"), *common]
    else:
        argv = [shutil.which("node") or "node", str(JS_DIR / "run.mjs"), *common]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]  # (every thread, from the start)
    return argv


def core_busy(cpu: int | None) -> float:
    """Seconds core ``cpu`` has spent busy since boot, from /proc/stat (NaN if unknown)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *ticks = line.split()
            if cpu is not None and name == f"cpu{cpu}":
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, ticks[:8])
                return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        pass
    return math.nan


def run_queue_wait(pid: int) -> float:
    """Seconds the main thread of process ``pid`` (where every node of a child runs) has
    spent ready to run but waiting for a core, from /proc/PID/schedstat (NaN if unknown)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return math.nan


def missing_setup(impls: Sequence[str]) -> list[str]:
    """What is not installed for ``impls``, as hints."""
    hints = []
    if "py-libp2p" in impls and not LIBP2P_PYTHON.exists():
        hints.append(f"py-libp2p: {LIBP2P_PYTHON} is missing (make bench-peers creates it)")
    if "js-libp2p" in impls and not (JS_DIR / "node_modules").exists():
        hints.append(f"js-libp2p: run `npm ci` in {JS_DIR} (make bench-peers does)")
    if "js-libp2p" in impls and not shutil.which("node"):
        hints.append("js-libp2p: Node.js (node) is not on PATH")
    return hints


class Child:
    """One implementation's nodes in one child process, driven with JSON lines.

    Out: ``{"ready": {"impl", "version"}}`` once the mesh is built and grafted, then
    one ``{"run": {"posted", "arrivals", "cpu_s", "wire_bytes", "rss_per_node",
    "anomalies"}}`` per command, or ``{"error": ...}``. ``posted[k]`` is when the
    k-th post call of the run started and each arrival is ``[member, k, when]``,
    on the child's one monotonic clock, in seconds. In: ``{"rate", "count",
    "first"}``: post ``count`` messages at ``rate``, numbered from ``first`` (so that
    a late arrival from an earlier run is not taken for this one's), then wait up to
    the drain time for every member to have them. The child exits when stdin closes.
    """

    def __init__(self, impl: str, picks: list[list[int]], cpu: int | None) -> None:
        self.impl = impl
        self.cpu = cpu
        self.nodes = len(picks)
        self.next_message = 0
        started = time.perf_counter()
        self.worker = mesh.Worker(0, queue.Queue(), child_argv(impl, picks, cpu))
        self.pid = self.worker.proc.pid  # (taskset execs the child: the same process)
        try:
            self.info: dict[str, Any] = self.worker.ask(SETUP_TIMEOUT)["ready"]
        except (RuntimeError, OSError):
            self.worker.stop()
            raise
        self.setup_s = time.perf_counter() - started

    def run(self, rate: float, count: int) -> Figures:
        first, self.next_message = self.next_message, self.next_message + count
        timeout = count / rate + DRAIN + REPLY_MARGIN
        busy0, wait0, started = core_busy(self.cpu), run_queue_wait(self.pid), time.monotonic()
        try:
            raw = self.worker.ask(timeout, rate=rate, count=count, first=first)["run"]
        except (RuntimeError, OSError) as exc:  # (no answer in time, or the child died)
            figures = Figures(self.impl, self.nodes, rate, count, expected=count * (self.nodes - 1))
            figures.failed = str(exc)
            return figures
        figures = Figures.of(self.impl, self.nodes, rate, count, raw)
        elapsed = time.monotonic() - started
        figures.others = max(0.0, (core_busy(self.cpu) - busy0 - figures.cpu_s) / elapsed)
        figures.waited = (run_queue_wait(self.pid) - wait0) / elapsed
        return figures

    def stop(self) -> None:
        self.worker.stop()


async def _meshnode_child(args: argparse.Namespace) -> None:
    """The meshnode side: bench/mesh.py's in-process runner, driven as a ``Child``."""
    import trio

    picks: list[list[int]] = json.loads(args.picks)
    commands = mesh.stdin_lines()

    def say(**doc: Any) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    async def rungs(last: mesh.Run | None, result: mesh.Result) -> mesh.Rung | None:
        if last is None:
            say(ready={"impl": "meshnode", "version": version("meshnode")})
        else:
            number = {bid: k for k, bid in enumerate(last.posted)}
            say(
                run={
                    "posted": list(last.posted.values()),
                    "arrivals": [
                        [member, number[bid], at]
                        for bid, got in last.arrived.items()
                        if bid in number
                        for member, at in got.items()
                    ],
                    "cpu_s": last.cpu_s,
                    "wire_bytes": last.wire_out,
                    "rss_per_node": last.rss_per_node,
                    "anomalies": result.anomalies,
                }
            )
        cmd = await anext(commands, None)
        if cmd is None or "rate" not in cmd:  # (stdin closed, or {"cmd": "quit"})
            return None
        return float(cmd["rate"]), int(cmd["count"])

    with trio.move_on_after(args.lifetime):
        result = await mesh.run_inproc(
            mesh.Plan(len(picks), picks), rungs, warmup=0, drain=args.drain
        )
        if result.failed:
            say(error=result.failed)


# --- the sweep -------------------------------------------------------------------------------


@dataclass
class Search:
    """The highest sustained rate of one implementation at one size, and the runs tried."""

    impl: str
    nodes: int
    best: float = math.nan
    below: float = math.nan
    """The lowest rate tried that was not sustained (NaN if none was)."""
    runs: list[Figures] = field(default_factory=list)

    def take(self, f: Figures) -> None:
        self.runs.append(f)
        if f.sustained:
            self.best = f.rate if math.isnan(self.best) else max(self.best, f.rate)
        elif math.isnan(self.below) or f.rate < self.below:
            self.below = f.rate

    def best_run(self) -> Figures | None:
        """The sustained run at the highest rate, if any."""
        runs = [f for f in self.runs if f.sustained]
        return max(runs, key=lambda f: f.rate) if runs else None

    def describe(self) -> str:
        if math.isnan(self.best):
            return f"< {self.below:g}/s" if not math.isnan(self.below) else "-"
        if math.isnan(self.below):
            return f">= {self.best:g}/s"
        return f"{self.best:g}/s (not {self.below:g})"


class Runner:
    """Runs of one implementation at one size, in one child while the runs leave no backlog."""

    def __init__(self, sweep: Sweep, impl: str, nodes: int) -> None:
        self.sweep, self.impl, self.nodes = sweep, impl, nodes
        self.picks = mesh.make_plan(nodes, sweep.args.seed).picks
        self.child: Child | None = None

    def run(self, rate: float, count: int, *, fresh: bool = False, note: str = "") -> Figures:
        """A run in the current child, or in a new one if ``fresh`` or the last run left
        messages undelivered (their backlog would weigh on this one)."""
        if fresh or self.child is None:
            self.close()
            self.child = self.sweep.spawn(self.impl, self.nodes, self.picks)
        if self.child is None:
            f = Figures(self.impl, self.nodes, rate, count, expected=count * (self.nodes - 1))
            f.failed = "the child did not start"
        else:
            f = self.child.run(rate, count)
            if not f.complete:
                self.close()
        print(f"  {self.impl:9} {self.nodes:3} nodes {rate:6g}/s: {_brief(f)}{note}", flush=True)
        return f

    def close(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


@dataclass
class Sweep:
    args: argparse.Namespace
    fixed: dict[tuple[int, float], dict[str, Figures]] = field(default_factory=dict)
    searches: dict[tuple[int, str], Search] = field(default_factory=dict)
    setup: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def spawn(self, impl: str, nodes: int, picks: list[list[int]]) -> Child | None:
        """A new child with its mesh built and warmed up, or None if it did not start."""
        try:
            child = Child(impl, picks, self.args.cpu)
        except (RuntimeError, OSError) as exc:
            print(f"  {impl}, {nodes} nodes: did not start: {exc}", flush=True)
            return None
        self.versions[impl] = str(child.info.get("version", "?"))
        self.setup.setdefault((nodes, impl), []).append(round(child.setup_s, 2))
        warm = child.run(*WARMUP)
        if not warm.complete:
            warm = child.run(*WARMUP)  # (a second chance for a mesh still grafting)
        if not warm.complete:
            print(f"  {impl}, {nodes} nodes: warm-up incomplete ({warm.why_not()})", flush=True)
        return child

    def over_time(self) -> bool:
        return time.monotonic() - self.started > float(self.args.time_limit)

    def one(self, impl: str, nodes: int) -> None:
        """The fixed-rate runs, then the ladder, of ``impl`` at ``nodes``.

        The ladder goes up from the highest sustained fixed rate, in the same child,
        until a rung is not sustained; if no fixed rate was sustained, it goes down
        from the lowest, a new child for each rung, until one is."""
        runner = Runner(self, impl, nodes)
        search = Search(impl, nodes)
        self.searches[(nodes, impl)] = search
        try:
            for rate in self.args.rates:
                f = runner.run(rate, self.args.count)
                self.fixed.setdefault((nodes, rate), {})[impl] = f
                search.take(f)
            if self.args.no_search:
                return
            if not math.isnan(search.best):
                rungs = [r for r in ladder() if r > search.best and not r >= search.below]
            else:
                rungs = [r for r in reversed(ladder()) if r < search.below]
            for rate in rungs:
                if self.over_time():
                    print(f"  (the ladder stops: --time-limit {self.args.time_limit:g} s)")
                    break
                count = max(self.args.rung_min, round(rate * self.args.rung))
                going_down = math.isnan(search.best)
                f = runner.run(rate, count, fresh=going_down, note=" (ladder)")
                search.take(f)
                if f.sustained == going_down:
                    break
        finally:
            runner.close()


def _brief(f: Figures) -> str:
    return (
        f"{f.delivered}/{f.expected}, p50 {_ms(f.p(f.latency, 50))} ms, "
        f"p99 {_ms(f.p(f.latency, 99))} ms, CPU {f.per_delivery(f.cpu_s * 1000):.2f} ms/delivery"
        + ("" if f.sustained else f" (not sustained: {f.why_not()})")
    )


# --- the table -------------------------------------------------------------------------------

COLUMNS = (
    ("nodes", 5), ("rate/s", 6), ("", 22), ("delivered", 11), ("p50 ms", 7), ("p99 ms", 7),
    ("full p50", 8), ("full p99", 8), ("CPU ms", 7), ("B/deliv", 7), ("RSS MiB", 7),
)  # fmt: skip
DIGITS = (1, 1, 1, 1, 3, 0, 2)
"""Decimals of the figures, from p50 ms on."""


def _figures(f: Figures) -> list[float]:
    """The table's figures, from p50 ms on: latency per delivery and to full coverage (ms),
    CPU ms and bytes per delivery, MiB per node."""
    return [
        f.p(f.latency, 50) * 1000,
        f.p(f.latency, 99) * 1000,
        f.p(f.coverage, 50) * 1000,
        f.p(f.coverage, 99) * 1000,
        f.per_delivery(f.cpu_s * 1000),
        f.per_delivery(f.wire_bytes),
        f.rss_per_node / 2**20,
    ]


def _num(value: float, digits: int) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"


def _line(cells: Sequence[str]) -> str:
    out = []
    for (name, width), cell in zip(COLUMNS, cells, strict=False):
        w = max(width, len(name))
        out.append(f"{cell:<{w}}" if name == "" else f"{cell:>{w}}")
    return " ".join(out).rstrip()


def _row(nodes: int, name: str, f: Figures) -> str:
    cells = [_num(v, d) for v, d in zip(_figures(f), DIGITS, strict=True)]
    return _line([str(nodes), f"{f.rate:g}", name, f"{f.delivered}/{f.expected}", *cells])


def _ratio_row(peer: str, ours: Figures, theirs: Figures) -> str:
    """meshnode's figures divided by the peer's, where both sustain the run."""
    label = f"  meshnode / {peer}"
    if not (ours.sustained and theirs.sustained):
        said = "; ".join(
            f"{name} does not sustain it ({f.why_not()})"
            for name, f in (("meshnode", ours), (peer, theirs))
            if not f.sustained
        )
        return _line(["", "", label]) + f" no ratio: {said}"
    ratios = [
        a / b if b else math.nan for a, b in zip(_figures(ours), _figures(theirs), strict=True)
    ]
    return _line(
        ["", "", label, f"{ours.delivered / theirs.delivered:.2f}x",
         *(f"{r:.2f}x" if not math.isnan(r) else "-" for r in ratios)]
    )  # fmt: skip


def _rate_ratio_row(peer: str, ours: Search, theirs: Search) -> str:
    """meshnode's highest sustained rate divided by the peer's (the other figures of those
    runs are at different rates, so they get no ratio)."""
    label = f"  meshnode / {peer}"
    if math.isnan(ours.best) or math.isnan(theirs.best):
        who = [s.impl for s in (ours, theirs) if math.isnan(s.best)]
        return _line(["", "", label]) + f" no ratio: {' and '.join(who)} sustained no rate tried"
    return _line(["", f"{ours.best / theirs.best:.2g}x", label])


def table(sweep: Sweep) -> str:
    names = {i: f"{i} {sweep.versions.get(i, '')}".strip() for i in IMPLS}
    lines = [_line([name for name, _ in COLUMNS])]
    lines.append("-" * len(lines[0]))
    for (nodes, _rate), by_impl in sorted(sweep.fixed.items()):
        lines.extend(_row(nodes, names[i], by_impl[i]) for i in IMPLS if i in by_impl)
        if (ours := by_impl.get("meshnode")) is not None:
            lines.extend(_ratio_row(p, ours, by_impl[p]) for p in PEERS if p in by_impl)
        lines.append("")
    for nodes in sorted({n for n, _ in sweep.searches}):
        found = {i: s for (n, i), s in sweep.searches.items() if n == nodes}
        best = {i: s.best_run() for i, s in found.items()}
        lines.append(
            f"Highest sustained rate at {nodes} nodes: "
            + ", ".join(f"{names[i]} {found[i].describe()}" for i in IMPLS if i in found)
        )
        lines.extend(_row(nodes, names[i], f) for i in IMPLS if (f := best.get(i)) is not None)
        if (ours_search := found.get("meshnode")) is not None:
            lines.extend(_rate_ratio_row(p, ours_search, found[p]) for p in PEERS if p in found)
        lines.append("")
    lines.extend(contention(sweep))
    return "\n".join(lines).rstrip()


WAITED = 0.05
"""A run during which the child waited for its core more than this share of the time is named."""


def contention(sweep: Sweep) -> list[str]:
    """A line on how much the children had to wait for their core during the runs."""
    runs = [f for by_impl in sweep.fixed.values() for f in by_impl.values()]
    runs += [f for s in sweep.searches.values() for f in s.runs if f not in runs]
    waits = [f.waited for f in runs if not math.isnan(f.waited)]
    if not waits:
        return []
    slow = [
        f"{f.impl} {f.nodes} nodes {f.rate:g}/s ({f.waited:.0%})" for f in runs if f.waited > WAITED
    ]
    return [
        f"The children waited for core {sweep.args.cpu} {min(waits):.1%} to {max(waits):.1%} of "
        "the time during the runs" + (f"; over {WAITED:.0%} in: {', '.join(slow)}" if slow else ".")
    ]


LEGEND = f"""
Every implementation runs all its nodes in one process pinned to one core; node 0 posts,
the others count. delivered: (member, message) arrivals within {DRAIN:g} s of the last post,
out of messages x members. p50/p99 ms: post call to a member having the message, per
delivery; full p50/p99: post call to the last member having it, per message that reached
all. CPU ms: the process's CPU time during the run, per delivery; B/deliv: bytes all nodes
wrote to their TCP connections (encryption and multiplexing framing included), per
delivery; RSS MiB: the process's resident memory growth since before its first node, per
node. A run is sustained when every delivery happened, p99 is under {P99_LIMIT:g} s and the
poster kept {POSTING_SHARE:.0%} of the offered rate. A ratio row divides meshnode's figures by
the peer's (under 1: meshnode's is lower) and is given only where both sustain the run; under
"Highest sustained rate", each row is that implementation's best run (a ladder rung or a
fixed-rate run) at its own rate, and the ratio is that of the rates alone."""


# --- records -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    node = shutil.which("node")
    node_version = ""
    if node:
        node_version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "node": node_version,
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
    }


def _json(value: Any) -> Any:
    """``value`` with NaN as null, so that the records are strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def write_records(sweep: Sweep, text: str) -> list[Path]:
    """One JSON file and one PNG per fixed-rate run, and a summary with the table and the
    ladders (and their PNG); returns the paths written."""
    args = sweep.args
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    prefix = "peers-quick" if args.quick else "peers"
    common = {
        "seed": args.seed,
        "cpu": args.cpu,
        "drain_s": DRAIN,
        "versions": sweep.versions,
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    written = []

    def write(name: str, doc: dict[str, Any]) -> Path:
        path = out / name
        path.write_text(json.dumps(_json(doc), indent=1) + "\n")
        written.append(path)
        return path

    for (nodes, rate), by_impl in sorted(sweep.fixed.items()):
        path = write(f"{prefix}-n{nodes}-r{rate:g}.json", {
            "workload": {"nodes": nodes, "rate": rate, "count": args.count, "text_bytes": 1024,
                         "picks": mesh.make_plan(nodes, args.seed).picks},
            "setup_s": {i: sweep.setup.get((nodes, i)) for i in by_impl},
            "results": {i: f.summary() for i, f in by_impl.items()},
            **common,
        })  # fmt: skip
        written.extend(plot_run(path.with_suffix(".png"), nodes, rate, by_impl, sweep.versions))
    path = write(f"{prefix}-summary.json", {
        "table": text.splitlines(),
        "sustained": {
            "criterion": {"delivered": "all", "p99_under_s": P99_LIMIT,
                          "posting_share_at_least": POSTING_SHARE},
            "rung_s": args.rung,
            "ladder": ladder(),
            "results": [
                {"impl": s.impl, "nodes": s.nodes, "highest": s.best, "lowest_not": s.below,
                 "runs": [f.summary(cdf=False) for f in s.runs]}
                for s in sweep.searches.values()
            ],
        },
        **common,
    })  # fmt: skip
    if sweep.searches:
        written.extend(plot_ladders(path.with_suffix(".png"), sweep))
    return written


def _pyplot() -> Any:
    """matplotlib's pyplot on a file backend, or None where the bench extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_run(
    path: Path, nodes: int, rate: float, by_impl: dict[str, Figures], versions: dict[str, str]
) -> list[Path]:
    """A PNG of one run: each implementation's latency distribution and latency over time."""
    if (plt := _pyplot()) is None:
        return []
    fig, (cdf, over) = plt.subplots(1, 2, figsize=(12, 4.5))
    for impl, f in by_impl.items():
        if not f.latency:
            continue
        label = f"{impl} {versions.get(impl, '')}"
        ms = [x * 1000 for x in f.latency]
        cdf.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], label=label)
        over.scatter([k for k, _ in f.per_message], [lat * 1000 for _, lat in f.per_message],
                     s=2, alpha=0.4, label=label)  # fmt: skip
    cdf.set_xscale("log")
    cdf.set_xlabel("latency per delivery, ms (log)")
    cdf.set_ylabel("share of deliveries")
    cdf.axvline(P99_LIMIT * 1000, color="grey", linestyle=":", linewidth=1)
    cdf.legend(loc="best")
    over.set_yscale("log")
    over.set_xlabel("message (posting order)")
    over.set_ylabel("latency, ms (log)")
    count = next(iter(by_impl.values())).count
    fig.suptitle(
        f"{nodes} nodes in one process each, node 0 posts {count} 1 KiB messages at {rate:g}/s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def plot_ladders(path: Path, sweep: Sweep) -> list[Path]:
    """A PNG of every run by offered rate: p99 per delivery and CPU per delivery."""
    if (plt := _pyplot()) is None:
        return []
    sizes = sorted({n for n, _ in sweep.searches})
    fig, axes = plt.subplots(2, len(sizes), figsize=(6 * len(sizes), 7), squeeze=False)
    for column, nodes in enumerate(sizes):
        p99, cpu = axes[0][column], axes[1][column]
        for impl in IMPLS:
            if (search := sweep.searches.get((nodes, impl))) is None:
                continue
            runs = sorted(search.runs, key=lambda f: f.rate)
            rates = [f.rate for f in runs]
            p99.plot(rates, [f.p(f.latency, 99) * 1000 for f in runs], "o-", label=impl)
            for f in runs:
                if not f.sustained:
                    p99.plot([f.rate], [f.p(f.latency, 99) * 1000], "kx")
            cpu.plot(rates, [f.per_delivery(f.cpu_s * 1000) for f in runs], "o-", label=impl)
        p99.axhline(P99_LIMIT * 1000, color="grey", linestyle=":", linewidth=1)
        p99.set_title(f"{nodes} nodes (x: not sustained)")
        p99.set_ylabel("p99 per delivery, ms")
        cpu.set_ylabel("CPU per delivery, ms")
        for ax in (p99, cpu):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            ax.set_xlabel("offered rate, messages/s")
            ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


# --- main ----------------------------------------------------------------------------------


def _list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        return [kind(s) for s in text.split(",") if s.strip()]

    return parse


def _impls(text: str) -> list[str]:
    impls = [s.strip() for s in text.split(",") if s.strip()]
    if not impls or not set(impls) <= set(IMPLS):
        raise argparse.ArgumentTypeError(f"implementations are {', '.join(IMPLS)}")
    return impls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impls", type=_impls, default=list(IMPLS), help=",".join(IMPLS))
    parser.add_argument("--sizes", type=_list(int), help="nodes (default 10,30; quick 10)")
    parser.add_argument("--rates", type=_list(float), default=[5.0, 20.0], help="default 5,20")
    parser.add_argument("--count", type=int, help="messages per run (default 100; quick 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the topology")
    parser.add_argument("--no-search", action="store_true", help="skip the sustained-rate ladder")
    parser.add_argument(
        "--rung", type=float, help="seconds of posting per ladder rung (4; quick 2)"
    )
    parser.add_argument("--rung-min", type=int, default=20, help="least messages per rung")
    parser.add_argument("--quick", action="store_true", help="10 nodes, 50 messages, 2-s rungs")
    parser.add_argument(
        "--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="core the children run on"
    )
    parser.add_argument(
        "--time-limit", type=float, default=1500.0, help="no ladder rung starts after (s)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where records go")
    parser.add_argument("--child", choices=["meshnode"], help=argparse.SUPPRESS)
    parser.add_argument("--picks", help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=CHILD_LIFETIME, help=argparse.SUPPRESS)
    parser.add_argument("--drain", type=float, default=DRAIN, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import trio

        trio.run(_meshnode_child, args)
        return 0
    args.sizes = args.sizes or ([10] if args.quick else [10, 30])
    args.count = args.count or (50 if args.quick else 100)
    args.rung = args.rung or (2.0 if args.quick else 4.0)
    if not all(2 <= n <= 254 for n in args.sizes) or not 2 <= args.count <= 10_000:
        parser.error("--sizes are 2 to 254 nodes, --count 2 to 10000")
    if not args.rates or not all(MIN_RATE <= r <= MAX_RATE for r in args.rates):
        parser.error(f"--rates are {MIN_RATE:g} to {MAX_RATE:g} per second")
    if hints := missing_setup(args.impls):
        print("\n".join(hints), file=sys.stderr)
        return 2
    print(
        f"Side by side on loopback: N nodes in one process per implementation, pinned to "
        f"core {args.cpu}; node 0 posts {args.count} 1 KiB messages at each rate; each node "
        f"dials {mesh.DIAL} random earlier ones (seed {args.seed})",
        flush=True,
    )
    sweep = Sweep(args)
    for nodes in args.sizes:
        for impl in args.impls:
            sweep.one(impl, nodes)
    text = table(sweep)
    print()
    print(text)
    print(LEGEND)
    written = write_records(sweep, text)
    shown = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written]
    print(f"\nRecords: {', '.join(shown)}")
    print(f"Took {time.monotonic() - sweep.started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
