"""A stock ``kademlia.network.Server`` (the unmodified package, asyncio), driven by JSON lines.

``tests/integration/test_dht.py`` runs it with ``sys.executable`` in its own
process, so nothing of meshnode (or trio) is loaded here. Usage::

    python stock_kademlia_node.py HOST RPC_TIMEOUT

It prints ``{"port": N}`` once listening, then answers one JSON line per
command line on stdin: ``bootstrap``, ``ping``, ``find_node``, ``set``,
``routing`` and ``quit``. Byte strings travel as hex.
"""

from __future__ import annotations

import asyncio
import json
import sys

from kademlia.network import Server


async def _command(server: Server, cmd: dict[str, object]) -> dict[str, object]:
    op = cmd["op"]
    protocol = server.protocol
    if op == "bootstrap":
        found = await server.bootstrap([tuple(a) for a in cmd["addrs"]])  # type: ignore[attr-defined]
        return {"found": [[n.id.hex(), n.ip, n.port] for n in found]}
    if op == "ping":
        ok, answer = await protocol.ping(tuple(cmd["addr"]), server.node.id)  # type: ignore[arg-type]
        return {"ok": ok, "id": answer.hex() if ok else None}
    if op == "find_node":
        target = bytes.fromhex(cmd["target"])  # type: ignore[arg-type]
        ok, answer = await protocol.find_node(tuple(cmd["addr"]), server.node.id, target)  # type: ignore[arg-type]
        return {"ok": ok, "nodes": [[i.hex(), h, p] for i, h, p in answer] if ok else None}
    if op == "set":
        return {"stored": bool(await server.set(cmd["key"], cmd["value"]))}
    if op == "routing":
        neighbours = protocol.router.find_neighbors(server.node)
        return {"routing": [[n.id.hex(), n.ip, n.port] for n in neighbours]}
    raise ValueError(f"unknown op {op!r}")


async def main(host: str, rpc_timeout: float) -> None:
    server = Server()
    await server.listen(0, interface=host)
    server.protocol._wait_timeout = rpc_timeout  # rpcudp's own constructor parameter
    port = server.transport.get_extra_info("sockname")[1]
    print(json.dumps({"port": port, "id": server.node.id.hex()}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        print(json.dumps(await _command(server, cmd)), flush=True)
    server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
