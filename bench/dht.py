"""Benchmark of DHT lookups on loopback: meshnode's hardened nodes against stock kademlia's.

Every run builds a fresh network of one size and looks values up across it, once
per implementation, at each quorum, with and without newcomers joining during the
lookups. meshnode (``meshnode.net.dht.open_dht``, kademlia's Server hardened,
under trio) runs on each of its hosts: an asyncio loop in a thread of its own
bridged to trio, or trio-asyncio; stock kademlia (unmodified
``kademlia.network.Server``) on a plain asyncio loop. Every run has a child process
of its own (``--child``) holding all of its nodes: the stock one imports neither
trio nor meshnode, and no run pays for a trio-asyncio imported by another
(importing it patches asyncio's loop lookups process-wide). Runs take turns,
never overlapping, so they do not compete for the CPU.

The plan, drawn from a seeded RNG and the same for every run of a size: node ``i``
joins through one random earlier node; every node publishes one value (meshnode:
its signed contact record; stock: ``set(key_i, value_i)``); then ``--lookups``
random (finder, target) pairs are looked up one after the other (meshnode:
``lookup_contact``; stock: ``get``). With joining, the last 20 % of the nodes are
newcomers: they join (then publish) in the background, one after another spread
evenly over the lookups, through a random node of the first 80 %; targets are of
the first 80 % (their values were published before the lookups), and a newcomer
may be the finder once its join has completed.

A lookup succeeds when it returns the target's value exactly. A lookup whose
finder holds the target's value itself is *local*: stock answers it from its
storage without a datagram, meshnode still asks the network for the newest
record. Local lookups are left out of the latency and success figures on both
sides and counted apart; the figures are those of network lookups only.

Quorum: meshnode gathers valid records from ``value_quorum`` nodes; stock's
``get`` stops at the first round with any value, which is quorum 1. At a higher
quorum, stock runs its own crawl with one change: it keeps crawling until that
many nodes answered with a value (``_stock_quorum_get``).

Nodes bind 127.0.1.N (meshnode) and 127.0.2.N (stock), one address per node,
port 0. Every loop is bounded in count, and every operation and run in time.

Run with ``.venv/bin/python bench/dht.py``; results go to ``bench/results/dht.json``.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import platform
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
MESH_QUORUM = 3
"""meshnode's ``DHTConfig.value_quorum`` default: what its lookups use."""
JOINING_SHARE = 0.2
"""The share of the nodes that join during the lookups in a joining run."""
MESH_RPC_TIMEOUT = 1.0
"""meshnode's ``DHTConfig.rpc_timeout`` here; rpcudp's is a fixed 5 s (``STOCK_RPC_TIMEOUT``)."""
STOCK_RPC_TIMEOUT = 5.0
"""rpcudp's default ``wait_timeout``; kademlia's Server offers no way to change it, so it stays."""
OP_TIMEOUT = 15.0
"""The most one join, publish or lookup may take before it counts as failed."""
HOSTS = ("thread", "trio-asyncio")
SNMP = Path("/proc/net/snmp")
RESULTS = Path(__file__).resolve().parent / "results" / "dht.json"


@dataclass(frozen=True)
class Plan:
    """What every run of one network size does."""

    nodes: int
    initial: int
    """Nodes that join and publish before the lookups; the rest join during them."""
    boot: list[int | None]
    """For each node, the earlier node it joins through (None for the first)."""
    joins: list[tuple[int, int]]
    """(lookup index, newcomer): the newcomer starts joining before that lookup."""
    pairs: list[tuple[int, int]]
    """(finder, target) for each lookup, in order."""

    @property
    def joining(self) -> bool:
        return self.initial < self.nodes


def make_plan(nodes: int, lookups: int, seed: int, *, joining: bool) -> Plan:
    """The seeded topology, newcomers and lookup sample for ``nodes`` nodes."""
    rng = random.Random(seed * 100_003 + nodes)
    newcomers = round(nodes * JOINING_SHARE) if joining else 0
    initial = nodes - newcomers
    boot: list[int | None] = [None, *(rng.randrange(min(i, initial)) for i in range(1, nodes))]
    joins = [(j * lookups // newcomers, initial + j) for j in range(newcomers)]
    pairs = []
    for index in range(lookups):
        present = initial + sum(1 for at, _ in joins if at <= index)
        target = rng.randrange(initial)
        finder = rng.randrange(present - 1)
        pairs.append((finder + (finder >= target), target))
    return Plan(nodes, initial, boot, joins, pairs)


@dataclass
class Result:
    """One run's figures (the stock child sends it as JSON)."""

    impl: str
    """"meshnode" or "stock"."""
    host: str
    """meshnode: "thread" or "trio-asyncio"; stock: "asyncio"."""
    nodes: int
    quorum: int
    joining: bool
    joined: int = 0
    """Nodes that joined: bound, and bootstrapped into a non-empty routing table."""
    bootstrap_s: float = 0.0
    """The sum of the first nodes' joins (bind, then bootstrap through one node)."""
    publish_s: float = 0.0
    published: int = 0
    """Publishes (before the lookups) that at least one other node accepted."""
    network_ms: list[float] = field(default_factory=list)
    """The latency of each network lookup, found or not."""
    network_found: int = 0
    local: int = 0
    """Lookups the finder could answer from its own storage: left out of the figures."""
    local_found: int = 0
    skipped: int = 0
    """Lookups not made: the finder or the target failed to join."""
    lookup_cpu_s: float = 0.0
    """CPU time of the whole process (every thread) while the lookups ran."""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    """With ``--rounds``: (p50, p99, success, CPU) of every round; the figures are the best's."""
    cut_short: bool = False
    """The run's time limit ended a phase early."""
    anomalies: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def note(self, what: str, count: int = 1) -> None:
        if count:
            self.anomalies[what] = self.anomalies.get(what, 0) + count

    def lookup(self, *, local: bool, ms: float, found: bool) -> None:
        if local:
            self.local += 1
            self.local_found += found
        else:
            self.network_ms.append(ms)
            self.network_found += found

    @property
    def cpu_per_lookup_ms(self) -> float:
        """CPU per lookup, local ones included (their share is alike on both sides),
        newcomers' joins too: it does not depend on how busy the machine is."""
        made = len(self.network_ms) + self.local
        return self.lookup_cpu_s * 1000 / made if made else math.nan

    @property
    def name(self) -> str:
        return f"{self.impl} ({self.host})"

    def row(self) -> dict[str, Any]:
        """The record of ``bench/results/dht.json``."""
        return {
            "impl": self.impl,
            "host": self.host,
            "nodes": self.nodes,
            "quorum": self.quorum,
            "joining": self.joining,
            "lookups": len(self.network_ms),
            "local": self.local,
            "success": self.network_found,
            "local_success": self.local_found,
            "skipped": self.skipped,
            "cpu_ms_per_lookup": _round(self.cpu_per_lookup_ms),
            "p50_ms": _round(percentile(self.network_ms, 50)),
            "p99_ms": _round(percentile(self.network_ms, 99)),
            "max_ms": _round(max(self.network_ms, default=math.nan)),
            "joined": self.joined,
            "bootstrap_s": round(self.bootstrap_s, 3),
            "publish_s": round(self.publish_s, 3),
            "published": self.published,
            "cut_short": self.cut_short,
            "anomalies": self.anomalies,
            "elapsed_s": round(self.elapsed_s, 2),
            "rounds": self.rounds,
        }

    def summary(self) -> dict[str, Any]:
        """This round's figures, for the record of the best one."""
        return {
            "p50_ms": _round(percentile(self.network_ms, 50)),
            "p99_ms": _round(percentile(self.network_ms, 99)),
            "success": self.network_found,
            "lookups": len(self.network_ms),
            "cpu_ms_per_lookup": _round(self.cpu_per_lookup_ms),
        }


def _round(value: float) -> float | None:
    """Milliseconds to 3 decimals, NaN as null, so that the record is strict JSON."""
    return None if math.isnan(value) else round(value, 3)


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


async def _mesh_run(plan: Plan, quorum: int, host: str, seed: int, time_limit: float) -> Result:
    import trio

    from meshnode.core import records
    from meshnode.core.identity import Identity
    from meshnode.net.dht import DHTConfig, open_dht

    result = Result("meshnode", host, plan.nodes, quorum, plan.joining)
    _count_logs(result)
    config = DHTConfig(
        ksize=KSIZE, alpha=ALPHA, rpc_timeout=MESH_RPC_TIMEOUT, value_quorum=quorum
    )
    idents = [
        Identity.from_seed(_seed32("meshnode", seed, i), f"bench {i}") for i in range(plan.nodes)
    ]
    hosts = [f"{MESH_NET}.{i + 1}" for i in range(plan.nodes)]
    nodes: list[DHTNode | None] = [None] * plan.nodes
    ready = [trio.Event() for _ in range(plan.nodes)]
    """Set once a node's join has ended (joined or not): a newcomer's first lookup waits on it."""
    start = time.perf_counter()
    deadline = start + time_limit
    stop = trio.Event()

    async def serve(
        i: int, boot: list[str], *, task_status: trio.TaskStatus[DHTNode] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_dht(idents[i], hosts[i], bootstrap=boot, config=config) as node:
            task_status.started(node)
            await stop.wait()

    async def join(nursery: trio.Nursery, i: int) -> DHTNode | None:
        via = plan.boot[i]
        through = nodes[via] if via is not None else None
        boot = [f"{hosts[via]}:{through.port}"] if via is not None and through else []
        node = None
        with trio.move_on_after(OP_TIMEOUT):
            node = await nursery.start(serve, i, boot)
        nodes[i] = node
        ready[i].set()
        if node is None:
            result.note("join timed out")
        result.joined += node is not None and (not boot or bool(node.routing_snapshot()))
        return node

    async def publish(i: int) -> int:
        node = nodes[i]
        if node is None:
            return 0
        with trio.move_on_after(OP_TIMEOUT):
            return await node.publish_contact([f"{hosts[i]}:{node.port}"])
        result.note("publish timed out")
        return 0

    async def newcomer(nursery: trio.Nursery, i: int) -> None:
        if await join(nursery, i) is not None:
            await publish(i)

    async with _dht_host(host), trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        for i in range(plan.initial):
            await join(nursery, i)
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
        result.bootstrap_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(plan.initial):
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            result.published += await publish(i) > 0
        result.publish_s = time.perf_counter() - t0
        joins = list(plan.joins)
        cpu = time.process_time()
        for index, (finder, target) in enumerate(plan.pairs):
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            while joins and joins[0][0] <= index:
                nursery.start_soon(newcomer, nursery, joins.pop(0)[1])
            with trio.move_on_after(OP_TIMEOUT):
                await ready[finder].wait()
            me, other = nodes[finder], nodes[target]
            if me is None or other is None:
                result.skipped += 1
                continue
            key = records.contact_key(idents[target].public_key)
            local = me.holds(key)
            t0 = time.perf_counter()
            record = None
            with trio.move_on_after(OP_TIMEOUT):
                record = await me.lookup_contact(idents[target].public_key)
            ms = (time.perf_counter() - t0) * 1000
            found = record is not None and record.addresses == (f"{hosts[target]}:{other.port}",)
            result.lookup(local=local, ms=ms, found=found)
        result.lookup_cpu_s = time.process_time() - cpu
        with trio.move_on_after(OP_TIMEOUT):
            for event in ready:
                await event.wait()
        for node in nodes:
            if node is None:
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


@contextlib.asynccontextmanager
async def _dht_host(host: str) -> Any:
    """One host shared by every node of the run, as one process would share it."""
    if host == "thread":
        from meshnode.net.dht import open_dht_thread

        async with open_dht_thread():
            yield
    else:
        import trio_asyncio

        async with trio_asyncio.open_loop():
            yield


# --- stock kademlia, plain asyncio in a child process ------------------------------------------


async def _stock_quorum_get(server: Any, key: str, quorum: int) -> Any:
    """Stock ``Server.get`` whose crawl keeps going until ``quorum`` nodes answered
    with a value (or every node was asked); quorum 1 is ``get`` itself. The loop is
    stock ``ValueSpiderCrawl._nodes_found``'s, as meshnode's ``_RecordCrawl`` is: the
    child imports nothing of meshnode."""
    if quorum == 1:
        return await server.get(key)
    from kademlia.crawling import RPCFindResponse, ValueSpiderCrawl
    from kademlia.node import Node
    from kademlia.utils import digest

    class QuorumCrawl(ValueSpiderCrawl):  # type: ignore[misc]
        found: list[Any]

        async def _nodes_found(self, responses: dict[bytes, Any]) -> Any:
            unreachable = []
            for peer_id, reply in responses.items():
                response = RPCFindResponse(reply)
                if not response.happened():
                    unreachable.append(peer_id)
                elif response.has_value():
                    self.found.append(response.get_value())
                else:
                    self.nearest_without_value.push(self.nearest.get_node(peer_id))
                    self.nearest.push(response.get_node_list())
            self.nearest.remove(unreachable)
            if len(self.found) >= quorum or (self.found and self.nearest.have_contacted_all()):
                return await self._handle_found_values(self.found)
            if self.nearest.have_contacted_all():
                return None
            return await self.find()

    dkey = digest(key)
    if server.storage.get(dkey) is not None:
        return server.storage.get(dkey)
    node = Node(dkey)
    nearest = server.protocol.router.find_neighbors(node)
    if not nearest:
        return None
    crawl = QuorumCrawl(server.protocol, node, nearest, server.ksize, server.alpha)
    crawl.found = []
    return await crawl.find()


async def _stock_run(plan: Plan, quorum: int, seed: int, time_limit: float) -> Result:
    from kademlia.network import Server
    from kademlia.utils import digest

    result = Result("stock", "asyncio", plan.nodes, quorum, plan.joining)
    _count_logs(result)
    loop = asyncio.get_running_loop()

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        result.note(f"loop error {type(exc).__name__ if exc else context.get('message')}")

    loop.set_exception_handler(on_loop_error)
    hosts = [f"{STOCK_NET}.{i + 1}" for i in range(plan.nodes)]
    keys = [f"group {i}" for i in range(plan.nodes)]
    servers: list[Any] = [None] * plan.nodes
    ports = [0] * plan.nodes
    ready = [asyncio.Event() for _ in range(plan.nodes)]
    background: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    deadline = start + time_limit

    async def join(i: int) -> bool:
        via = plan.boot[i]
        server = Server(ksize=KSIZE, alpha=ALPHA, node_id=_seed32("stock", seed, i)[:20])
        try:
            await server.listen(0, interface=hosts[i])
            servers[i] = server
            ports[i] = server.transport.get_extra_info("sockname")[1]
            joined = via is None
            if via is not None and servers[via] is not None:
                found = await asyncio.wait_for(
                    server.bootstrap([(hosts[via], ports[via])]), OP_TIMEOUT
                )
                joined = bool(found)
        except TimeoutError:
            result.note("join timed out")
            joined = False
        ready[i].set()
        result.joined += joined
        return joined

    async def publish(i: int) -> bool:
        try:
            value = f"{hosts[i]}:{ports[i]}"
            return bool(await asyncio.wait_for(servers[i].set(keys[i], value), OP_TIMEOUT))
        except TimeoutError:
            result.note("publish timed out")
        except ValueError:  # max() of no nodes: every neighbour is dead
            result.note("set raised ValueError")
        return False

    async def newcomer(i: int) -> None:
        if await join(i):
            await publish(i)

    try:
        t0 = time.perf_counter()
        for i in range(plan.initial):
            await join(i)
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
        result.bootstrap_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(plan.initial):
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            if servers[i] is not None:
                result.published += await publish(i)
        result.publish_s = time.perf_counter() - t0
        joins = list(plan.joins)
        cpu = time.process_time()
        for index, (finder, target) in enumerate(plan.pairs):
            if time.perf_counter() > deadline:
                result.cut_short = True
                break
            while joins and joins[0][0] <= index:
                task = asyncio.create_task(newcomer(joins.pop(0)[1]))
                background.add(task)
                task.add_done_callback(background.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready[finder].wait(), OP_TIMEOUT)
            me = servers[finder]
            if me is None or servers[target] is None:
                result.skipped += 1
                continue
            local = me.storage.get(digest(keys[target])) is not None
            t0 = time.perf_counter()
            got = None
            try:
                got = await asyncio.wait_for(
                    _stock_quorum_get(me, keys[target], quorum), OP_TIMEOUT
                )
            except TimeoutError:
                result.note("lookup timed out")
            ms = (time.perf_counter() - t0) * 1000
            result.lookup(local=local, ms=ms, found=got == f"{hosts[target]}:{ports[target]}")
        result.lookup_cpu_s = time.process_time() - cpu
        if background:
            await asyncio.wait(background, timeout=OP_TIMEOUT)
        for server in servers:
            if server is not None:
                result.note("pending requests at the end", len(server.protocol._outstanding))
    finally:
        for server in servers:
            if server is not None:
                server.stop()
    result.elapsed_s = time.perf_counter() - start
    return result


def _child(args: argparse.Namespace) -> int:
    """One run, in this (child) process; its result goes to stdout as one JSON line."""
    plan = make_plan(args.nodes, args.lookups, args.seed, joining=args.joining == [True])
    quorum = args.quorums[0]
    if args.child == "stock":
        result = asyncio.run(_stock_run(plan, quorum, args.seed, args.time_limit))
    else:
        import trio

        result = trio.run(_mesh_run, plan, quorum, args.child, args.seed, args.time_limit)
    print(json.dumps(asdict(result)), flush=True)
    return 0


def run_child(
    kind: str,
    nodes: int,
    quorum: int,
    *,
    joining: bool,
    lookups: int,
    seed: int,
    time_limit: float,
) -> Result:
    """One run in a child process of its own: ``kind`` is "stock" or a meshnode host.

    Each run starts in a fresh interpreter: the stock one must not import trio or
    meshnode, and the thread host must not pay for a trio-asyncio imported by an
    earlier run (importing it patches asyncio's loop lookups process-wide).
    """
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child", kind,
        "--nodes", str(nodes),
        "--quorums", str(quorum),
        "--joining", "yes" if joining else "no",
        "--lookups", str(lookups),
        "--seed", str(seed),
        "--time-limit", str(time_limit),
    ]  # fmt: skip
    impl, host = ("stock", "asyncio") if kind == "stock" else ("meshnode", kind)
    failed = Result(impl, host, nodes, quorum, joining)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=time_limit + 60, check=False
        )
    except subprocess.TimeoutExpired:
        failed.cut_short = True
        failed.note("child process killed")
        return failed
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr)
        failed.note(f"child exited {done.returncode}")
        return failed
    return Result(**json.loads(lines[-1]))


# --- the table and the record ------------------------------------------------------------------


def _fig(value: float, width: int, digits: int) -> str:
    """A right-aligned figure, or a dash where there is none (NaN)."""
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"


def table(results: Sequence[Result]) -> str:
    head = (
        f"{'implementation':<24} {'nodes':>5} {'q':>2} {'joining':>7} {'joined':>6} "
        f"{'bootstrap s':>11} {'publish s':>9} {'network':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'success':>8} {'local':>5} {'x stock p99':>11}"
    )
    rows = [head, "-" * len(head)]
    stock = {(r.nodes, r.quorum, r.joining): r for r in results if r.impl == "stock"}
    for r in results:
        n = len(r.network_ms)
        success = 100 * r.network_found / n if n else math.nan
        p50, p99 = percentile(r.network_ms, 50), percentile(r.network_ms, 99)
        base = stock.get((r.nodes, r.quorum, r.joining))
        ratio = p99 / percentile(base.network_ms, 99) if base and r is not base else math.nan
        rows.append(
            f"{r.name:<24} {r.nodes:>5} {r.quorum:>2} {'yes' if r.joining else 'no':>7} "
            f"{r.joined:>6} {r.bootstrap_s:>11.2f} {r.publish_s:>9.2f} {n:>7} "
            f"{_fig(p50, 7, 2)} {_fig(p99, 7, 2)} {_fig(success, 7, 1)}% {r.local:>5} "
            f"{_fig(ratio, 10, 2)}x"
        )
    return "\n".join(rows)


def notes(results: Sequence[Result]) -> list[str]:
    out = []
    for r in results:
        listed = [f"{k}: {v}" for k, v in sorted(r.anomalies.items())]
        if r.local:
            listed.append(f"{r.local_found}/{r.local} local lookups found")
        if r.skipped:
            listed.append(f"{r.skipped} lookups skipped (a node failed to join)")
        if r.cut_short:
            listed.append("cut short by --time-limit")
        out.append(
            f"  {r.name}, {r.nodes} nodes, quorum {r.quorum}"
            f"{', joining' if r.joining else ''} ({r.elapsed_s:.1f} s): "
            f"{', '.join(listed) or 'none'}"
        )
    return out


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
        "versions": {p: version(p) for p in ("kademlia", "rpcudp", "trio", "trio-asyncio")},
    }


def write_record(path: Path, args: argparse.Namespace, results: Sequence[Result]) -> None:
    """``runs`` holds meshnode on the host its nodes use by default, and stock; the
    other host's rows are in ``other_hosts``, so each (impl, nodes, quorum, joining)
    appears once in ``runs``."""
    from meshnode.net.dht import DEFAULT_HOST

    kept = [r.row() for r in results if r.impl == "stock" or r.host == DEFAULT_HOST]
    others = [r.row() for r in results if r.impl != "stock" and r.host != DEFAULT_HOST]
    doc = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "settings": {
            "ksize": KSIZE,
            "alpha": ALPHA,
            "lookups_per_run": args.lookups,
            "seed": args.seed,
            "rounds": args.rounds,
            "joining_share": JOINING_SHARE,
            "rpc_timeout_s": {"meshnode": MESH_RPC_TIMEOUT, "stock": STOCK_RPC_TIMEOUT},
            "meshnode_quorum": MESH_QUORUM,
        },
        "meshnode_host": DEFAULT_HOST,
        "runs": kept,
        "other_hosts": others,
        "table": table(results).splitlines(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def best(rounds: Sequence[Result]) -> Result:
    """The round with the lowest p99 (other load on a shared machine only ever slows a
    round down), with every round's figures kept beside it; a round that lost a
    lookup is never the best of rounds that did not."""
    chosen = min(
        rounds,
        key=lambda r: (
            r.network_found < len(r.network_ms) or not r.network_ms,
            percentile(r.network_ms, 99),
        ),
    )
    if len(rounds) > 1:
        chosen.rounds = [r.summary() for r in rounds]
    return chosen


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _sizes(text: str) -> list[int]:
    sizes = _ints(text)
    if not sizes or not all(2 <= s <= MAX_NODES for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes are 2 to {MAX_NODES} nodes")
    return sizes


def _hosts(text: str) -> list[str]:
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts or not set(hosts) <= set(HOSTS):
        raise argparse.ArgumentTypeError(f"hosts are {', '.join(HOSTS)}")
    return hosts


def _joining(text: str) -> list[bool]:
    choices = {"no": [False], "yes": [True], "both": [False, True]}
    if text not in choices:
        raise argparse.ArgumentTypeError("joining is no, yes or both")
    return choices[text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[50, 200], help="default 50,200")
    parser.add_argument(
        "--quorums", type=_ints, default=[1, MESH_QUORUM], help=f"default 1,{MESH_QUORUM}"
    )
    parser.add_argument(
        "--joining", type=_joining, default=[False, True], help="no, yes or both (default)"
    )
    parser.add_argument(
        "--hosts", type=_hosts, default=list(HOSTS), help=f"meshnode's (default {','.join(HOSTS)})"
    )
    parser.add_argument("--lookups", type=int, default=1000, help="per run (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of topology and sample")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of each implementation per row, taking turns; a row shows the best p99",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=40.0,
        help="seconds per run; phases stop early past it (default 40)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"the JSON record (default {RESULTS})"
    )
    parser.add_argument(
        "--child",
        choices=["stock", *HOSTS],
        help="make one run here, of --nodes nodes at the first quorum, and print it as JSON "
        "(what each run's child process does; to profile one, run it under py-spy)",
    )
    parser.add_argument("--nodes", type=int, default=50, help="with --child (default 50)")
    args = parser.parse_args(argv)
    if args.lookups < 1 or args.rounds < 1:
        parser.error("--lookups and --rounds are at least 1")
    if not args.quorums or min(args.quorums) < 1:
        parser.error("quorums are at least 1")
    if args.child:
        return _child(args)

    print(
        f"DHT lookups on loopback, ksize {KSIZE}, alpha {ALPHA}, {args.lookups} lookups per "
        f"run (network lookups only), seed {args.seed}; rpc timeout: meshnode "
        f"{MESH_RPC_TIMEOUT:g} s, stock {STOCK_RPC_TIMEOUT:g} s (rpcudp's fixed value)",
        flush=True,
    )
    results: list[Result] = []
    overflows = 0
    for size in args.sizes:
        for joining in args.joining:
            for quorum in args.quorums:
                before = udp_receive_errors()
                kinds = [*args.hosts, "stock"]
                rounds: dict[str, list[Result]] = {kind: [] for kind in kinds}
                for _ in range(args.rounds):
                    for kind in kinds:
                        run = run_child(
                            kind,
                            size,
                            quorum,
                            joining=joining,
                            lookups=args.lookups,
                            seed=args.seed,
                            time_limit=args.time_limit,
                        )
                        rounds[kind].append(run)
                        print(notes([run])[0], flush=True)
                for kind in kinds:
                    results.append(best(rounds[kind]))
                after = udp_receive_errors()
                if before is not None and after is not None:
                    overflows += after - before
    print(table(results))
    print(f"UDP receive-buffer drops (kernel RcvbufErrors, whole machine): {overflows}")
    if args.out and str(args.out):
        write_record(args.out, args, results)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
