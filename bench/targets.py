"""Every target of issue 13 item 2, measured in one run: one table, met or not.

One invocation measures, in this order, on loopback only:

1. the bare crypto rates of this machine per second of CPU time (bench/core.py's
   ``run`` on ``time.process_time``: Ed25519 sign and verify of 1 KiB, X25519,
   XChaCha20-Poly1305 of 1 KiB), so that other load does not change the unit;
2. 30 nodes in this process (bench/mesh.py's ``run_inproc``): ``--count`` bulletins
   at 60/s, for CPU per delivery;
3. 30 nodes, one process each (bench/mesh.py's ``run_procs``): bulletins at 5/s,
   then at 60/s, then a ladder of short rungs (90 to 480/s, ``ladder_rates``) while
   each rung is sustained and the time limit is not reached;
4. with ``--with-peers`` or ``--with-dht``, bench/peers/run.py or bench/dht.py, as
   child processes;
5. if the CPU target is missed, the in-process run once more under cProfile, so
   that the table comes with where the time goes (``--no-profile`` skips it).

Then it reads the newest ``make bench-peers`` records and ``bench/results/dht.json``
(those rows say which run they come from), prints one table (target, bound,
figure, met or MISS) with notes under it, and writes ``bench/results/targets.json``
(``targets-quick.json`` with ``--quick``). See bench/README.md and the "Targets"
section of docs/performance.md.

Run with ``make bench-targets`` or ``.venv/bin/python bench/targets.py [--quick] [--strict]``.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import math
import os
import pstats
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import core  # noqa: E402
import mesh  # noqa: E402
from peers import run as peers  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS = HERE / "results"
NODES = 30
LOW_RATE = 5.0
RATE = 60.0
LADDER = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
"""The sustained-rate ladder, as multiples of RATE (``mesh.ladder_rates``): 90 to 480/s."""
RUNG_MIN = 20
"""Bulletins in the shortest ladder rung."""

# The bounds of issue 13, item 2.
DELIVERY = 1.0
P99_LOW_MS = 50.0
P99_RATE_MS = 100.0
CPU_VERIFIES = 6.0
SUSTAINED = 300.0
BYTES_PER_SIZE = 2.0
JS_P99 = 1.0
PY_CPU = 1 / 20
JS_CPU = 1 / 5
DHT_P99 = 2.0
DHT_JOINING_SUCCESS = 1.0

MET, MISS, NA, NOT_MEASURED = "met", "MISS", "n/a", "not measured"
THIS_RUN = "this run"


@dataclass(frozen=True)
class Row:
    """One line of the table: a target, its bound, the figure and the verdict."""

    target: str
    bound: str
    figure: str
    verdict: str
    """MET or MISS; NA where the target does not apply (a peer does not sustain the
    run); NOT_MEASURED where no figure was found."""
    value: float | None = None
    notes: tuple[str, ...] = ()
    source: str = THIS_RUN


def judge(value: float, bound: float, *, at_least: bool = False) -> str:
    """MET when ``value`` is within ``bound`` (at most it, or with ``at_least`` at least
    it); NaN, a figure that could not be computed, is a MISS."""
    if math.isnan(value):
        return MISS
    return MET if (value >= bound if at_least else value <= bound) else MISS


def _num(value: float | None) -> float | None:
    """``value`` for the JSON record: NaN becomes None."""
    return None if value is None or math.isnan(value) else value


# --- figures of one run ---------------------------------------------------------------------


def delivered_share(run: mesh.Run) -> float:
    expected = run.count * run.members
    return run.deliveries / expected if expected else math.nan


def p_ms(run: mesh.Run, q: float) -> float:
    return mesh.percentile(run.latencies(), q) * 1000


def cpu_ms(run: mesh.Run) -> float:
    """CPU of all nodes per delivery, in milliseconds."""
    return run.cpu_s * 1000 / run.deliveries if run.deliveries else math.nan


def bytes_ratio(run: mesh.Run) -> float:
    """Session bytes sent by all nodes ÷ deliveries ÷ the posted bulletins' mean size."""
    if not run.deliveries or math.isnan(run.bulletin_size):
        return math.nan
    return run.wire_out / run.deliveries / run.bulletin_size


def sustains(run: mesh.Run) -> bool:
    """The sustaining rule of bench/peers/run.py: every delivery, p99 under its limit,
    and the poster really posted at its share of the offered rate or more."""
    return (
        run.complete
        and mesh.percentile(run.latencies(), 99) < peers.P99_LIMIT
        and not run.post_rate() < peers.POSTING_SHARE * run.rate
    )


def why_not(run: mesh.Run) -> str:
    """Why ``run`` is not sustained, in a few words ("" if it is)."""
    reasons = []
    if not run.complete:
        reasons.append(f"{100 * delivered_share(run):.1f} % delivered")
    if run.deliveries and not mesh.percentile(run.latencies(), 99) < peers.P99_LIMIT:
        reasons.append(f"p99 {p_ms(run, 99):.0f} ms")
    if len(run.posted) < run.count:
        reasons.append(f"{len(run.posted)} of {run.count} posts reported")
    elif run.post_rate() < peers.POSTING_SHARE * run.rate:
        reasons.append(f"posted at {run.post_rate():.0f}/s")
    return ", ".join(reasons)


def _f(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def describe(run: mesh.Run) -> str:
    """The run's delivery, latency and rates in one line."""
    return (
        f"{run.rate:g}/s: {run.deliveries}/{run.count * run.members} delivered, p50 "
        f"{_f(p_ms(run, 50))} ms, p90 {_f(p_ms(run, 90))}, p99 {_f(p_ms(run, 99))}, max "
        f"{_f(p_ms(run, 100))}; posted at {_f(run.post_rate())}/s, completed at "
        f"{_f(run.completion_rate())}/s"
    )


def copies(run: mesh.Run) -> str:
    """How many copies of a bulletin a member received, from the gossip counters."""
    g, n = run.gossip, run.deliveries
    if not n or "received" not in g or "duplicates" not in g:
        return ""
    parts = [
        f"{(g['received'] + g['duplicates']) / n:.2f} copies received per delivery "
        f"({g['duplicates'] / n:.2f} duplicates)"
    ]
    for name in ("pushed", "announced", "wanted", "served"):
        if name in g:
            parts.append(f"{name} {g[name] / n:.2f}")
    return ", ".join(parts) + " (gossip counters, all nodes)"


# --- the rows measured in this run ----------------------------------------------------------


def delivery_row(runs: dict[str, mesh.Run | None]) -> Row:
    """The least share delivered over the named runs (a missing run is a miss)."""
    shares = {name: delivered_share(r) if r else math.nan for name, r in runs.items()}
    low = min(shares.values(), default=math.nan)
    if any(math.isnan(v) for v in shares.values()):
        low = math.nan
    notes = tuple(
        f"{name}: {'-' if math.isnan(v) else f'{100 * v:.2f} %'}" for name, v in shares.items()
    )
    return Row(
        "delivery, every run below (least)", "= 100 %",
        "-" if math.isnan(low) else f"{100 * low:.2f} %",
        judge(low, DELIVERY, at_least=True), _num(low), notes,
    )  # fmt: skip


def latency_row(run: mesh.Run | None, rate: float, bound_ms: float) -> Row:
    p99 = p_ms(run, 99) if run else math.nan
    return Row(
        f"p99 per delivery, {NODES} members, {rate:g}/s, one process per node",
        f"≤ {bound_ms:g} ms", "-" if math.isnan(p99) else f"{p99:.1f} ms",
        judge(p99, bound_ms), _num(p99), (describe(run),) if run else ("not run",),
    )  # fmt: skip


def cpu_row(inproc: mesh.Run | None, procs: mesh.Run | None, verify_s: float) -> Row:
    """CPU per delivery in verifications of 1 KiB: in one process (judged) and with one
    process per node (beside it)."""
    one = cpu_ms(inproc) / 1000 / verify_s if inproc else math.nan
    each = cpu_ms(procs) / 1000 / verify_s if procs else math.nan
    notes = [f"one verification: {verify_s * 1e6:.1f} µs of CPU (crypto_sign_open of 1 KiB)"]
    if inproc and inproc.deliveries:
        notes.append(f"in one process: {cpu_ms(inproc):.3f} ms per delivery")
    if procs and procs.deliveries:
        notes.append(f"one process per node: {cpu_ms(procs):.3f} ms per delivery")
        if procs.cpu_by_node and procs.count:
            poster = procs.cpu_by_node[0]
            members = sum(procs.cpu_by_node[1:])
            notes.append(
                f"one process per node: the poster {poster * 1000 / procs.count:.2f} ms per "
                f"post, the members {members * 1000 / procs.deliveries:.3f} ms per "
                "delivery"
            )
    return Row(
        f"CPU per delivery, {RATE:g}/s, {NODES} nodes in one process", f"≤ {CPU_VERIFIES:g} verif.",
        ("-" if math.isnan(one) else f"{one:.1f} verif.")
        + ("" if math.isnan(each) else f" (one process per node {each:.1f})"),
        judge(one, CPU_VERIFIES), _num(one), tuple(notes),
    )  # fmt: skip


def rate_row(runs: Sequence[mesh.Run], stopped: str) -> Row:
    """The highest offered rate sustained over ``runs`` (one process per node)."""
    held = [r for r in runs if sustains(r)]
    best = max(held, key=lambda r: r.rate, default=None)
    value = best.rate if best else math.nan
    notes = [describe(r) + ("" if sustains(r) else f" (not sustained: {why_not(r)})")
             for r in runs]  # fmt: skip
    if stopped:
        notes.append(f"the ladder stopped: {stopped}")
    return Row(
        f"sustained rate, {NODES} members, one process per node", f"≥ {SUSTAINED:g}/s",
        "-" if best is None else f"{value:g}/s", judge(value, SUSTAINED, at_least=True),
        _num(value), tuple(notes),
    )  # fmt: skip


def bytes_row(procs: mesh.Run | None, inproc: mesh.Run | None) -> Row:
    """Session bytes per delivery in bulletin sizes, at RATE: one process per node (judged),
    in one process beside it."""
    each = bytes_ratio(procs) if procs else math.nan
    one = bytes_ratio(inproc) if inproc else math.nan
    notes = []
    for name, run in (("one process per node", procs), ("in one process", inproc)):
        if run and run.deliveries:
            notes.append(
                f"{name}: {run.wire_out / run.deliveries:.0f} session bytes and "
                f"{run.bytes_out / run.deliveries:.0f} gossip payload bytes per delivery, "
                f"bulletin {run.bulletin_size:.0f} bytes encoded"
            )
            if text := copies(run):
                notes.append(f"{name}: {text}")
    return Row(
        f"session bytes ÷ deliveries ÷ bulletin size, {RATE:g}/s, {NODES} members",
        f"≤ {BYTES_PER_SIZE:g}",
        ("-" if math.isnan(each) else f"{each:.2f}")
        + ("" if math.isnan(one) else f" (in one process {one:.2f})"),
        judge(each, BYTES_PER_SIZE), _num(each), tuple(notes),
    )  # fmt: skip


def not_run(target: str, bound: str, why: str) -> Row:
    return Row(target, bound, "-", MISS, None, (why,))


# --- the rows read from other runs' records -------------------------------------------------


FILE_TIME = " (file time)"


def _when(doc: dict[str, Any], path: Path) -> str:
    """When the record's run happened: its "when" field, else the file's time."""
    when = doc.get("when")
    if isinstance(when, str) and when:
        return when
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S %z") + FILE_TIME


def _order(when: str) -> float:
    """A record's "when" as a Unix time, to find the newest (0 if it does not parse)."""
    try:
        return datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return 0.0


def newest_peers(results: Path) -> tuple[str, list[dict[str, Any]]] | None:
    """The newest ``make bench-peers`` sweep in ``results`` (full or quick): its date and
    its fixed-rate records (those written with its summary); None if there is none."""
    found = []
    for prefix in ("peers", "peers-quick"):
        summary = results / f"{prefix}-summary.json"
        if summary.exists():
            doc = json.loads(summary.read_text())
            when = _when(doc, summary)
            found.append((_order(when.removesuffix(FILE_TIME)), prefix == "peers", prefix, when))
    if not found:
        return None
    *_, prefix, when = max(found)
    runs = []
    for path in sorted(results.glob(f"{prefix}-n*-r*.json")):
        doc = json.loads(path.read_text())
        if doc.get("when") == when:
            runs.append(doc)
    runs.sort(key=lambda d: (d["workload"]["nodes"], d["workload"]["rate"]))
    return f"make bench-peers{' QUICK=1' if prefix == 'peers-quick' else ''} of {when}", runs


def peer_rows(source: str, runs: Sequence[dict[str, Any]]) -> list[Row]:
    """meshnode against the peers in each fixed-rate run where both sustain: p99 against
    js-libp2p's, CPU per delivery against py-libp2p's and js-libp2p's."""
    checks = (
        ("p99 per delivery", "js-libp2p", ("latency_ms", "p99"), JS_P99, "≤ 1×"),
        ("CPU per delivery", "py-libp2p", ("cpu_ms_per_delivery",), PY_CPU, "≤ 1/20"),
        ("CPU per delivery", "js-libp2p", ("cpu_ms_per_delivery",), JS_CPU, "≤ 1/5"),
    )
    rows = []
    for what, peer, key, bound, shown in checks:
        for doc in runs:
            w, by_impl = doc["workload"], doc["results"]
            name = f"{what} ÷ {peer}'s, {w['nodes']} nodes, {w['rate']:g}/s"
            ours, theirs = by_impl.get("meshnode"), by_impl.get(peer)
            if ours is None or theirs is None:
                continue
            if not (ours["sustained"] and theirs["sustained"]):
                said = "; ".join(
                    f"{impl} does not sustain it ({f['why_not']})"
                    for impl, f in (("meshnode", ours), (peer, theirs))
                    if not f["sustained"]
                )
                rows.append(Row(name, shown, "no ratio", NA, None, (said,), source))
                continue
            a, b = _dig(ours, key), _dig(theirs, key)
            ratio = a / b if b else math.nan
            unit = " ms" if what.startswith("p99") else " ms CPU"
            rows.append(Row(
                name, shown, f"{ratio:.2f}×", judge(ratio, bound), _num(ratio),
                (f"meshnode {a:.3g}{unit}, {peer} {b:.3g}{unit}",), source,
            ))  # fmt: skip
    return rows


def _dig(doc: dict[str, Any], key: Sequence[str]) -> float:
    value: Any = doc
    for k in key:
        value = value[k]
    return math.nan if value is None else float(value)


DHT_BOUNDS = "p99 ≤ 2× stock, 100 % joining"


def dht_rows(path: Path) -> list[Row]:
    """meshnode's lookup p99 against stock kademlia's per (nodes, quorum), and its success
    with nodes joining, from bench/dht.py's record; one NOT_MEASURED row if it is absent.

    The record's ``runs`` are judged: each one's ``lookups``, ``success`` and
    percentiles cover network lookups only (``local`` ones, answered from the finder's
    own storage, are left out). meshnode runs on other hosts (``other_hosts``) are
    shown in the notes of the same row.
    """
    if not path.exists():
        return [Row("DHT lookups", DHT_BOUNDS, "not measured: run bench/dht.py", NOT_MEASURED)]
    doc = json.loads(path.read_text())
    source = f"bench/dht.py of {_when(doc, path)}"
    runs = [r for r in doc.get("runs", []) if isinstance(r, dict)]
    others = [r for r in doc.get("other_hosts", []) if isinstance(r, dict)]
    stock = {(r["nodes"], r["quorum"], r["joining"]): r for r in runs if r["impl"] == "stock"}
    rows = []
    for r in runs:
        if r["impl"] == "stock":
            continue
        key = (r["nodes"], r["quorum"], r["joining"])
        where = f"{r['nodes']} nodes, quorum {r['quorum']}" + (
            f", {r['host']}" if r.get("host") else ""
        )
        notes = [_dht_figures(r)]
        notes += [f"stock: {_dht_figures(t)}" for t in [stock.get(key)] if t]
        notes += [f"{o['impl']} ({o.get('host', '?')}): {_dht_figures(o)}" for o in others
                  if (o["nodes"], o["quorum"], o["joining"]) == key]  # fmt: skip
        if r["joining"]:
            share = r["success"] / r["lookups"] if r["lookups"] else math.nan
            rows.append(Row(
                f"DHT success, 20 % of nodes joining, {where}", "= 100 %",
                f"{100 * share:.2f} %", judge(share, DHT_JOINING_SUCCESS, at_least=True),
                _num(share), tuple(notes), source,
            ))  # fmt: skip
            continue
        target = f"DHT lookup p99 ÷ stock's, {where}"
        theirs = stock.get(key)
        if theirs is None or not theirs.get("p99_ms"):
            rows.append(Row(target, "≤ 2×", "no stock run", NOT_MEASURED, None, (), source))
            continue
        ratio = r["p99_ms"] / theirs["p99_ms"] if r.get("p99_ms") is not None else math.nan
        rows.append(Row(
            target, "≤ 2×", "-" if math.isnan(ratio) else f"{ratio:.2f}×",
            judge(ratio, DHT_P99), _num(ratio), tuple(notes), source,
        ))  # fmt: skip
    return rows or [Row("DHT lookups", DHT_BOUNDS, f"no runs in {path.name}", NOT_MEASURED,
                        source=source)]  # fmt: skip


def _dht_figures(r: dict[str, Any]) -> str:
    p50, p99 = r.get("p50_ms"), r.get("p99_ms")
    return (
        f"{r['success']}/{r['lookups']} network lookups found, p50 "
        f"{'-' if p50 is None else f'{p50:.1f}'} ms, p99 {'-' if p99 is None else f'{p99:.1f}'}"
        f" ms; {r.get('local', 0)} answered locally, left out"
        + ("; cut short" if r.get("cut_short") else "")
    )


# --- the table ------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    """The rows grouped by where they come from, then the notes, numbered like the rows."""
    head = ("target", "bound", "figure", "met")
    widths = [max(len(head[0]), *(len(r.target) for r in rows)) + 5,
              max(len(head[1]), *(len(r.bound) for r in rows)),
              max(len(head[2]), *(len(r.figure) for r in rows)),
              len(NOT_MEASURED)]  # fmt: skip

    def line(cells: Sequence[str]) -> str:
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    notes = []
    source = None
    for k, r in enumerate(rows, 1):
        if r.source != source:
            source = r.source
            if source != THIS_RUN:
                out.append(f"From {source}, not this run:")
        out.append(line([f"{k:>2}. {r.target}", r.bound, r.figure, r.verdict]))
        notes.extend(f"{k:>2}. {n}" for n in r.notes)
    return "\n".join([*out, "", "Notes:", *notes])


def crypto_lines(rates: dict[str, float]) -> list[str]:
    """The machine's bare crypto rates, per second of CPU."""
    out = []
    for line in core.LINES:
        rate = rates.get(line.key, math.nan)
        if line.key == line.base and rate and not math.isnan(rate):
            out.append(f"  {line.label:<46} {rate:>9,.0f}/s  {1e6 / rate:>7.1f} µs")
    return out


# --- the profile ----------------------------------------------------------------------------


def areas(stats: pstats.Stats, top: int = 14) -> list[tuple[str, float]]:
    """Own CPU time by where the code lives (a meshnode module, libsodium, SQLite, trio,
    ...), as shares of the total, largest first. Other built-ins (``len``, ``bytes``
    methods, ...) count for the code that called them."""
    by_area: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # (pstats keeps it untyped)
    total = 0.0
    for (path, _line, func), (_cc, _nc, tottime, _ct, callers) in raw.items():
        total += tottime
        where = area_of(path, func)
        if where == BUILTIN and callers:
            for (cpath, _cline, cfunc), (_, _, tt, _) in callers.items():
                by_area[area_of(cpath, cfunc)] = by_area.get(area_of(cpath, cfunc), 0.0) + tt
        else:
            by_area[where] = by_area.get(where, 0.0) + tottime
    ranked = sorted(by_area.items(), key=lambda kv: -kv[1])[:top]
    return [(name, t / total if total else math.nan) for name, t in ranked]


BUILTIN = "built-ins"
AREAS = (
    ("sqlite3", "SQLite"), ("_sodium", "libsodium"), ("nacl", "libsodium"),
    ("msgpack", "msgpack"), ("epoll", "epoll (waiting and waking)"), ("socket", "sockets"),
)  # fmt: skip


def area_of(path: str, func: str) -> str:
    """A short name for where a profiled function lives: SQLite, libsodium, msgpack,
    epoll, sockets, a meshnode module (``meshnode/core/gossip``), a library, a module of
    the standard library (``stdlib ipaddress``), or BUILTIN."""
    text = f"{path} {func}"
    for needle, name in AREAS:
        if needle in text:
            return name
    if "/meshnode/" in path:
        parts = path.split("/meshnode/", 1)[1].split("/")
        return "meshnode/" + "/".join(parts[:2]).removesuffix(".py")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/")[0].removesuffix(".py")
    if "/lib/python3" in path:
        return "stdlib " + Path(path).stem
    return BUILTIN if path == "~" else Path(path).stem


def profile_inproc(plan: mesh.Plan, count: int) -> list[str]:
    """The in-process run at RATE again, with cProfile on CPU time during the run only."""
    import io

    import trio

    profiler = cProfile.Profile(time.process_time)

    async def rungs(last: mesh.Run | None, result: mesh.Result) -> mesh.Rung | None:
        if last is None:
            profiler.enable()
            return RATE, count
        profiler.disable()
        return None

    trio.run(mesh.run_inproc, plan, rungs)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    lines = [f"  {share:6.1%}  {name}" for name, share in areas(stats)]
    stats.sort_stats("tottime").print_stats(15)
    functions = [
        "  " + text.strip()
        for text in stream.getvalue().splitlines()
        if text.strip() and text.strip()[0].isdigit()
    ]
    return [
        "Own CPU time by area:", *lines, "The 15 functions with the most own time "
        "(ncalls tottime percall cumtime percall where):", *functions,
    ]  # fmt: skip


# --- the measurements -----------------------------------------------------------------------


@dataclass
class Measured:
    """Everything this run measured, for the rows and the record."""

    rates: dict[str, float] = field(default_factory=dict)
    inproc: mesh.Result | None = None
    procs: mesh.Result | None = None
    low: mesh.Run | None = None
    at_rate: mesh.Run | None = None
    ladder: list[mesh.Run] = field(default_factory=list)
    stopped: str = ""
    profile: list[str] = field(default_factory=list)


def measure_procs(
    plan: mesh.Plan, counts: tuple[int, int], rung_s: float, deadline: float, m: Measured
) -> None:
    """LOW_RATE, then RATE, then the ladder while each rung is sustained and the deadline
    (a ``time.monotonic()`` value) is not passed."""
    schedule = iter(
        [(LOW_RATE, counts[0]), (RATE, counts[1])]
        + [(r, max(RUNG_MIN, round(r * rung_s))) for r in mesh.ladder_rates(RATE, LADDER)]
    )

    def rungs(last: mesh.Run | None, result: mesh.Result) -> mesh.Rung | None:
        if result.ladder and last is not None:
            if not sustains(last):
                m.stopped = f"{last.rate:g}/s was not sustained ({why_not(last)})"
                return None
            if time.monotonic() > deadline:
                m.stopped = "the time limit (--time-limit) was reached"
                return None
        return next(schedule, None)

    m.procs = mesh.run_procs(plan, rungs)
    runs = [r for r in [m.procs.main, *m.procs.ladder] if r is not None]
    m.low = runs[0] if runs else None
    m.at_rate = runs[1] if len(runs) > 1 else None
    m.ladder = runs[2:]


def rows_of(m: Measured) -> list[Row]:
    inproc = m.inproc.main if m.inproc else None
    runs = {
        f"in one process, {RATE:g}/s": inproc,
        f"one process per node, {LOW_RATE:g}/s": m.low,
        f"one process per node, {RATE:g}/s": m.at_rate,
    }
    verify_s = 1 / m.rates["verify"] if m.rates.get("verify") else math.nan
    rows = [
        delivery_row(runs),
        latency_row(m.low, LOW_RATE, P99_LOW_MS),
        latency_row(m.at_rate, RATE, P99_RATE_MS),
        cpu_row(inproc, m.at_rate, verify_s),
        rate_row([r for r in (m.low, m.at_rate, *m.ladder) if r is not None], m.stopped),
        bytes_row(m.at_rate, inproc),
    ]
    failed = [f"{r.mode}: FAILED: {r.failed}" for r in (m.inproc, m.procs) if r and r.failed]
    if failed:
        rows[0] = replace(rows[0], verdict=MISS, notes=(*rows[0].notes, *failed))
    return rows


def run_summary(run: mesh.Run) -> dict[str, Any]:
    return {
        "rate": run.rate, "count": run.count, "members": run.members,
        "delivered": run.deliveries, "expected": run.count * run.members,
        "latency_ms": {f"p{q}": _num(p_ms(run, q)) for q in (50, 90, 99, 100)},
        "posting_rate": _num(run.post_rate()), "completion_rate": _num(run.completion_rate()),
        "sustained": sustains(run), "cpu_s": run.cpu_s, "cpu_ms_per_delivery": _num(cpu_ms(run)),
        "cpu_s_by_node": run.cpu_by_node, "wire_bytes": run.wire_out,
        "payload_bytes": run.bytes_out, "bulletin_bytes": _num(run.bulletin_size),
        "gossip": run.gossip,
    }  # fmt: skip


def record(
    m: Measured, rows: Sequence[Row], args: argparse.Namespace, took: float, load: list[float]
) -> Path:
    path: Path = args.out or RESULTS / ("targets-quick.json" if args.quick else "targets.json")
    runs = {}
    if m.inproc and m.inproc.main:
        runs[f"in one process {RATE:g}/s"] = run_summary(m.inproc.main)
    for run in (m.low, m.at_rate, *m.ladder):
        if run is not None:
            runs[f"one process per node {run.rate:g}/s"] = run_summary(run)
    doc = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": args.quick,
        "took_s": round(took, 1),
        "nodes": NODES,
        "seed": args.seed,
        "machine": peers.machine(),
        "load_at_start_and_end": load,
        "crypto_per_s": m.rates,
        "rows": [{**asdict(r), "value": _num(r.value)} for r in rows],
        "runs": runs,
        "ladder_stopped": m.stopped,
        "profile": m.profile,
        "anomalies": {
            r.mode: r.anomalies for r in (m.inproc, m.procs) if r is not None and r.anomalies
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def child(argv: Sequence[str], timeout: float) -> str:
    """Run a benchmark script with this Python; '' if it went well, else what went wrong."""
    print(f"\n$ {' '.join(argv)}", flush=True)
    try:
        done = subprocess.run([sys.executable, *argv], cwd=ROOT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{argv[0]} did not finish in {timeout:g} s"
    return "" if done.returncode == 0 else f"{argv[0]} exited with status {done.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 1.5 min)")
    parser.add_argument("--count", type=int, help=f"bulletins at {RATE:g}/s (300; quick 120)")
    parser.add_argument(
        "--low-count", type=int, help=f"bulletins at {LOW_RATE:g}/s (100; quick 40)"
    )
    parser.add_argument("--rung", type=float, help="seconds of posting per ladder rung (3; 1.5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the topology")
    parser.add_argument(
        "--time-limit", type=float, default=600.0,
        help="seconds from the start after which no ladder rung starts (default 600)",
    )  # fmt: skip
    parser.add_argument("--with-peers", action="store_true", help="run bench/peers/run.py first")
    parser.add_argument("--with-dht", action="store_true", help="run bench/dht.py first")
    parser.add_argument(
        "--no-profile", action="store_true", help="no cProfile run when the CPU target is missed"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where records are read")
    parser.add_argument("--out", type=Path, help="the record (bench/results/targets.json)")
    parser.add_argument("--strict", action="store_true", help="exit status 1 if a target is missed")
    args = parser.parse_args(argv)
    count = args.count or (120 if args.quick else 300)
    low_count = args.low_count or (40 if args.quick else 100)
    rung_s = args.rung or (1.5 if args.quick else 3.0)
    if not 2 <= count <= 10_000 or not 2 <= low_count <= 10_000 or not 0 < rung_s <= 30:
        parser.error("--count and --low-count are 2 to 10000, --rung up to 30 s")
    started = time.monotonic()
    deadline = started + args.time_limit

    import trio

    print(
        f"Targets of issue 13, one run: {NODES} nodes on loopback, node 0 posts 1 KiB "
        f"bulletins (seed {args.seed}); {low_count} at {LOW_RATE:g}/s, {count} at {RATE:g}/s, "
        f"ladder rungs of {rung_s:g} s" + (" (quick)" if args.quick else ""),
        flush=True,
    )
    m = Measured()
    load = [os.getloadavg()[0]]
    m.rates = core.run(*((0.3, 1) if args.quick else (0.6, 3)), clock=time.process_time)
    print("Bare crypto on this machine, per second of CPU, now:", *crypto_lines(m.rates), sep="\n")
    plan = mesh.make_plan(NODES, args.seed)

    async def once(last: mesh.Run | None, result: mesh.Result) -> mesh.Rung | None:
        return (RATE, count) if last is None else None

    m.inproc = trio.run(mesh.run_inproc, plan, once)
    print(f"  done: in one process ({m.inproc.elapsed_s:.0f} s)", flush=True)
    measure_procs(plan, (low_count, count), rung_s, deadline, m)
    elapsed = m.procs.elapsed_s if m.procs else math.nan
    print(f"  done: one process per node ({elapsed:.0f} s)", flush=True)
    rows = rows_of(m)
    if rows[3].verdict == MISS and not args.no_profile:
        m.profile = profile_inproc(plan, count)
        print("  done: the profile of the in-process run", flush=True)
    failures = []
    if args.with_peers:
        failures.append(child(["bench/peers/run.py", *(["--quick"] if args.quick else [])], 3600))
    if args.with_dht:
        failures.append(child(["bench/dht.py"], 1200))
    read = newest_peers(args.results)
    if read is None:
        rows.append(Row("against the peers", "see issue 13", "not measured: make bench-peers",
                        NOT_MEASURED))  # fmt: skip
    else:
        rows.extend(peer_rows(*read))
    dht = dht_rows(args.results / "dht.json")
    if args.with_dht and dht[0].verdict == NOT_MEASURED:
        dht[0] = replace(dht[0], notes=(*dht[0].notes, "bench/dht.py ran but wrote no dht.json"))
    rows.extend(dht)
    took = time.monotonic() - started
    load.append(os.getloadavg()[0])
    print()
    print(table(rows))
    print(
        f"\nLoad average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end, on "
        f"{os.cpu_count()} cores: other work on the machine delays the nodes (latency, rates) "
        "more than it changes their CPU time."
    )
    if m.profile:
        print(f"\nWhere the CPU goes, in one process at {RATE:g}/s (cProfile, a second run):")
        print("\n".join(m.profile))
    for failure in filter(None, failures):
        print(f"\n{failure}")
    path = record(m, rows, args, took, load)
    missed = [r for r in rows if r.verdict == MISS]
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(
        f"\n{len(rows) - len(missed)} of {len(rows)} rows without a miss, {len(missed)} missed; "
        f"took {took:.0f} s; record: {shown}"
    )
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
