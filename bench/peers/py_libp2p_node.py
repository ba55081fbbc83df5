"""py-libp2p GossipSub nodes for bench/peers: every node in this process, on one trio loop.

Run by bench/peers/run.py with the interpreter of bench/peers/.venv-libp2p (which has
``libp2p`` and not meshnode); it imports only the standard-library helpers of
bench/mesh.py. Node ``i`` listens on 127.0.0.1 (every node shares the address) and
dials the nodes ``--picks`` names; every node subscribes to one topic and node 0
publishes. It speaks JSON lines: ``{"ready": ...}`` once the meshes are grafted, then
for each command ``{"rate", "count", "first"}`` on stdin one ``{"run": ...}``
(see run.py's ``Child``), until stdin closes.

The GossipSub parameters are the ones every implementation in the comparison gets:
D = 6 (4 to 12), a 1 s heartbeat, strict signing, Noise and yamux, publishing to mesh
peers only, scoring that cannot demote a peer, no per-address limits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mesh import count_logs, rss_bytes, stdin_lines, text_of

TOPIC = "bench"
PROTOCOLS = ("/meshsub/1.2.0", "/meshsub/1.1.0", "/meshsub/1.0.0")
GOSSIPSUB: dict[str, Any] = {
    "degree": 6,
    "degree_low": 4,
    "degree_high": 12,
    "heartbeat_interval": 1,
    "heartbeat_initial_delay": 0.1,
    # Publishing goes to mesh peers: py-libp2p has no flood publishing.
    # Off: a per-forwarder cap of 10 messages/s per topic that drops the rest,
    # mesh-size and gossip changes driven by its own health score, and the IP
    # diversity checks (every node here shares 127.0.0.1).
    "spam_protection_enabled": False,
    "adaptive_gossip_enabled": False,
    "eclipse_protection_enabled": False,
}
KEY_OFFSET = 1_000_000
"""Message ``k`` is ``text_of(k)``; its number is read back from its bytes 15 to 23."""


def say(**doc: Any) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``'s groups, however deep."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def count_wire_bytes() -> list[int]:
    """Count every byte py-libp2p writes to a TCP stream (Noise and yamux framing included)."""
    from libp2p.io.trio import TrioTCPStream

    total = [0]
    write = TrioTCPStream.write

    async def counted(self: TrioTCPStream, data: bytes) -> None:
        total[0] += len(data)
        await write(self, data)

    TrioTCPStream.write = counted  # type: ignore[method-assign]  # (to count its bytes)
    return total


async def main(args: argparse.Namespace) -> None:
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.pubsub.gossipsub import GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.pubsub.score import ScoreParams
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux
    from libp2p.tools.anyio_service import background_trio_service

    anomalies: dict[str, int] = {}
    count_logs(anomalies)
    logging.getLogger("libp2p").propagate = True  # (its own setup stops them at "libp2p")
    picks: list[list[int]] = json.loads(args.picks)
    n = len(picks)
    wire = count_wire_bytes()
    rss0 = rss_bytes()
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    # (`arrived[m][k]`: when member m's subscription yielded message k.)
    arrived: list[dict[int, float]] = [{} for _ in range(n)]
    window = {"first": 0, "end": 0, "held": 0}
    """The run's messages, and their deliveries so far."""
    changed = trio.Event()

    async def follow(i: int, subscription: Any) -> None:
        async for message in subscription:
            k = int(message.data[15:23])
            if i and k not in arrived[i]:
                arrived[i][k] = time.perf_counter()
                if window["first"] <= k < window["end"]:
                    window["held"] += 1
                    changed.set()

    with trio.move_on_after(args.lifetime):
        async with contextlib.AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            hosts, pubsubs = [], []
            for i in range(n):
                key = create_new_key_pair()
                host = new_host(
                    key_pair=key,
                    sec_opt={
                        NOISE_ID: NoiseTransport(
                            key, noise_privkey=create_x25519_key_pair().private_key
                        )
                    },
                    muxer_opt={YAMUX_ID: Yamux},
                    listen_addrs=[listen],
                )
                router = GossipSub(
                    protocols=list(PROTOCOLS),
                    # Every weight 0 and every threshold -inf: no score ever gates a peer.
                    score_params=ScoreParams(),
                    **GOSSIPSUB,
                )
                pubsub = Pubsub(host, router, strict_signing=True)
                await stack.enter_async_context(host.run([listen]))
                await stack.enter_async_context(background_trio_service(pubsub))
                await stack.enter_async_context(background_trio_service(router))
                await pubsub.wait_until_ready()
                nursery.start_soon(follow, i, await pubsub.subscribe(TOPIC))
                hosts.append(host)
                pubsubs.append(pubsub)
            for i, earlier in enumerate(picks):
                for j in earlier:
                    await hosts[i].connect(PeerInfo(hosts[j].get_id(), hosts[j].get_addrs()))
            degree = [0] * n
            for i, earlier in enumerate(picks):
                for j in earlier:
                    degree[i] += 1
                    degree[j] += 1
            with trio.fail_after(args.setup_timeout):  # (py-libp2p has no event for this)
                while any(  # noqa: ASYNC110
                    len(p.peer_topics.get(TOPIC, ())) < d
                    for p, d in zip(pubsubs, degree, strict=True)
                ):
                    await trio.sleep(0.05)
            await trio.sleep(2 * GOSSIPSUB["heartbeat_interval"])  # (the meshes graft)
            say(ready={"impl": "py-libp2p", "version": version("libp2p")})

            async for cmd in stdin_lines():
                if "rate" not in cmd:  # ({"cmd": "quit"})
                    break
                rate, count, first = float(cmd["rate"]), int(cmd["count"]), int(cmd["first"])
                posted: list[float] = []
                for m in arrived:
                    m.clear()
                window.update(first=first, end=first + count, held=0)
                cpu0, wire0 = time.process_time(), wire[0]
                start = trio.current_time() + 0.05
                for k in range(count):
                    await trio.sleep_until(start + k / rate)
                    posted.append(time.perf_counter())
                    await pubsubs[0].publish(TOPIC, text_of(first + k).encode())
                with trio.move_on_after(args.drain):
                    while window["held"] < count * (n - 1):
                        changed = trio.Event()
                        await changed.wait()
                say(
                    run={
                        "posted": posted,
                        "arrivals": [
                            [i, k - first, t]
                            for i, m in enumerate(arrived)
                            for k, t in m.items()
                            if first <= k < first + count
                        ],
                        "cpu_s": time.process_time() - cpu0,
                        "wire_bytes": wire[0] - wire0,
                        "rss_per_node": (rss_bytes() - rss0) / n,
                        "anomalies": anomalies,
                    }
                )
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--picks", required=True, help="JSON: for each node, the nodes it dials")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait after a run")
    parser.add_argument("--setup-timeout", type=float, default=60.0)
    parser.add_argument("--lifetime", type=float, default=900.0, help="exit after this long")
    import trio

    logging.getLogger().setLevel(logging.WARNING)
    try:
        trio.run(main, parser.parse_args())
    except Exception as exc:  # (one line for the driver, not ten nested groups)
        say(error="; ".join(f"{type(e).__name__}: {e}" for e in leaves(exc)))
        sys.exit(1)
