"""Benchmark of the DHT on loopback: meshnode's hardened nodes against stock kademlia's.

For each network size, the same plan is run twice in one invocation: by meshnode
(``meshnode.net.dht.open_dht``, kademlia's Server hardened and hosted under trio
by trio-asyncio, all nodes in this process) and by the unmodified ``kademlia``
package (plain asyncio ``kademlia.network.Server``, all nodes in a child process
started with ``--stock``, which imports neither trio nor meshnode: importing
trio-asyncio patches asyncio's loop policy). The two runs take turns, never
overlapping, so they do not compete for the CPU.

The plan, drawn from a seeded RNG: node ``i`` joins through one random earlier
node; then every node publishes one value (meshnode: its signed contact record;
stock: ``set(key_i, value_i)``); then a random sample of ``--lookups`` (finder,
target) pairs, finder != target, is looked up one after the other (meshnode:
``lookup_contact``; stock: ``get``). A lookup succeeds when it returns the
target's value exactly. Latency percentiles cover every lookup, found or not.

Nodes bind 127.0.1.N (meshnode) and 127.0.2.N (stock), one address per node,
port 0. Every loop is bounded in count, and every operation and run in time.

Run with ``.venv/bin/python bench/dht.py [--sizes 50,200] [--lookups 500] [--seed 1]``.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshnode.net.dht import DHTNode

MESH_NET = "127.0.1"
STOCK_NET = "127.0.2"
MAX_NODES = 254
"""One 127.0.x.N address per node, N from 1."""
KSIZE = 20
ALPHA = 3
MESH_RPC_TIMEOUT = 1.0
"""meshnode's ``DHTConfig.rpc_timeout`` here; rpcudp's is a fixed 5 s (``STOCK_RPC_TIMEOUT``)."""
STOCK_RPC_TIMEOUT = 5.0
"""rpcudp's default ``wait_timeout``; kademlia's Server offers no way to change it, so it stays."""
OP_TIMEOUT = 15.0
"""The most one join, publish or lookup may take before it counts as failed."""
SNMP = Path("/proc/net/snmp")


@dataclass(frozen=True)
class Plan:
    """What both implementations do for one network size."""

    nodes: int
    boot: list[int | None]
    """For each node, the earlier node it joins through (None for the first)."""
    pairs: list[tuple[int, int]]
    """(finder, target) for each lookup, in order."""


def make_plan(nodes: int, lookups: int, seed: int) -> Plan:
    """The seeded topology and lookup sample for ``nodes`` nodes."""
    rng = random.Random(seed * 100_003 + nodes)
    boot: list[int | None] = [None, *(rng.randrange(i) for i in range(1, nodes))]
    total = nodes * (nodes - 1)
    picks = rng.sample(range(total), min(lookups, total))
    pairs = []
    for k in picks:
        finder, r = divmod(k, nodes - 1)
        pairs.append((finder, r if r < finder else r + 1))
    return Plan(nodes, boot, pairs)


@dataclass
class Result:
    """One implementation's figures for one size (the stock child sends it as JSON)."""

    impl: str
    nodes: int
    joined: int = 0
    bootstrap_s: float = 0.0
    """The sum of every node's join: bind, then bootstrap through one node."""
    publish_s: float = 0.0
    published: int = 0
    """Publishes that at least one other node accepted."""
    attempted: int = 0
    found: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    local_hits: int = 0
    """Stock lookups answered from the finder's own storage (no network round)."""
    remote_ms: list[float] = field(default_factory=list)
    """Stock: the latencies of the other lookups (meshnode's always crawl)."""
    cut_short: bool = False
    """The run's time limit ended a phase early."""
    anomalies: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def note(self, what: str, count: int = 1) -> None:
        if count:
            self.anomalies[what] = self.anomalies.get(what, 0) + count


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class _CountingHandler(logging.Handler):
    """Counts warnings and errors by logger, so they show as anomalies instead of noise."""

    def __init__(self, result: Result) -> None:
        super().__init__(logging.WARNING)
        self._result = result

    def emit(self, record: logging.LogRecord) -> None:
        self._result.note(f"log {record.levelname.lower()} {record.name}")


def _count_logs(result: Result) -> None:
    root = logging.getLogger()
    root.handlers = [_CountingHandler(result)]
    root.setLevel(logging.WARNING)


def _seed32(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


def udp_receive_errors() -> int | None:
    """The kernel's UDP RcvbufErrors (datagrams dropped on a full buffer), or None."""
    try:
        lines = [line.split() for line in SNMP.read_text().splitlines() if line.startswith("Udp:")]
        return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


# --- meshnode, under trio in this process ------------------------------------------------------


async def _mesh_run(plan: Plan, seed: int, time_limit: float) -> Result:
    import trio
    import trio_asyncio

    from meshnode.core.identity import Identity
    from meshnode.net.dht import DHTConfig, open_dht

    result = Result("meshnode (trio-asyncio)", plan.nodes)
    _count_logs(result)
    config = DHTConfig(ksize=KSIZE, alpha=ALPHA, rpc_timeout=MESH_RPC_TIMEOUT)
    idents = [
        Identity.from_seed(_seed32("meshnode", seed, i), f"bench {i}") for i in range(plan.nodes)
    ]
    hosts = [f"{MESH_NET}.{i + 1}" for i in range(plan.nodes)]
    start = time.perf_counter()
    deadline = start + time_limit
    stop = trio.Event()

    async def serve(
        i: int, boot: list[str], *, task_status: trio.TaskStatus[DHTNode] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_dht(idents[i], hosts[i], bootstrap=boot, config=config) as node:
            task_status.started(node)
            await stop.wait()

    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        nodes: list[DHTNode | None] = []
        for i, via in enumerate(plan.boot):
            through = nodes[via] if via is not None else None
            boot = [f"{hosts[via]}:{through.port}"] if via is not None and through else []
            t0 = time.perf_counter()
            node = None
            with trio.move_on_after(OP_TIMEOUT):
                node = await nursery.start(serve, i, boot)
            result.bootstrap_s += time.perf_counter() - t0
            nodes.append(node)
            result.joined += node is not None and (not boot or bool(node.routing_snapshot()))
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
        t0 = time.perf_counter()
        for i, node in enumerate(nodes):
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            if node is None:
                continue
            with trio.move_on_after(OP_TIMEOUT):
                result.published += await node.publish_contact([f"{hosts[i]}:{node.port}"]) > 0
        result.publish_s = time.perf_counter() - t0
        for finder, target in plan.pairs:
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            if max(finder, target) >= len(nodes):
                continue
            me, other = nodes[finder], nodes[target]
            if me is None or other is None:
                continue
            result.attempted += 1
            t0 = time.perf_counter()
            record = None
            with trio.move_on_after(OP_TIMEOUT):
                record = await me.lookup_contact(idents[target].public_key)
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if record is not None and record.addresses == (f"{hosts[target]}:{other.port}",):
                result.found += 1
        for node in nodes:
            if node is None:
                result.note("join timed out")
                continue
            stats = node.statistics()
            for reason, count in stats.dropped.items():
                result.note(f"dropped {reason}", count)
            for reason, count in stats.refused.items():
                result.note(f"refused {reason}", count)
            result.note("pending requests at the end", stats.pending_requests)
        stop.set()
    result.elapsed_s = time.perf_counter() - start
    return result


# --- stock kademlia, plain asyncio in a child process ------------------------------------------


async def _stock_run(plan: Plan, seed: int, time_limit: float) -> Result:
    from kademlia.network import Server
    from kademlia.utils import digest

    result = Result("stock kademlia 2.2.3 (asyncio)", plan.nodes)
    _count_logs(result)
    loop = asyncio.get_running_loop()

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        result.note(f"loop error {type(exc).__name__ if exc else context.get('message')}")

    loop.set_exception_handler(on_loop_error)
    hosts = [f"{STOCK_NET}.{i + 1}" for i in range(plan.nodes)]
    keys = [f"group {i}" for i in range(plan.nodes)]
    start = time.perf_counter()
    deadline = start + time_limit
    servers: list[Any] = []
    ports: list[int] = []
    try:
        for i, via in enumerate(plan.boot):
            t0 = time.perf_counter()
            server = Server(ksize=KSIZE, alpha=ALPHA, node_id=_seed32("stock", seed, i)[:20])
            await server.listen(0, interface=hosts[i])
            servers.append(server)
            ports.append(server.transport.get_extra_info("sockname")[1])
            joined = via is None
            if via is not None:
                try:
                    found = await asyncio.wait_for(
                        server.bootstrap([(hosts[via], ports[via])]), OP_TIMEOUT
                    )
                    joined = bool(found)
                except TimeoutError:
                    result.note("join timed out")
            result.bootstrap_s += time.perf_counter() - t0
            result.joined += joined
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
        t0 = time.perf_counter()
        for i, server in enumerate(servers):
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            try:
                value = f"{hosts[i]}:{ports[i]}"
                result.published += bool(
                    await asyncio.wait_for(server.set(keys[i], value), OP_TIMEOUT)
                )
            except TimeoutError:
                result.note("publish timed out")
            except ValueError:  # max() of no nodes: every neighbour is dead
                result.note("set raised ValueError")
        result.publish_s = time.perf_counter() - t0
        for finder, target in plan.pairs:
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            if finder >= len(servers) or target >= len(servers):
                continue
            result.attempted += 1
            me = servers[finder]
            local = me.storage.get(digest(keys[target])) is not None
            result.local_hits += local
            t0 = time.perf_counter()
            got = None
            try:
                got = await asyncio.wait_for(me.get(keys[target]), OP_TIMEOUT)
            except TimeoutError:
                result.note("lookup timed out")
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if not local:
                result.remote_ms.append(result.latencies_ms[-1])
            result.found += got == f"{hosts[target]}:{ports[target]}"
        for server in servers:
            result.note("pending requests at the end", len(server.protocol._outstanding))
    finally:
        for server in servers:
            server.stop()
    result.elapsed_s = time.perf_counter() - start
    return result


def _stock_child(args: argparse.Namespace) -> int:
    plan = make_plan(args.nodes, args.lookups, args.seed)
    result = asyncio.run(_stock_run(plan, args.seed, args.time_limit))
    print(json.dumps(asdict(result)), flush=True)
    return 0


def run_stock(nodes: int, lookups: int, seed: int, time_limit: float) -> Result:
    """The stock run for one size, in a child process with a plain asyncio loop."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--stock",
        "--nodes", str(nodes),
        "--lookups", str(lookups),
        "--seed", str(seed),
        "--time-limit", str(time_limit),
    ]  # fmt: skip
    name = "stock kademlia 2.2.3 (asyncio)"
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=time_limit + 60, check=False
        )
    except subprocess.TimeoutExpired:
        return Result(name, nodes, cut_short=True, anomalies={"child process killed": 1})
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr)
        return Result(name, nodes, anomalies={f"child exited {done.returncode}": 1})
    doc = json.loads(lines[-1])
    return Result(**doc)


# --- the table ---------------------------------------------------------------------------------


def _fig(value: float, width: int, digits: int) -> str:
    """A right-aligned figure, or a dash where there is none (NaN)."""
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"


def table(results: Sequence[Result]) -> str:
    head = (
        f"{'implementation':<32} {'nodes':>5} {'joined':>6} {'bootstrap s':>11} "
        f"{'per node ms':>11} {'publish s':>9} {'lookups':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'success':>8}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        per_node = r.bootstrap_s / r.joined * 1000 if r.joined else math.nan
        success = 100 * r.found / r.attempted if r.attempted else math.nan
        p50, p99 = percentile(r.latencies_ms, 50), percentile(r.latencies_ms, 99)
        rows.append(
            f"{r.impl:<32} {r.nodes:>5} {r.joined:>6} {r.bootstrap_s:>11.2f} "
            f"{_fig(per_node, 11, 1)} {r.publish_s:>9.2f} {r.attempted:>7} "
            f"{_fig(p50, 8, 1)} {_fig(p99, 8, 1)} {_fig(success, 7, 1)}%"
        )
    return "\n".join(rows)


def notes(results: Sequence[Result]) -> list[str]:
    out = []
    for r in results:
        listed = [f"{k}: {v}" for k, v in sorted(r.anomalies.items())]
        if r.local_hits:
            p50, p99 = percentile(r.remote_ms, 50), percentile(r.remote_ms, 99)
            listed.append(
                f"{r.local_hits} lookups answered from the finder's own storage, no RPC "
                f"(the other {len(r.remote_ms)}: p50 {p50:.1f} ms, p99 {p99:.1f} ms)"
            )
        if r.cut_short:
            listed.append("cut short by --time-limit")
        out.append(
            f"  {r.impl}, {r.nodes} nodes ({r.elapsed_s:.1f} s): {', '.join(listed) or 'none'}"
        )
    return out


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if not sizes or not all(2 <= s <= MAX_NODES for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes are 2 to {MAX_NODES} nodes")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[50, 200], help="default 50,200")
    parser.add_argument("--lookups", type=int, default=500, help="lookups per run (default 500)")
    parser.add_argument("--seed", type=int, default=1, help="seed of topology and sample")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=40.0,
        help="seconds per implementation and size; phases stop early past it (default 40)",
    )
    parser.add_argument("--stock", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lookups < 1:
        parser.error("--lookups is at least 1")
    if args.stock:
        return _stock_child(args)

    import trio

    print(
        f"DHT on loopback, ksize {KSIZE}, alpha {ALPHA}, {args.lookups} lookups per row, "
        f"seed {args.seed}; rpc timeout: meshnode {MESH_RPC_TIMEOUT:g} s, "
        f"stock {STOCK_RPC_TIMEOUT:g} s (rpcudp's fixed value)",
        flush=True,
    )
    results: list[Result] = []
    overflows: list[str] = []
    for size in args.sizes:
        plan = make_plan(size, args.lookups, args.seed)
        before = udp_receive_errors()
        results.append(trio.run(_mesh_run, plan, args.seed, args.time_limit))
        middle = udp_receive_errors()
        results.append(run_stock(size, args.lookups, args.seed, args.time_limit))
        after = udp_receive_errors()
        if before is not None and middle is not None and after is not None:
            overflows.append(f"{size} nodes: meshnode {middle - before}, stock {after - middle}")
    print(table(results))
    print("Anomalies (counters summed over all nodes):")
    print("\n".join(notes(results)))
    if overflows:
        print(
            "UDP receive-buffer drops (kernel RcvbufErrors, whole machine): " + "; ".join(overflows)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
