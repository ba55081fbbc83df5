"""A node is no amplifier: until an address has answered one of our requests, no reply to
it is more than 3× its request, and no record is pushed to it.

Network rules: real DHT nodes on 127.0.0.x with port 0, and a raw UDP socket of the
test's playing the attacker (a forged source would be a third party's address)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from meshnode.core import codec, records
from meshnode.net.dht import AMPLIFICATION, HEADER_SIZE, MAX_DATAGRAM, open_dht
from tests.conftest import make_identity
from tests.integration.test_dht import FAST, _distance, _nodes, _raw, _request

if TYPE_CHECKING:
    import socket


async def _receive(sock: socket.socket) -> tuple[int, str, bytes, int]:
    """The next datagram: its kind (0 request, 1 response), its rpc name if a request,
    its message id and its size."""
    await trio.lowlevel.wait_readable(sock)
    data = sock.recv(MAX_DATAGRAM)
    body = codec.unpack(data[HEADER_SIZE:], max_map=1)
    name = body[0] if data[0] == 0 and isinstance(body, list) else ""
    return data[0], str(name), data[1:HEADER_SIZE], len(data)


async def test_replies_to_an_unverified_address_are_cut_to_three_times_the_request() -> None:
    with trio.fail_after(30):
        async with _nodes(12, first_host=140) as nodes:
            target = nodes[0]
            with _raw("127.0.0.159") as attacker:
                attacker.setblocking(False)
                request = _request("find_node", bytes(20), bytes(20))
                attacker.sendto(request, ("127.0.0.140", target.port))
                cut, pinged = 0, b""
                while not (cut and pinged):
                    kind, _, msg_id, size = await _receive(attacker)
                    if kind == 1:
                        cut = size
                    else:  # the node checks that the address is ours
                        pinged = msg_id
                assert cut <= AMPLIFICATION * len(request)
                # Answering its ping verifies the address: the next reply is whole.
                answer = b"\x01" + pinged + codec.pack(bytes(20))
                attacker.sendto(answer, ("127.0.0.140", target.port))
                attacker.sendto(request, ("127.0.0.140", target.port))
                kind, _, _, whole = await _receive(attacker)
                assert kind == 1
                assert whole > cut


async def test_a_ping_from_a_new_id_pushes_no_store_until_the_address_answers() -> None:
    owner = make_identity("amplifier owner")
    key = records.contact_key(owner.public_key)
    owner_id = records.node_id(owner.public_key)
    # An id closer to the owner's record than the owner itself: the stock welcome
    # would push the record to whoever claims it.
    candidates = (bytes([n]) * 20 for n in range(256))
    closer = next(i for i in candidates if _distance(i, key) < _distance(owner_id, key))
    with trio.fail_after(30):
        async with open_dht(owner, "127.0.0.170", config=FAST) as node:
            assert await node.publish_contact(["127.0.0.170:7447"]) >= 0
            there = ("127.0.0.170", node.port)
            with _raw("127.0.0.179") as attacker:
                attacker.setblocking(False)
                attacker.sendto(_request("ping", closer), there)
                seen: list[str] = []
                verify_id = None
                while verify_id is None:
                    kind, name, msg_id, _ = await _receive(attacker)
                    seen.append(name)
                    if kind == 0 and name == "ping":
                        verify_id = msg_id
                # Silence: the address never answers, so no STORE ever comes. A second
                # round trip bounds the wait: anything spawned with the welcome is sent
                # before its answer.
                attacker.sendto(_request("find_node", closer, bytes(20)), there)
                while True:
                    kind, name, _, _ = await _receive(attacker)
                    seen.append(name)
                    if kind == 1 and len(seen) >= 3:
                        break
                assert "store" not in seen
                # Answering the check is what earns the push (the test can see one).
                attacker.sendto(b"\x01" + verify_id + codec.pack(closer), there)
                while "store" not in seen:
                    _, name, _, _ = await _receive(attacker)
                    seen.append(name)


async def test_a_new_id_whose_first_answer_was_cut_is_pushed_its_records_once_it_answers() -> None:
    """A new address's first request may be answered cut, and that address pinged: the
    welcome waits for the same ping, then pushes what the newcomer should hold."""
    owner = make_identity("cut owner")
    key = records.contact_key(owner.public_key)
    owner_id = records.node_id(owner.public_key)
    candidates = (bytes([n]) * 20 for n in range(256))
    closer = next(i for i in candidates if _distance(i, key) < _distance(owner_id, key))
    # Four long addresses: the record is too big to send whole to an unverified address.
    addresses = [f"{'a' * 100}{n}.example:7447" for n in range(4)]
    with trio.fail_after(30):
        async with open_dht(owner, "127.0.0.172", config=FAST) as node:
            assert await node.publish_contact(addresses) >= 0
            there = ("127.0.0.172", node.port)
            with _raw("127.0.0.177") as newcomer:
                newcomer.setblocking(False)
                request = _request("find_value", closer, key)
                newcomer.sendto(request, there)
                verify_id, cut = None, 0
                while verify_id is None or not cut:
                    kind, name, msg_id, size = await _receive(newcomer)
                    if kind == 1:
                        cut = size
                    elif name == "ping":
                        verify_id = msg_id
                assert cut <= AMPLIFICATION * len(request)
                newcomer.sendto(b"\x01" + verify_id + codec.pack(closer), there)
                name = ""
                while name != "store":
                    _, name, _, _ = await _receive(newcomer)
