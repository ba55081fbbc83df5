"""Garbage on the control socket: a real daemon is sent random bytes and mutations of
valid requests, one connection each; every one gets an answer (a result, or a refusal
with its error type, never the last-resort "internal error") or a closed connection,
the daemon lives, its memory grows by less than one frame, and an organizer's
``meshnode post`` still works (issue 11, "Control socket").

One frame that is not garbage breaks the memory bound: a valid streaming request whose
arguments decode to about 80 times the frame's size, held for as long as the stream
lasts; that test is marked as failing until the decoder bounds what a frame becomes.

The mutations are the fuzz harness's (tests/fuzz/mutate.py) on the control decoder's
corpus (tests/fuzz/control_decoder.py); here they cross a real socket into a running
daemon instead of calling the decoder.

Network rules: those of tests/system/daemons.py (one daemon on 127.0.3.181, stopped in
the fixture's teardown); every socket read has a deadline.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from meshnode import control
from meshnode.client import socket_path
from meshnode.daemon import MAX_CONTROL_CLIENTS
from meshnode.supervise import follow_until
from tests.fuzz.control_decoder import CORPUS
from tests.fuzz.mutate import mutate, random_bytes
from tests.hostile.victim import rss, start_daemon
from tests.system.daemons import Daemon, Mesh, cli, control_frames

if TYPE_CHECKING:
    from collections.abc import Callable

DEADLINE = 30.0
INPUTS = 1000
SEED = "control garbage"


def _garbage(rng: random.Random) -> bytes:
    """One attack: random bytes, a mutated request in a true frame, or a whole frame
    mutated (its length header included)."""
    kind = rng.random()
    if kind < 0.2:
        return random_bytes(rng, max(map(len, CORPUS)))
    seed = rng.choice(CORPUS)
    if kind < 0.7:
        body = mutate(seed, rng, seeds=CORPUS)
        return struct.pack(">I", len(body)) + body
    return mutate(struct.pack(">I", len(seed)) + seed, rng, seeds=CORPUS)


INTERNAL = control.failure(RuntimeError())["error"]["message"]
"""What the daemon answers when a request met a bug (its last-resort handler)."""


def _kind(frame: dict[str, Any]) -> str:
    """An answer, by kind: ``ok``, ``item`` (a stream began), the refusal's error type,
    or :data:`INTERNAL`."""
    if frame.get("ok") is False:
        error = frame["error"]
        return INTERNAL if error["message"] == INTERNAL else str(error["type"])
    assert "ok" in frame or "item" in frame, frame
    return "ok" if "ok" in frame else "item"


def _exchange(daemon: Daemon, data: bytes) -> bytes:
    """Send ``data``, close our side, and read until the daemon closes or has sent one
    whole frame (a streamed answer's first item: a stream may go on forever)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(str(socket_path(daemon.data_dir)))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except BrokenPipeError:  # refused by its header: the answer waits to be read
            pass
        return _first_frame(sock)


def _first_frame(sock: socket.socket) -> bytes:
    """The first whole frame the daemon sends, or what it sent before closing."""
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
        end = 4 + control.frame_length(received[:4]) if len(received) >= 4 else None
        if end is not None and len(received) >= end:
            return bytes(received[:end])
    return bytes(received)


@pytest.fixture
def daemon(make_mesh: Callable[[int], Mesh]) -> Daemon:
    return start_daemon(make_mesh, 181)


def test_garbage_gets_an_answer_or_a_close_and_the_daemon_serves_on(daemon: Daemon) -> None:
    assert daemon.process is not None  # (started by the fixture)
    pid = daemon.process.pid
    rng = random.Random(SEED)
    daemon.client.status()  # the control path has run once before the measure
    before = rss(pid)
    answers: Counter[str] = Counter()
    for _ in range(INPUTS):
        frames = control_frames(_exchange(daemon, _garbage(rng)))  # the daemon cuts none
        answers[_kind(frames[0]) if frames else "closed"] += 1
        assert daemon.running, daemon.log_tail()
    after = rss(pid)
    posted = json.loads(
        cli("--data-dir", str(daemon.data_dir), "post", "--public", "still here", "--json").stdout
    )
    follow_until(daemon.data_dir, {bytes.fromhex(posted["id"])}, timeout=DEADLINE, what="the post")
    print(
        f"\ncontrol garbage: {INPUTS} inputs: {dict(answers)}; RSS {before} -> {after} B "
        f"(+{after - before}); a post after it: ok"
    )
    # Every refusal is a typed error: none was a bug caught by the last-resort handler.
    assert INTERNAL not in answers
    # One connection at a time: what a request holds is gone before the next.
    assert after - before <= control.MAX_FRAME


def test_a_request_held_open_pins_no_more_than_a_few_frames(daemon: Daemon) -> None:
    assert daemon.process is not None  # (started by the fixture)
    pid = daemon.process.pid
    daemon.client.status()
    before = rss(pid)
    # ``status --follow`` whose arguments also carry a million empty maps (one byte each
    # on the wire): over the request bound, refused before it is decoded. Within it, an
    # argument the op does not take is refused before the stream opens.
    maps = [[{}] * 100_000] * 10
    bomb = control.frame({"v": 1, "op": "status", "args": {"follow": True, "x": maps}})
    small = [[{}] * 10_000] * 10
    inside = control.frame({"v": 1, "op": "status", "args": {"follow": True, "x": small}})
    assert len(inside) <= control.MAX_REQUEST < len(bomb)
    refused = [control_frames(_exchange(daemon, frame)) for frame in (bomb, inside)]
    assert [_kind(frames[0]) for frames in refused] == ["ControlProtocolError"] * 2
    # A stream held open holds only what its checked arguments are.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(str(socket_path(daemon.data_dir)))
        sock.sendall(control.frame({"v": 1, "op": "status", "args": {"follow": True}}))
        first = control_frames(_first_frame(sock))  # the stream is open
        held = rss(pid) - before
    assert daemon.running, daemon.log_tail()
    print(
        f"\na {len(bomb)} B frame and a {len(inside)} B one with an unknown argument: "
        f"refused; a stream held open: RSS +{held} B; "
        f"x {MAX_CONTROL_CLIENTS} clients at once: {held * MAX_CONTROL_CLIENTS} B"
    )
    assert "item" in first[0]
    assert held <= 4 * control.MAX_REQUEST
