"""The daemon's request handling is total: random frames and random request maps sent
to :func:`meshnode.daemon.answer` for a real node (no socket) come back as an answer
whose failures all name a :class:`~meshnode.errors.MeshError` class; no exception
escapes and no failure is the daemon's generic "internal error".

The node runs in its own trio loop on a thread, opened once for the module; each
example hands it one request (``trio.from_thread``). It listens on 127.0.0.39 with no
bootstrap peer. ``peer_add`` is left out (a random text that parses as ``host:port``
would be dialled or resolved); its arguments are checked by its row of the table
(``control.OPERATIONS``) as every other op's. ``follow`` is dropped from the maps, since
a follow stream never ends.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode import control, errors
from meshnode.daemon import answer
from meshnode.launch import open_node
from meshnode.net.dht import DHTConfig
from meshnode.net.node import Node, NodeConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
Live = tuple[Node, trio.lowlevel.TrioToken]
"""A node and the token of the trio loop it runs on."""
INTERNAL = control.failure(RuntimeError())["error"]["message"]
OPS = sorted({op.name for op in control.OPERATIONS} - {"peer_add"} | {"no-such-op"})
ARG_NAMES = (
    "channel", "name", "text", "recipients", "groups", "keep", "remove", "expires",
    "offline", "with_history", "for_group", "invite_id", "code", "reply_to", "id",
    "petname", "key", "limit", "since",
)  # fmt: skip

plausible = st.sampled_from(["general", "fuzz", "nobody", "", "hi", 0, 1, 3600, True, False])
scalars = (
    plausible
    | st.none()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=30)
    | st.binary(max_size=40)
    | st.binary(min_size=32, max_size=32)
)
records = st.fixed_dictionaries(
    {"$type": st.sampled_from(sorted(control.RECORD_TYPES)) | scalars},
    optional={"id": scalars, "name": scalars},
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | records
        | st.dictionaries(st.sampled_from(["$type", "id", "x"]), inner, max_size=3)
    ),
    max_leaves=12,
)
# Mostly well-typed arguments, so that most requests reach the node.
arguments = st.one_of(plausible, plausible, plausible, scalars, st.lists(plausible, max_size=3))
envelopes = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, True, 2, "1", None]),
        "op": st.sampled_from(OPS) | values,
        "args": st.dictionaries(st.sampled_from(ARG_NAMES), values, max_size=5) | values,
    }
)
requests = st.fixed_dictionaries(
    {
        "v": st.just(1),
        "op": st.sampled_from(OPS),
        "args": st.fixed_dictionaries({}, optional={name: arguments for name in ARG_NAMES}),
    }
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A real node on its own trio loop (a thread), with one channel to aim at."""
    opened: queue.Queue[tuple[Node, trio.lowlevel.TrioToken, trio.Event] | BaseException] = (
        queue.Queue()
    )
    home = tmp_path_factory.mktemp("fuzz") / "node"

    async def serve() -> None:
        config = NodeConfig(dht=DHTConfig(rpc_timeout=0.5))
        async with open_node(home, name="Fuzz", listen="127.0.0.39:0", config=config) as n:
            await n.create_channel("general")
            done = trio.Event()
            opened.put((n, trio.lowlevel.current_trio_token(), done))
            await done.wait()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # handed to the test, which raises it
            opened.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    got = opened.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    n, token, done = got
    try:
        yield n, token
    finally:
        trio.from_thread.run_sync(done.set, trio_token=token)
        thread.join(timeout=60)


def _answers(node: Live, body: bytes) -> list[dict[str, Any]]:
    async def collect() -> list[bytes]:
        with trio.fail_after(30):
            return [data async for data in answer(node[0], body)]

    frames = []
    for data in trio.from_thread.run(collect, trio_token=node[1]):
        length = control.frame_length(data[:4])
        assert len(data) == 4 + length
        frames.append(control.parse_frame(data[4:]))
    return frames


def _check(frames: list[dict[str, Any]]) -> None:
    *items, last = frames
    assert all(set(i) == {"item"} for i in items)
    if last.get("ok") is True:
        assert set(last) == {"ok", "result"}
        return
    error = last["error"]
    cls = getattr(errors, error["type"], getattr(control, error["type"], None))
    assert isinstance(cls, type), error
    assert issubclass(cls, errors.MeshError), error
    assert error["message"] != INTERNAL


@SETTINGS
@given(body=st.binary(max_size=200))
def test_random_frames_get_typed_answers(node: Live, body: bytes) -> None:
    _check(_answers(node, body))


@SETTINGS
@given(message=envelopes)
def test_random_request_maps_get_typed_answers(node: Live, message: dict[str, Any]) -> None:
    if isinstance(message["args"], dict):
        message["args"].pop("follow", None)
    _check(_answers(node, control.codec.pack(message)))


@settings(SETTINGS, max_examples=400)
@given(message=requests)
def test_random_arguments_to_every_operation_get_typed_answers(
    node: Live, message: dict[str, Any]
) -> None:
    _check(_answers(node, control.codec.pack(message)))
