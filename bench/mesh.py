"""Benchmark of bulletin delivery across a mesh of nodes on loopback: one channel, one poster.

For each size (default 10 and 30 nodes) the same seeded plan runs twice: with
every node in this process (one trio run, one trio-asyncio loop) and with every
node in its own worker process (``bench/mesh.py --worker``, driven over its
stdin and stdout with JSON lines). The plan, from ``--seed``:

1. node ``i`` (``i >= 1``) picks ``min(3, i)`` random earlier nodes; it joins
   the channel with an invite made by the first of them (``Node.join`` dials
   the inviter) and then dials the others (``Node.connect``). Nothing else
   dials: the DHT is left unbootstrapped, so rendezvous lookups find nobody
   and the topology stays the seeded one, run after run and implementation
   after implementation;
2. a warm-up: node 0 posts a few bulletins, and the run waits until every
   member has them (the meshes are grafted by then);
3. the measured run: node 0 posts ``--count`` bulletins of 1 KiB of text at
   ``--rate`` per second, on an absolute schedule; each member follows
   ``Node.bulletins(channel)`` and every arrival is timed;
4. the ladder: the same at higher rates (``--ladder``, multiples of
   ``--rate``, ``--rung`` seconds each) until a rung misses a delivery or
   falls behind, to find the highest sustained rate.

See bench/README.md for what each column means.
Run with ``.venv/bin/python bench/mesh.py [--sizes 10,30] [--rate 60] [--count 300]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import queue
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

    from meshnode.net.node import Node, NodeConfig

NET = "127.0.5"
"""Node ``i`` binds ``127.0.5.(i + 1)``, port 0."""
MAX_NODES = 254
DIAL = 3
"""Each node dials this many random earlier nodes."""
TEXT_SIZE = 1024
CHANNEL = "bench"
WARMUP = 5
SETUP_TIMEOUT = 60.0
"""The most building one mesh (open, join, connect every node) may take."""
DRAIN = 5.0
QUIET = 0.5
"""Seconds without a DHT datagram, request or task anywhere that count as settled."""
"""Seconds a run waits, after its last post, for every member to have every bulletin."""
FALLING_BEHIND = 0.9
"""A ladder rung whose completion rate is under this share of its offered rate ends the
ladder: the mesh no longer keeps up, so higher rates would only pile up backlog."""
WORKER_LIFETIME = 900.0
"""A worker exits after this long whatever happens (the coordinator may have died)."""
CPU_TARGET_MS = 0.5
RATE_TARGET = 60.0
RATE_TARGET_NODES = 30


def text_of(k: int) -> str:
    """The ``k``-th bulletin's text: 1 KiB of ASCII, numbered so each one differs."""
    return (f"bench bulletin {k:08d} " + "lorem ipsum dolor sit amet " * 40)[:TEXT_SIZE]


def rss_bytes() -> int:
    """This process's resident set size now (peak size if /proc is unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def node_config() -> NodeConfig:
    """Short RPC timeouts; long intervals, so no background loop runs during a measurement;
    no discovery, so the sessions are the seeded ones (the peers' topology too)."""
    from meshnode.net.dht import DHTConfig
    from meshnode.net.node import NodeConfig

    hour = 3600.0
    return NodeConfig(
        dht=DHTConfig(
            rpc_timeout=0.5, refresh_interval=hour, republish_interval=hour, save_interval=hour
        ),
        overlay_interval=hour,
        discover_peers=False,
        delivery_interval=hour,
        mail_interval=hour,
        purge_interval=hour,
    )


def wire_bytes(node: Node) -> int:
    """Bytes this node's open sessions have written (Noise framing included)."""
    return sum(p.bytes_sent for p in node.peers())


@dataclass(frozen=True)
class Plan:
    nodes: int
    picks: list[list[int]]
    """For each node, the earlier nodes it dials; the first one's invite is the one it uses."""


def make_plan(nodes: int, seed: int) -> Plan:
    rng = random.Random(seed * 100_003 + nodes)
    return Plan(nodes, [rng.sample(range(i), min(DIAL, i)) for i in range(nodes)])


class _CountingHandler(logging.Handler):
    """Counts warnings and errors by message, so they show as anomalies instead of noise."""

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__(logging.WARNING)
        self._counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        what = f"{record.levelname.lower()} {record.name}: {str(record.msg)[:60]}"
        self._counts[what] = self._counts.get(what, 0) + 1


def count_logs(counts: dict[str, int]) -> None:
    root = logging.getLogger()
    root.handlers = [_CountingHandler(counts)]
    root.setLevel(logging.WARNING)


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed posting run: ``count`` bulletins offered at ``rate`` to ``members``."""

    rate: float
    count: int
    members: int
    posted: dict[str, float] = field(default_factory=dict)
    """Bulletin id (hex) -> when its post call started."""
    arrived: dict[str, dict[int, float]] = field(default_factory=dict)
    """Bulletin id (hex) -> member -> when that member's ``bulletins()`` yielded it."""
    cpu_s: float = 0.0
    """CPU of every node (their processes) from the first post to the end of the run."""
    cpu_by_node: list[float] = field(default_factory=list)
    """With one process per node: each worker's share of ``cpu_s``, node 0 (the poster)
    first; empty in one process."""
    bytes_out: int = 0
    """Gossip payload bytes sent by every node during the run."""
    wire_out: int = 0
    """Session bytes written by every node during the run (Noise framing included)."""
    sizes: list[int] = field(default_factory=list)
    """The length of each posted bulletin's wire encoding (``Bulletin.raw``), in posting
    order: what a member has to receive once."""
    gossip: dict[str, int] = field(default_factory=dict)
    """Every node's gossip counters (``GossipStatistics``) summed, their growth during the run."""
    rss_per_node: float = math.nan
    """Resident memory per node at the end of the run (in one process: growth since
    before the first node opened, divided by the nodes)."""

    def arrive(self, member: int, bid: str, at: float) -> None:
        self.arrived.setdefault(bid, {}).setdefault(member, at)

    def remaining(self) -> int:
        """Deliveries still missing (posts not yet made count as missing too)."""
        held = sum(len(self.arrived.get(b, ())) for b in self.posted)
        return self.count * self.members - held

    @property
    def deliveries(self) -> int:
        return sum(len(self.arrived.get(b, ())) for b in self.posted)

    @property
    def bulletin_size(self) -> float:
        """The mean length of the posted bulletins' wire encoding (NaN if unknown)."""
        return sum(self.sizes) / len(self.sizes) if self.sizes else math.nan

    def latencies(self) -> list[float]:
        return [t - at for b, at in self.posted.items() for t in self.arrived.get(b, {}).values()]

    def to_all(self) -> list[float]:
        """Per bulletin that every member has: post to the last member's arrival."""
        out = []
        for b, at in self.posted.items():
            got = self.arrived.get(b, {})
            if len(got) == self.members:
                out.append(max(got.values()) - at)
        return out

    @property
    def complete(self) -> bool:
        return len(self.posted) == self.count and self.remaining() == 0

    def post_rate(self) -> float:
        times = sorted(self.posted.values())
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else math.nan

    def completion_rate(self) -> float:
        """Bulletins per second reaching every member, between the first and last to do so."""
        done = sorted(
            max(got.values())
            for b in self.posted
            if len(got := self.arrived.get(b, {})) == self.members
        )
        return (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else math.nan

    def sustained(self) -> float:
        """The rate every member received every bulletin at: NaN unless all were delivered."""
        if not self.complete:
            return math.nan
        return min(self.post_rate(), self.completion_rate())


@dataclass
class Result:
    mode: str
    nodes: int
    main: Run | None = None
    ladder: list[Run] = field(default_factory=list)
    rss_per_node: float = math.nan
    setup_s: float = 0.0
    elapsed_s: float = 0.0
    anomalies: dict[str, int] = field(default_factory=dict)
    failed: str | None = None

    def note(self, what: str, count: int = 1) -> None:
        if count:
            self.anomalies[what] = self.anomalies.get(what, 0) + count

    def best_sustained(self) -> tuple[float, float]:
        """(sustained bulletins/s, the offered rate it was reached at); NaN if none was
        complete."""
        best = (math.nan, math.nan)
        for run in [self.main, *self.ladder]:
            if run is not None and run.complete and not run.sustained() <= best[0]:
                best = (run.sustained(), run.rate)
        return best


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ladder_rates(rate: float, factors: Sequence[float]) -> list[float]:
    return [rate * f for f in factors if f > 1]


def keeps_up(run: Run) -> bool:
    return run.complete and run.completion_rate() >= FALLING_BEHIND * run.rate


def gossip_counts(stats: Sequence[Any]) -> dict[str, int]:
    """Each integer counter of ``GossipStatistics`` (records or dicts), summed over nodes."""
    total: dict[str, int] = {}
    for s in stats:
        fields = s if isinstance(s, dict) else {k: getattr(s, k) for k in s.__dataclass_fields__}
        for k, v in fields.items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
    return total


def growth(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def dht_activity(node: Node) -> tuple[int, int]:
    """(datagrams received so far, requests and tasks in flight) of the node's DHT."""
    s = node.dht.statistics()
    return s.datagrams_received, s.pending_requests + s.background_tasks


def settled(history: list[list[tuple[int, int]]]) -> bool:
    """Whether the last two looks, ``QUIET`` apart, saw no traffic and nothing in flight."""
    return len(history) >= 2 and history[-1] == history[-2] and all(b == 0 for _, b in history[-1])


# --- all nodes in this process ------------------------------------------------------------


Rung = tuple[float, int]
"""A run's offered rate (per second) and count of bulletins."""


def _ladder(args: argparse.Namespace) -> Callable[[Run | None, Result], Rung | None]:
    """The measured run and then the ladder, while each run keeps up."""
    schedule = iter(
        [(args.rate, args.count)]
        + [(rate, max(2, round(rate * args.rung))) for rate in ladder_rates(args.rate, args.ladder)]
    )

    def rungs(last: Run | None, result: Result) -> Rung | None:
        return next(schedule, None) if last is None or keeps_up(last) else None

    return rungs


async def _inproc(plan: Plan, args: argparse.Namespace) -> Result:
    step = _ladder(args)

    async def rungs(last: Run | None, result: Result) -> Rung | None:
        return step(last, result)

    return await run_inproc(plan, rungs)


async def run_inproc(
    plan: Plan,
    rungs: Callable[[Run | None, Result], Awaitable[Rung | None]],
    *,
    warmup: int = WARMUP,
    drain: float = DRAIN,
) -> Result:
    """Every node of ``plan`` in this process (one trio loop), then timed runs.

    After the mesh is built and the DHT has settled, ``warmup`` bulletins go out at
    10/s; then ``rungs`` is called with the run before (None the first time) and the
    result so far, and answers the next run's rate and count, or None to stop. The
    first run is the result's ``main``, the others its ``ladder``. A run waits up to
    ``drain`` seconds after its last post for every member to have every bulletin.
    """
    import trio

    from meshnode.launch import open_node

    result = Result("in one process", plan.nodes)
    count_logs(result.anomalies)
    config = node_config()
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="meshbench-")))
        rss0 = rss_bytes()
        nodes: list[Node] = []
        for i in range(plan.nodes):  # (a cancel scope may not span the nodes' nurseries)
            node = await stack.enter_async_context(
                open_node(
                    tmp / f"node{i}", name=f"bench {i}", listen=f"{NET}.{i + 1}:0", config=config
                )
            )
            nodes.append(node)
        with trio.move_on_after(SETUP_TIMEOUT) as setup:
            await nodes[0].create_channel(CHANNEL)
            for i in range(1, plan.nodes):
                first, *others = plan.picks[i]
                await nodes[i].join(await nodes[first].invite(CHANNEL))
                for j in others:
                    await nodes[i].connect(nodes[j].address)
            # Joins bootstrap the DHT and publish records; measure after that traffic.
            looks: list[list[tuple[int, int]]] = []
            while not settled(looks):
                looks.append([dht_activity(n) for n in nodes])
                await trio.sleep(QUIET)
        if setup.cancelled_caught:
            result.failed = f"the mesh was not built and settled within {SETUP_TIMEOUT:g} s"
            return result
        result.setup_s = time.perf_counter() - started
        current: list[Run | None] = [None]
        changed = trio.Event()

        async def follow(i: int) -> None:
            nonlocal changed
            async for record in nodes[i].bulletins(CHANNEL, follow=True):
                run = current[0]
                if run is not None:
                    run.arrive(i, record.id.hex(), time.perf_counter())
                    changed.set()
                    changed = trio.Event()

        async def timed(rate: float, count: int) -> Run:
            run = Run(rate, count, plan.nodes - 1)
            current[0] = run
            bytes0 = sum(n.gossip.statistics().bytes_out for n in nodes)
            wire0 = sum(wire_bytes(n) for n in nodes)
            counts0 = gossip_counts([n.gossip.statistics() for n in nodes])
            cpu0 = time.process_time()
            start = trio.current_time() + 0.05
            for k in range(count):
                await trio.sleep_until(start + k / rate)
                at = time.perf_counter()
                record = await nodes[0].post(CHANNEL, text_of(k))
                run.posted[record.id.hex()] = at
            with trio.move_on_after(drain):
                while run.remaining():
                    await changed.wait()
            run.cpu_s = time.process_time() - cpu0
            run.bytes_out = sum(n.gossip.statistics().bytes_out for n in nodes) - bytes0
            run.wire_out = sum(wire_bytes(n) for n in nodes) - wire0
            run.gossip = growth(gossip_counts([n.gossip.statistics() for n in nodes]), counts0)
            run.rss_per_node = (rss_bytes() - rss0) / plan.nodes
            current[0] = None
            run.sizes = posted_sizes(nodes[0], run.posted)
            return run

        async with trio.open_nursery() as nursery:
            for i in range(1, plan.nodes):
                nursery.start_soon(follow, i)
            if warmup:
                warm = await timed(10.0, warmup)
                if not warm.complete:
                    result.note("warm-up bulletins missing", warm.remaining())
            last: Run | None = None
            while (rung := await rungs(last, result)) is not None:
                last = await timed(*rung)
                if result.main is None:
                    result.main = last
                else:
                    result.ladder.append(last)
            result.rss_per_node = (rss_bytes() - rss0) / plan.nodes
            _collect(result, [n.gossip.statistics() for n in nodes])
            nursery.cancel_scope.cancel()
    result.elapsed_s = time.perf_counter() - started
    return result


def _collect(result: Result, stats: Sequence[Any]) -> None:
    """Gossip counters that show trouble, summed over the nodes."""
    for name in ("invalid", "rejected", "want_timeouts", "want_overflows", "outbox_drops",
                 "overloaded", "offences", "drops"):  # fmt: skip
        result.note(f"gossip {name}", sum(getattr(s, name) for s in stats))


def posted_sizes(node: Node, posted: Iterable[str]) -> list[int]:
    """The wire length of each bulletin (id in hex) as ``node`` stored it when posting."""
    sizes = []
    for bid in posted:
        stored = node.archive.store.get(bytes.fromhex(bid))
        if stored is not None:
            sizes.append(len(stored.raw))
    return sizes


# --- one node per process -----------------------------------------------------------------


async def stdin_lines() -> AsyncIterator[Any]:
    """The JSON documents on this process's stdin, one a line, until it closes (in trio)."""
    import trio

    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = await stdin.receive_some(65536)
            if not data:
                return
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        yield json.loads(line)


async def _worker_main(args: argparse.Namespace) -> None:
    import trio

    from meshnode.launch import open_node

    anomalies: dict[str, int] = {}
    count_logs(anomalies)
    out = sys.stdout

    def say(**doc: Any) -> None:
        out.write(json.dumps(doc) + "\n")
        out.flush()

    arrivals: list[tuple[str, float]] = []

    with trio.move_on_after(WORKER_LIFETIME), tempfile.TemporaryDirectory() as tmp:
        async with open_node(
            Path(tmp) / "node", name=args.name, listen=f"{args.host}:0", config=node_config()
        ) as node, trio.open_nursery() as nursery:  # fmt: skip
            expected = [math.inf]
            """Arrivals to gather before reporting them: set by "expect", so the
            worker writes once per run instead of waking on a timer to report."""

            def report(**flags: bool) -> None:
                say(arrived=arrivals[:], **flags)
                arrivals.clear()
                expected[0] = math.inf

            async def follow() -> None:
                async for record in node.bulletins(CHANNEL, follow=True):
                    arrivals.append((record.id.hex(), time.time()))
                    if len(arrivals) >= expected[0]:
                        report()

            async def post(rate: float, count: int) -> None:
                posted = []
                start = trio.current_time() + 0.05
                for k in range(count):
                    await trio.sleep_until(start + k / rate)
                    at = time.time()
                    record = await node.post(CHANNEL, text_of(k))
                    posted.append((record.id.hex(), at))
                say(posted=posted, sizes=posted_sizes(node, [b for b, _ in posted]))

            say(ready=True, address=node.address)
            async for cmd in stdin_lines():
                match cmd["cmd"]:
                    case "create":  # (the poster: like node 0 in one process, it follows nothing)
                        await node.create_channel(CHANNEL)
                        say(ok=True)
                    case "invite":
                        say(invite=await node.invite(CHANNEL))
                    case "join":
                        await node.join(cmd["code"])
                        nursery.start_soon(follow)
                        say(ok=True)
                    case "connect":
                        await node.connect(cmd["address"])
                        say(ok=True)
                    case "post":
                        nursery.start_soon(post, cmd["rate"], cmd["count"])
                    case "expect":  # (what arrived before belongs to a finished run)
                        arrivals.clear()
                        expected[0] = cmd["count"]
                    case "report":
                        report(asked=True)
                    case "mark":
                        usage = resource.getrusage(resource.RUSAGE_SELF)
                        say(
                            cpu=usage.ru_utime + usage.ru_stime,
                            rss=rss_bytes(),
                            bytes_out=node.gossip.statistics().bytes_out,
                            wire_out=wire_bytes(node),
                            stats=_public_stats(node),
                            dht=dht_activity(node),
                            anomalies=anomalies,
                        )
                    case "quit":
                        break
            nursery.cancel_scope.cancel()


def _public_stats(node: Node) -> dict[str, int]:
    s = node.gossip.statistics()
    return {k: int(getattr(s, k)) for k in s.__dataclass_fields__}


class Worker:
    """One node in a child process: commands go in on stdin, JSON lines come out."""

    def __init__(
        self,
        index: int,
        events: queue.Queue[tuple[int, dict[str, Any]]],
        argv: Sequence[str] = (),
    ) -> None:
        """Start node ``index``'s worker, or the program ``argv`` when given (it speaks
        the same JSON lines: replies, and "arrived" or "posted" events)."""
        self.index = index
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc = subprocess.Popen(
            list(argv) or [sys.executable, str(Path(__file__).resolve()), "--worker",
                           "--host", f"{NET}.{index + 1}", "--name", f"bench {index}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self._thread = threading.Thread(
            target=self._read, args=(self.proc.stdout, events), daemon=True
        )
        self._thread.start()

    def _read(self, stream: IO[str], events: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
        for line in stream:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "arrived" in doc or "posted" in doc:
                events.put((self.index, doc))
            else:
                self.replies.put(doc)
        self.replies.put({"error": "the worker exited"})

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, timeout: float, **cmd: Any) -> dict[str, Any]:
        if cmd:
            self.send(**cmd)
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"worker {self.index}: no answer to {cmd} in {timeout:g} s"
            ) from None
        if "error" in reply:
            raise RuntimeError(f"worker {self.index}: {reply['error']}")
        return reply

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(cmd="quit")
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _procs(plan: Plan, args: argparse.Namespace) -> Result:
    return run_procs(plan, _ladder(args))


def run_procs(
    plan: Plan,
    rungs: Callable[[Run | None, Result], Rung | None],
    *,
    warmup: int = WARMUP,
    drain: float = DRAIN,
) -> Result:
    """Every node of ``plan`` in a worker process of its own, then timed runs.

    The same sequence as :func:`run_inproc` (warm-up, then the runs ``rungs`` asks
    for, the first being the result's ``main``), with ``rungs`` a plain function. A
    run's CPU is the sum over the workers of their process time (every thread).
    """
    result = Result("one process per node", plan.nodes)
    events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
    started = time.perf_counter()
    workers: list[Worker] = []
    try:
        workers = [Worker(i, events) for i in range(plan.nodes)]
        addresses = [w.ask(SETUP_TIMEOUT)["address"] for w in workers]
        workers[0].ask(SETUP_TIMEOUT, cmd="create")
        for i in range(1, plan.nodes):
            first, *others = plan.picks[i]
            code = workers[first].ask(SETUP_TIMEOUT, cmd="invite")["invite"]
            workers[i].ask(SETUP_TIMEOUT, cmd="join", code=code)
            for j in others:
                workers[i].ask(SETUP_TIMEOUT, cmd="connect", address=addresses[j])

        def marks() -> list[dict[str, Any]]:
            for w in workers:
                w.send(cmd="mark")
            return [w.ask(SETUP_TIMEOUT) for w in workers]

        looks: list[list[tuple[int, int]]] = []
        settle_by = time.monotonic() + SETUP_TIMEOUT
        while not settled(looks):
            if time.monotonic() > settle_by:
                raise RuntimeError(f"the DHT did not settle within {SETUP_TIMEOUT:g} s")
            looks.append([(m["dht"][0], m["dht"][1]) for m in marks()])
            time.sleep(QUIET)
        result.setup_s = time.perf_counter() - started

        def timed(rate: float, count: int) -> Run:
            run = Run(rate, count, plan.nodes - 1)
            before = marks()
            for w in workers[1:]:
                w.send(cmd="expect", count=count)
            workers[0].send(cmd="post", rate=rate, count=count)
            deadline = time.monotonic() + count / rate + drain + 1.0
            posted = False
            asked = 0

            def take(index: int, doc: dict[str, Any]) -> None:
                nonlocal posted, asked
                if "posted" in doc:
                    run.posted.update({b: at for b, at in doc["posted"]})
                    run.sizes = list(doc.get("sizes", ()))
                    posted = True
                elif index != 0:
                    asked += bool(doc.get("asked"))
                    for b, at in doc["arrived"]:
                        run.arrive(index, b, at)

            while time.monotonic() < deadline and not (posted and run.remaining() == 0):
                try:
                    take(*events.get(timeout=max(0.01, deadline - time.monotonic())))
                except queue.Empty:
                    break
            if not posted:  # the poster fell behind its schedule: give it as long again
                late = time.monotonic() + max(drain, count / rate)
                while not posted and time.monotonic() < late:
                    with contextlib.suppress(queue.Empty):
                        take(*events.get(timeout=max(0.01, late - time.monotonic())))
                drained = time.monotonic() + drain
                while posted and run.remaining() and time.monotonic() < drained:
                    with contextlib.suppress(queue.Empty):
                        take(*events.get(timeout=max(0.01, drained - time.monotonic())))
                if not posted:
                    result.note("poster still posting when its run was counted")
            if run.remaining():  # members report a run once they have it all: ask the others
                for w in workers[1:]:
                    w.send(cmd="report")
                with contextlib.suppress(queue.Empty):
                    while asked < len(workers) - 1:
                        take(*events.get(timeout=DRAIN))
            after = marks()
            pairs = list(zip(after, before, strict=True))
            run.cpu_by_node = [a["cpu"] - b["cpu"] for a, b in pairs]
            run.cpu_s = sum(run.cpu_by_node)
            run.bytes_out = sum(a["bytes_out"] - b["bytes_out"] for a, b in pairs)
            run.wire_out = sum(a["wire_out"] - b["wire_out"] for a, b in pairs)
            run.gossip = growth(
                gossip_counts([a["stats"] for a in after]),
                gossip_counts([b["stats"] for b in before]),
            )
            return run

        if warmup:
            warm = timed(10.0, warmup)
            if not warm.complete:
                result.note("warm-up bulletins missing", warm.remaining())
        last: Run | None = None
        while (rung := rungs(last, result)) is not None:
            last = timed(*rung)
            if result.main is None:
                result.main = last
            else:
                result.ladder.append(last)
        final = marks()
        result.rss_per_node = sum(m["rss"] for m in final) / len(final)
        for m in final:
            for what, n in m["anomalies"].items():
                result.note(what, n)
        _collect(result, [argparse.Namespace(**m["stats"]) for m in final])
    except RuntimeError as exc:
        result.failed = str(exc)
    finally:
        for w in workers:
            w.stop()
    result.elapsed_s = time.perf_counter() - started
    return result


# --- the table ------------------------------------------------------------------------------


def _fig(value: float, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"


COLUMNS = (
    ("mode", 20), ("nodes", 5), ("rate/s", 6), ("delivered", 12), ("p50 ms", 7),
    ("p99 ms", 7), ("all p50", 7), ("all p99", 7), ("sustained/s", 11), ("B/deliv", 7),
    ("wire B", 7), ("CPU ms", 6), ("RSS MiB", 7),
)  # fmt: skip


def row(r: Result) -> tuple[str, float, float]:
    """The table row, CPU ms per delivery and sustained rate."""
    run = r.main
    if run is None:
        cells = [r.mode, str(r.nodes), *(["-"] * (len(COLUMNS) - 2))]
        return _join(cells), math.nan, math.nan
    lat = [x * 1000 for x in run.latencies()]
    every = [x * 1000 for x in run.to_all()]
    deliveries = run.deliveries
    cpu_ms = run.cpu_s * 1000 / deliveries if deliveries else math.nan
    sustained, at = r.best_sustained()
    per = run.bytes_out / deliveries if deliveries else math.nan
    wire = run.wire_out / deliveries if deliveries else math.nan
    cells = [
        r.mode, str(r.nodes), f"{run.rate:g}", f"{deliveries}/{run.count * run.members}",
        _fig(percentile(lat, 50), 0, 1), _fig(percentile(lat, 99), 0, 1),
        _fig(percentile(every, 50), 0, 1), _fig(percentile(every, 99), 0, 1),
        _fig(sustained, 0, 0) + ("" if math.isnan(at) else f" @{at:g}"),
        _fig(per, 0, 0), _fig(wire, 0, 0), _fig(cpu_ms, 0, 3),
        _fig(r.rss_per_node / 2**20, 0, 1),
    ]  # fmt: skip
    return _join(cells), cpu_ms, sustained


def _join(cells: Sequence[str]) -> str:
    out = []
    for (name, width), cell in zip(COLUMNS, cells, strict=True):
        w = max(width, len(name))
        out.append(f"{cell:<{w}}" if name == "mode" else f"{cell.strip():>{w}}")
    return " ".join(out)


def report(results: Sequence[Result], args: argparse.Namespace) -> tuple[str, bool]:
    lines = [_join([name for name, _ in COLUMNS])]
    lines.append("-" * len(lines[0]))
    rate_ok = True
    rate_seen = False
    cpu_by_mode: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        text, cpu_ms, sustained = row(r)
        lines.append(text)
        cpu_by_mode.setdefault(r.mode, []).append((r.nodes, cpu_ms))
        if r.mode == "in one process" and r.nodes == RATE_TARGET_NODES:
            rate_seen = True
            rate_ok &= not math.isnan(sustained) and sustained >= RATE_TARGET
    lines.append("")
    verdicts = []
    cpu_ok = True
    for mode, figures in cpu_by_mode.items():
        passed = all(not math.isnan(ms) and ms <= CPU_TARGET_MS for _, ms in figures)
        cpu_ok &= passed
        listed = ", ".join(f"{n} nodes {_fig(ms, 0, 3).strip()}" for n, ms in figures)
        verdicts.append(
            f"target CPU per delivery <= {CPU_TARGET_MS} ms, {mode}: "
            + ("PASS" if passed else "MISS")
            + f" ({listed})"
        )
    if rate_seen:
        verdicts.append(
            f"target >= {RATE_TARGET:g} bulletins/s to {RATE_TARGET_NODES} in-process members, "
            "every one delivered: " + ("PASS" if rate_ok else "MISS")
        )
    else:
        rate_ok = True
        verdicts.append(
            f"target >= {RATE_TARGET:g} bulletins/s: not measured "
            f"(needs --sizes with {RATE_TARGET_NODES} and the in-process mode)"
        )
    lines.extend(verdicts)
    lines.append("")
    lines.append("Runs (offered rate: delivered, completion rate) and anomalies:")
    for r in results:
        runs = [x for x in [r.main, *r.ladder] if x is not None]
        listed = ", ".join(
            f"{x.rate:g}/s: {x.deliveries}/{x.count * x.members}"
            f" at {_fig(x.completion_rate(), 0, 0).strip()}/s"
            for x in runs
        )
        odd = ", ".join(f"{k}: {v}" for k, v in sorted(r.anomalies.items()) if v) or "none"
        lines.append(
            f"  {r.mode}, {r.nodes} nodes (setup {r.setup_s:.1f} s, {r.elapsed_s:.1f} s in all):"
            f" {listed or '-'}; anomalies: {odd}" + (f"; FAILED: {r.failed}" if r.failed else "")
        )
    ok = cpu_ok and rate_ok and all(r.failed is None for r in results)
    return "\n".join(lines), ok


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if not sizes or not all(2 <= s <= MAX_NODES for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes are 2 to {MAX_NODES} nodes")
    return sizes


def _factors(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s.strip()]


def _modes(text: str) -> list[str]:
    modes = [s.strip() for s in text.split(",") if s.strip()]
    if not modes or not set(modes) <= {"inproc", "procs"}:
        raise argparse.ArgumentTypeError("modes are inproc and procs")
    return modes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[10, 30], help="default 10,30")
    parser.add_argument(
        "--modes", type=_modes, default=["inproc", "procs"], help="inproc,procs (default both)"
    )
    parser.add_argument("--rate", type=float, default=60.0, help="bulletins/s (default 60)")
    parser.add_argument("--count", type=int, default=300, help="bulletins per run (default 300)")
    parser.add_argument(
        "--ladder",
        type=_factors,
        default=[1.5, 2, 3, 4],
        help="higher rates tried after the run, as multiples of --rate (default 1.5,2,3,4; "
        "'' for none)",
    )
    parser.add_argument(
        "--rung", type=float, default=2.0, help="seconds of posting per ladder rung (default 2)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the topology")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if a target is missed"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 10_000 or not 2 <= args.count <= 100_000 or not 0 < args.rung <= 30:
        parser.error("--rate is up to 10000, --count 2 to 100000, --rung up to 30 s")

    import trio

    if args.worker:
        trio.run(_worker_main, args)
        return 0
    print(
        f"Bulletin delivery on loopback: one channel, node 0 posts 1 KiB bulletins; each node "
        f"dials {DIAL} random earlier ones (seed {args.seed}); {args.count} bulletins at "
        f"{args.rate:g}/s, then a ladder of {args.rung:g}-s rungs",
        flush=True,
    )
    results: list[Result] = []
    for size in args.sizes:
        plan = make_plan(size, args.seed)
        for mode in args.modes:
            if mode == "inproc":
                results.append(trio.run(_inproc, plan, args))
            else:
                results.append(_procs(plan, args))
            print(f"  done: {results[-1].mode}, {size} nodes, {results[-1].elapsed_s:.1f} s",
                  flush=True)  # fmt: skip
    text, ok = report(results, args)
    print(text)
    print(LEGEND)
    return 1 if args.strict and not ok else 0


LEGEND = """
Columns: rate/s, the offered rate of the measured run; delivered, (member, bulletin)
arrivals out of count x members (node 0 posts and is not counted); p50/p99 ms, post call
to a member's bulletins() yielding it, per delivery; all p50/p99, post to the last
member having it, per bulletin; sustained/s, the highest rate (run or ladder rung, @ its
offered rate) at which every member got every bulletin: min(posting rate, rate of
completions); B/deliv, gossip payload bytes sent by all nodes per delivery; wire B, the
same on the sessions (Noise framing and keepalives included); CPU ms, CPU of all nodes'
processes during the run per delivery (in one process, the benchmark's bookkeeping too);
RSS MiB, resident memory per node (in one process: growth since before the first node
opened, divided by the nodes)."""


if __name__ == "__main__":
    sys.exit(main())
