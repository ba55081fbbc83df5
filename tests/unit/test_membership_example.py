"""The worked example of docs/spec/membership.md is checked against the code, byte for
byte: every input, operation, id and the resulting state are read from the markdown."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from meshnode.core import crypto
from meshnode.core.channel import Channel
from meshnode.core.identity import Identity
from meshnode.core.membership import Log, Post
from meshnode.core.operation import CheckpointEntry, Frontier, Op, OpType, epoch_id, sign_op

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "membership.md"
GROUPS = ("A", "B", "C")
TYPES = {
    "create": OpType.CREATE,
    "epoch start": OpType.EPOCH,
    "invite issued": OpType.INVITE,
    "invite revoked": OpType.REVOKE,
    "add": OpType.ADD,
    "remove": OpType.REMOVE,
    "leave": OpType.LEAVE,
}
ROW = re.compile(
    r"^\| (\d+) \| ([a-z ]+) \((\d)\) \| ([ABC]) \| (\d+) \| (\d+) \| ([^|]*) \| "
    r"`([^`]*)` \| `([0-9a-f]{64})` \|$",
    re.M,
)


def _example() -> str:
    return SPEC.read_text().split("## Worked example", 1)[1]


def _inputs(text: str) -> dict[str, str]:
    return dict(re.findall(r"^- ([a-z0-9-]+): `([^`]*)`$", text, re.M))


def _hex_block(text: str, name: str) -> bytes:
    match = re.search(rf"```hex {name}\n(.*?)```", text, re.S)
    assert match, f"no hex block {name} in {SPEC.name}"
    return bytes.fromhex("".join(match.group(1).split()))


def _literal(text: str, names: dict[str, object]) -> object:
    """A value written with the example's names (A, token, epoch-1-id, nil, ...)."""
    quoted = re.sub(r"\b([A-C]|token|expires-at|epoch-\d-id)\b", r'"\1"', text)
    quoted = re.sub(r"\bnil\b", "None", re.sub(r"\bfalse\b", "False", quoted))
    return _resolve(ast.literal_eval(quoted), names)


def _resolve(value: object, names: dict[str, object]) -> object:
    if isinstance(value, list):
        return [_resolve(v, names) for v in value]
    if isinstance(value, str) and value in names:
        return names[value]
    return value


def _values(op_type: OpType, fields: list[object]) -> dict[str, object]:
    """The keyword values of ``sign_op`` for field 7 as the table writes it."""
    match op_type:
        case OpType.CREATE:
            return {"name": fields[0], "epoch_id": fields[1]}
        case OpType.EPOCH:
            parents, new, checkpoint = fields
            assert isinstance(parents, list)
            assert isinstance(checkpoint, list)
            entries = tuple(CheckpointEntry(key, tuple(rank)) for key, rank in checkpoint)
            return {"parent_epochs": tuple(parents), "epoch_id": new, "checkpoint": entries}
        case OpType.INVITE:
            token, expires_at, for_group, with_history = fields
            return {
                "token": token,
                "expires_at": expires_at,
                "for_group": for_group,
                "with_history": with_history,
            }
        case OpType.REVOKE:
            return {"token": fields[0]}
        case OpType.ADD:
            return {"key": fields[0], "token": fields[1]}
        case OpType.REMOVE:
            targets = fields[0]
            assert isinstance(targets, list)
            return {"targets": tuple(Frontier(k, s, i) for k, s, i in targets)}
        case OpType.LEAVE:
            return {}


def _build() -> tuple[dict[str, str], dict[str, Identity], list[Op], dict[bytes, str]]:
    """The example's inputs, groups and operations, each checked against its stated id."""
    text = _example()
    given = _inputs(text)
    groups = {}
    for g in GROUPS:
        n = g.lower()
        groups[g] = Identity.from_seed(bytes.fromhex(given[f"{n}-seed"]), given[f"{n}-name"])
        assert groups[g].public_key.hex() == given[f"{n}-key"]
    channel = Channel.from_secret(given["channel-name"], bytes.fromhex(given["channel-secret"]))
    assert channel.id.hex() == given["channel-id"]
    assert epoch_id(bytes.fromhex(given["channel-secret"])).hex() == given["epoch-0-id"]
    assert epoch_id(bytes.fromhex(given["epoch-1-secret"])).hex() == given["epoch-1-id"]
    token = crypto.signing_keypair(bytes.fromhex(given["token-seed"]))[0]
    assert token.hex() == given["token"]
    names: dict[str, object] = {g: groups[g].public_key for g in GROUPS}
    names |= {
        "token": token,
        "expires-at": int(given["expires-at"]),
        "epoch-0-id": bytes.fromhex(given["epoch-0-id"]),
        "epoch-1-id": bytes.fromhex(given["epoch-1-id"]),
    }
    rows = ROW.findall(text)
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    ops: list[Op] = []
    for number, kind, wire, author, seq, created, parents, fields, stated in rows:
        op_type = TYPES[kind]
        assert int(wire) == op_type, f"op {number}: {kind} is type {int(op_type)}"
        cited = [ops[int(p) - 1].id for p in re.findall(r"op (\d+)", parents)]
        values = _literal(fields, names)
        assert isinstance(values, list)
        op = sign_op(
            groups[author],
            channel.id,
            op_type,
            seq=int(seq),
            created_at=int(created),
            parents=cited,
            **_values(op_type, values),
        )
        assert op.id.hex() == stated, f"op {number}"
        ops.append(op)
    label = {op.id: f"op {i}" for i, op in enumerate(ops, 1)}
    return given, groups, ops, label


def test_operations_match_their_stated_ids() -> None:
    _, _, ops, _ = _build()
    assert len(ops) == 7


def test_create_operation_bytes() -> None:
    _, _, ops, _ = _build()
    assert ops[0].raw == _hex_block(_example(), "create-op")


def test_resulting_state() -> None:
    given, groups, ops, label = _build()
    text = _example()
    names = {g.public_key: n for n, g in groups.items()}
    for arrival in (ops[1:], ops[:0:-1]):  # in order, and children before parents
        log = Log(ops[0])
        for op in arrival:
            log.add(op)
        state = log.state()
        members = re.search(r"^- members: `([^`]*)`$", text, re.M)
        assert members
        stated = ast.literal_eval(re.sub(r"\b([A-C])\b", r'"\1"', members.group(1)))
        assert sorted((names[k], m.rank) for k, m in state.members.items()) == [
            (n, tuple(r)) for n, r in stated
        ]
        void = re.search(r"^- void: `([^`]*)`$", text, re.M)
        assert void
        assert sorted(label[v] for v in state.void) == [
            f"op {n}" for n in re.findall(r"\d+", void.group(1))
        ]
        gone = re.search(
            r"^- departed: ([A-C]), removed by ([A-C]) in op (\d+), frontier seq (\d+)",
            text,
            re.M,
        )
        assert gone
        who, by, op_number, seq = gone.groups()
        departure = log.departure(groups[who].public_key)
        assert departure is not None
        assert departure.by == groups[by].public_key
        assert departure.op == ops[int(op_number) - 1].id
        assert departure.frontier is not None
        assert departure.frontier.seq == int(seq)
        assert log.admit(groups[who].public_key, 1) is Post.REFUSE
        (invite,) = log.invites()
        assert invite.token.hex() == given["token"]
        assert invite.used_by == groups["B"].public_key
        assert not invite.revoked
        current = re.search(r"^- current epoch: `([a-z0-9-]+)`, number (\d+)\.$", text, re.M)
        assert current
        assert log.current_epoch().id.hex() == given[current.group(1)]
        assert log.current_epoch().number == int(current.group(2))
        assert {e.number for e in log.epochs().values()} == {0, 1}
        assert not log.needs_merge()
