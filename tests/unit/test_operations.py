"""One table of operations (``meshnode.control.OPERATIONS``): the Node methods, the
daemon's dispatch and the Client's methods are held against it, so none can drift.

Rules checked:
1. Each row's Node method and Client method take the same arguments, those of the row:
   the same names in the same order with the same defaults; the Client may make an
   argument keyword-only where the Node takes it either way. Where names differ
   (``bulletins`` and ``read``/``follow``, ``changes`` and ``watch``, ``connect`` and
   ``add_peer``) the row says so, with the Node arguments it fixes itself (``follow``)
   and those the daemon applies (``limit``).
2. Every public Node method is in the table, or in :data:`NODE_ONLY` with a reason;
   every public Client method is in it, and AsyncClient has each with its signature.
3. Each Client method is one call through its row: the op and request it sends are the
   row's. Sent through the daemon's dispatch (``daemon.answer``, no socket), the
   request calls the row's Node method with those arguments.
4. docs/spec/control.md lists every op with every argument of its rows.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from meshnode import control, daemon
from meshnode.client import AsyncClient, Client
from meshnode.errors import UnknownContact
from meshnode.net.node import Node

if TYPE_CHECKING:
    from collections.abc import Iterator

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "control.md"
NODE_ONLY = {
    "find_channel": "a lookup for embedders; the CLI names channels and the daemon resolves",
    "lookup": "a DHT query for the node's own use (contact records)",
}
CLIENT_PLUMBING = {"call", "stream"}
"""The Client's generic methods, which every operation goes through."""
ROWS = {row.client: row for row in control.OPERATIONS}
NODE_ROWS = [row for row in control.OPERATIONS if row.node is not None]
SAMPLES: dict[str, Any] = {
    "address": "127.0.0.1:7447",
    "name": "strike",
    "channel": "strike",
    "expires": 3600,
    "offline": True,
    "with_history": True,
    "for_group": "tenants",
    "code": "mni1code",
    "remove": ["tenants"],
    "groups": ["tenants"],
    "invite_id": "abcdef0123",
    "keep": ["tenants"],
    "text": "Strike vote Friday 6pm",
    "reply_to": bytes(range(32)),
    "recipients": ["tenants", "food bank"],
    "bulletin_id": bytes(32),
    "since": 1_700_000_000,
    "limit": 5,
    "petname": "tenants",
    "key": "mk1key",
}
"""A value for every argument name in the table, as a caller would pass it."""


def _params(method: Any) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(method).parameters.values() if p.name != "self"]


def _public(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)}


def _id(row: control.Operation[Any]) -> str:
    return f"{row.client}:{row.node}"


# 1. Paired methods take the same arguments ---------------------------------------------------


@pytest.mark.parametrize("row", NODE_ROWS, ids=_id)
def test_paired_methods_take_the_arguments_of_their_row(row: control.Operation[Any]) -> None:
    assert row.node is not None
    node = {p.name: p for p in _params(getattr(Node, row.node))}
    client = {p.name: p for p in _params(getattr(Client, row.client))}
    assert list(client) == [a.name for a in row.args]
    assert list(node) == [a.name for a in row.args if a.node] + list(row.fixed)
    for arg in row.args:
        ours = client[arg.name]
        assert (ours.default is not inspect.Parameter.empty) == arg.optional, arg
        if not arg.node:  # applied by the daemon: nothing on the Node's side
            assert ours.default is None
            continue
        theirs = node[arg.name]
        assert ours.default == theirs.default, arg
        assert ours.kind in (theirs.kind, inspect.Parameter.KEYWORD_ONLY), arg


@pytest.mark.parametrize("row", control.OPERATIONS, ids=_id)
def test_a_client_method_returns_as_its_row_answers(row: control.Operation[Any]) -> None:
    method = getattr(Client, row.client)
    returns = str(inspect.signature(method).return_annotation)
    if row.answer is control.Answer.FOLLOW:
        assert returns.startswith("Generator[")
    elif row.answer is control.Answer.LIST:
        assert returns.startswith("list[")
    else:
        assert not returns.startswith("Generator[")


def test_only_limit_is_applied_by_the_daemon() -> None:
    applied = {a.name for row in control.OPERATIONS for a in row.args if not a.node}
    assert applied == {"limit"}


def test_rows_that_share_an_op_are_told_apart_by_one_flag() -> None:
    by_op: dict[str, list[control.Operation[Any]]] = {}
    for row in control.OPERATIONS:
        by_op.setdefault(row.name, []).append(row)
    for op, rows in by_op.items():
        assert sum(row.when is None for row in rows) == 1, op
        assert len({row.when for row in rows}) == len(rows), op


# 2. Nothing outside the table ---------------------------------------------------------------


def test_every_public_node_method_is_in_the_table() -> None:
    paired = {row.node for row in NODE_ROWS}
    assert _public(Node) - set(NODE_ONLY) == paired
    assert not paired & set(NODE_ONLY)


def test_every_client_method_is_in_the_table() -> None:
    assert _public(Client) - CLIENT_PLUMBING == set(ROWS)
    assert len(ROWS) == len(control.OPERATIONS)
    assert _public(AsyncClient) == set(ROWS)


@pytest.mark.parametrize("row", control.OPERATIONS, ids=_id)
def test_the_async_client_takes_the_same_arguments(row: control.Operation[Any]) -> None:
    ours = [(p.name, p.default, p.kind) for p in _params(getattr(AsyncClient, row.client))]
    theirs = [(p.name, p.default, p.kind) for p in _params(getattr(Client, row.client))]
    assert ours == theirs
    assert getattr(AsyncClient, row.client).__doc__


def test_the_daemon_answers_identity_itself() -> None:
    assert set(daemon.LOCAL) == {row.name for row in control.OPERATIONS if row.node is None}


# 3. One call through the row, end to end -----------------------------------------------------


class _Sent(Exception):
    """Raised by the fake transport once the request is recorded."""


def _invoke(client: Client, row: control.Operation[Any]) -> None:
    """Call the row's Client method with a sample for each argument, to the first answer."""
    values = {a.name: SAMPLES[a.name] for a in row.args}
    result = getattr(client, row.client)(**values)
    if row.answer is control.Answer.FOLLOW:
        next(result)


@pytest.mark.parametrize("row", control.OPERATIONS, ids=_id)
def test_a_client_method_sends_its_rows_request(
    row: control.Operation[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, str, dict[str, Any]]] = []

    def recorder(how: str) -> Any:
        def record(self: Client, op: str, **args: Any) -> Any:
            sent.append((how, op, args))
            raise _Sent

        return record

    monkeypatch.setattr(Client, "call", recorder("call"))
    monkeypatch.setattr(Client, "stream", recorder("stream"))
    with pytest.raises(_Sent):
        _invoke(Client("/nonexistent"), row)
    expected = row.request(**{a.name: SAMPLES[a.name] for a in row.args})
    how = "call" if row.answer is control.Answer.ONE else "stream"
    assert sent == [(how, row.name, expected)]
    assert set(expected) == {a.key for a in row.args} | ({row.when} if row.when else set())


class _RecordingNode:
    """Records the one Node method the daemon calls, then refuses, as a node may."""

    def __init__(self) -> None:
        self.called: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def method(**kwargs: Any) -> Any:
            self.called.append((name, kwargs))
            raise UnknownContact("recorded")

        return method


@pytest.mark.parametrize("row", NODE_ROWS, ids=_id)
def test_the_daemon_calls_the_rows_node_method(
    row: control.Operation[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _RecordingNode()

    def exchange(self: Client, op: str, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        body = control.frame(control.request(op, **args))[4:]

        async def collect() -> list[bytes]:
            return [frame async for frame in daemon.answer(node, body)]

        for frame in trio.run(collect):
            yield control.parse_frame(frame[4:])

    monkeypatch.setattr(Client, "_exchange", exchange)
    with pytest.raises(UnknownContact, match="recorded"):
        _invoke(Client("/nonexistent"), row)
    expected = {a.name: SAMPLES[a.name] for a in row.args if a.node} | dict(row.fixed)
    assert node.called == [(row.node, expected)]


# 4. The spec lists the table -----------------------------------------------------------------


def test_the_spec_lists_every_operation_and_argument() -> None:
    section = SPEC.read_text().split("## Operations", 1)[1]
    listed: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) == 3 else None
        if match:
            listed[match.group(1)] = set(re.findall(r"`(\w+)`", cells[1]))
    expected: dict[str, set[str]] = {}
    for row in control.OPERATIONS:
        names = {a.key for a in row.args} | ({row.when} if row.when else set())
        expected[row.name] = expected.get(row.name, set()) | names
    assert listed == expected
