"""Any bytes on a daemon's control socket get an answer or a closed connection, never a
dead daemon (issue 11). Each attack is sent raw over the socket of a real daemon; after
all of them the same daemon still answers ``status``.

Network-test rules: those of tests/system/daemons.py (one daemon on loopback, stopped in
the fixture's teardown; every socket read has a deadline).
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any

import pytest

from meshnode import control
from meshnode.client import socket_path
from meshnode.core import codec
from tests.system.daemons import Daemon, Mesh, control_frames

if TYPE_CHECKING:
    from collections.abc import Callable

DEADLINE = 30.0


def _key(text: str) -> bytes:
    return codec.pack(text)


def _request(op: str, args_body: bytes, arg_count: int = 1) -> bytes:
    """A request map whose argument map is given as raw msgpack (for shapes that
    :func:`codec.pack` would refuse to build, or too deep for it)."""
    return (
        b"\x83"
        + _key("v") + codec.pack(1)
        + _key("op") + _key(op)
        + _key("args") + bytes([0x80 | arg_count]) + args_body
    )  # fmt: skip


def _framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


ATTACKS: dict[str, bytes] = {
    "send to the integer 1": control.frame(
        {"v": 1, "op": "send", "args": {"recipients": [1], "text": "hi"}}
    ),
    "send to a 3-byte key": control.frame(
        {"v": 1, "op": "send", "args": {"recipients": [b"abc"], "text": "hi"}}
    ),
    "arguments nested 900 deep": _framed(
        _request("send", _key("recipients") + b"\x91" * 900 + b"\xc0")
    ),
    "records nested 900 deep": _framed(
        _request("post", _key("text") + (b"\x81" + _key("$type")) * 900 + b"\xc0")
    ),
    "a record type that is a list": control.frame(
        {"v": 1, "op": "post", "args": {"text": {"$type": [1]}}}
    ),
    "version true": control.frame({"v": True, "op": "status", "args": {}}),
    "expires true": control.frame(
        {"v": 1, "op": "post_public", "args": {"text": "hi", "expires": True}}
    ),
    "expires past 64 bits": control.frame(
        {"v": 1, "op": "post_public", "args": {"text": "hi", "expires": 2**64 - 1}}
    ),
    "limit -1": control.frame({"v": 1, "op": "read", "args": {"limit": -1}}),
    "follow as text": control.frame({"v": 1, "op": "status", "args": {"follow": "yes"}}),
    "a frame that is not a map": control.frame([1, 2, 3]),  # type: ignore[arg-type]
    "a frame that is not msgpack": _framed(b"\xc1\xc1"),
    "an unknown operation": control.frame({"v": 1, "op": "nope", "args": {}}),
    "a length over the limit": struct.pack(">I", control.MAX_FRAME + 1),
}


def _exchange(daemon: Daemon, data: bytes) -> list[dict[str, Any]]:
    """Send ``data`` raw, close our side, and read every frame until the daemon closes."""
    received = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(str(socket_path(daemon.data_dir)))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    return control_frames(bytes(received))


@pytest.fixture
def daemon(make_mesh: Callable[[int], Mesh]) -> Daemon:
    net = make_mesh(150)
    target = net.add("target")
    net.start([target])
    return target


def test_malformed_requests_get_a_typed_error_and_the_daemon_lives(daemon: Daemon) -> None:
    for name, data in ATTACKS.items():
        frames = _exchange(daemon, data)
        assert frames, name
        *items, last = frames
        assert not items, name
        assert last["ok"] is False, name
        assert last["error"]["type"] == "ControlProtocolError", (name, last)
        assert daemon.running, f"the daemon died of {name!r}:\n{daemon.log_tail()}"
    assert daemon.client.status().address == daemon.address


def test_cut_requests_close_the_connection_and_the_daemon_lives(daemon: Daemon) -> None:
    whole = ATTACKS["send to the integer 1"]
    for cut in (1, 3, 4, 5, len(whole) - 1):
        frames = _exchange(daemon, whole[:cut])
        assert all(f["ok"] is False for f in frames), (cut, frames)
    assert daemon.running, daemon.log_tail()
    assert daemon.client.status().address == daemon.address
