"""Membership operations: what each one says, and how it is signed, encoded and read
(normative text: docs/spec/membership.md, "Operations"). The log that merges them is
:mod:`meshnode.core.membership`.

An operation is a signed msgpack document: its channel, author, sequence number,
parents, time and type-specific fields, signed with the author's identity key
under ``SIGN_LABEL``. :func:`decode_op` is total: any bytes either decode to an
:class:`Op` whose signature holds and whose fields are those of its type, or raise
:class:`~meshnode.errors.InvalidOperation`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from meshnode.core import codec, crypto
from meshnode.core.channel import EPOCH_ID_LABEL
from meshnode.errors import AuthenticationError, InvalidOperation

if TYPE_CHECKING:
    from collections.abc import Iterable

    from meshnode.core.identity import Identity

VERSION: Final = 1
SIGN_LABEL: Final = b"meshnode/v1/membership-op"
MAX_OP_SIZE: Final = 48 * 1024
MAX_PARENTS: Final = 16
MAX_PARENT_EPOCHS: Final = 8
MAX_MEMBERS: Final = 256
MAX_RANK: Final = 64
MAX_TARGETS: Final = 16
MAX_NAME_BYTES: Final = 256
MAX_OPS: Final = 4096
MAX_PENDING: Final = 1024
MAX_REKEYS_PER_HOUR: Final = 10
HOUR: Final = 3600
MAX_UINT: Final = 2**63 - 1

Rank = tuple[int, ...]


class OpType(IntEnum):
    """What an operation does; the wire value is the integer."""

    CREATE = 0
    EPOCH = 1
    INVITE = 2
    REVOKE = 3
    ADD = 4
    REMOVE = 5
    LEAVE = 6


@dataclass(frozen=True, slots=True)
class Frontier:
    """A removed group's channel stream as the remover saw it: its bulletins with a
    higher ``seq`` (and forks at or below it) are refused."""

    key: bytes
    seq: int
    id: bytes | None


@dataclass(frozen=True, slots=True)
class CheckpointEntry:
    """One member of an epoch start's checkpoint, with its rank."""

    key: bytes
    rank: Rank


@dataclass(frozen=True, slots=True, eq=False)
class Op:
    """A decoded, verified operation. Build with the ``*_op`` functions or
    :func:`decode_op`; the fields a type does not use keep their defaults."""

    raw: bytes
    id: bytes
    channel_id: bytes
    author: bytes
    seq: int
    created_at: int
    parents: tuple[bytes, ...]
    type: OpType
    name: str = ""
    epoch_id: bytes = b""
    parent_epochs: tuple[bytes, ...] = ()
    checkpoint: tuple[CheckpointEntry, ...] = ()
    token: bytes | None = None
    expires_at: int = 0
    for_group: bytes | None = None
    with_history: bool = False
    key: bytes = b""
    targets: tuple[Frontier, ...] = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Op) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def epoch_id(secret: bytes) -> bytes:
    """The public name of an epoch: who holds its secret can check it, nobody else
    learns anything from it."""
    return crypto.derive(secret, EPOCH_ID_LABEL)


# -- encoding -------------------------------------------------------------------------


def _fields(op_type: OpType, values: dict[str, object]) -> list[object]:
    match op_type:
        case OpType.CREATE:
            return [values["name"], values["epoch_id"]]
        case OpType.EPOCH:
            entries = values["checkpoint"]
            assert isinstance(entries, tuple)
            return [
                list(values["parent_epochs"]),  # type: ignore[call-overload]  # a tuple of ids
                values["epoch_id"],
                [[e.key, list(e.rank)] for e in entries],
            ]
        case OpType.INVITE:
            return [
                values["token"],
                values["expires_at"],
                values["for_group"],
                values["with_history"],
            ]
        case OpType.REVOKE:
            return [values["token"]]
        case OpType.ADD:
            return [values["key"], values["token"]]
        case OpType.REMOVE:
            targets = values["targets"]
            assert isinstance(targets, tuple)
            return [[[t.key, t.seq, t.id] for t in targets]]
        case OpType.LEAVE:
            return []


def sign_op(
    author: Identity,
    channel_id: bytes,
    op_type: OpType,
    *,
    seq: int,
    created_at: int,
    parents: Iterable[bytes],
    **values: object,
) -> Op:
    """Encode and sign one operation (the writers below name the values of each type).

    Raises:
        ValueError: a value out of range; the writer never makes what
            :func:`decode_op` refuses.
    """
    defaults: dict[str, object] = {
        "name": "",
        "epoch_id": b"",
        "parent_epochs": (),
        "checkpoint": (),
        "token": None,
        "expires_at": 0,
        "for_group": None,
        "with_history": False,
        "key": b"",
        "targets": (),
    }
    unknown = set(values) - set(defaults)
    if unknown:
        raise ValueError(f"unknown operation values {sorted(unknown)}")
    merged = {**defaults, **values}
    body = codec.pack(
        [
            VERSION,
            channel_id,
            author.public_key,
            seq,
            created_at,
            sorted(set(parents)),
            int(op_type),
            _fields(op_type, merged),
        ]
    )
    raw = body + author.sign(SIGN_LABEL + body)
    try:
        return decode_op(raw)
    except InvalidOperation as exc:
        raise ValueError(str(exc)) from None


def decode_op(data: bytes) -> Op:
    """Decode and verify an operation; anything wrong raises InvalidOperation."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidOperation("an operation is bytes")
    raw = bytes(data)
    if not crypto.SIGNATURE_SIZE < len(raw) <= MAX_OP_SIZE:
        raise InvalidOperation(f"an operation is at most {MAX_OP_SIZE} bytes and signed")
    body, sig = raw[: -crypto.SIGNATURE_SIZE], raw[-crypto.SIGNATURE_SIZE :]
    try:
        doc = codec.unpack_canonical(
            body,
            max_size=MAX_OP_SIZE,
            max_str=MAX_NAME_BYTES,
            max_bin=crypto.KEY_SIZE,
            max_array=MAX_MEMBERS,
        )
    except codec.DecodeError as exc:
        raise InvalidOperation(f"not an operation: {exc}") from None
    if not (isinstance(doc, list) and len(doc) == 8):
        raise InvalidOperation("not an operation: wrong structure")
    version, channel_id, author, seq, created, parents, op_type, fields = doc
    if type(version) is not int or version != VERSION:
        raise InvalidOperation(f"operation version {codec.describe(version)} is not supported")
    if not (
        is_key(channel_id)
        and is_key(author)
        and _is_uint(seq)
        and seq >= 1
        and _is_uint(created)
        and isinstance(parents, list)
        and len(parents) <= MAX_PARENTS
        and all(is_key(p) for p in parents)
        and all(a < b for a, b in itertools.pairwise(parents))
        and type(op_type) is int
        and op_type in _TYPES
        and isinstance(fields, list)
    ):
        raise InvalidOperation("malformed operation header")
    kind = OpType(op_type)
    values = _decode_fields(kind, fields)
    try:
        crypto.verify(author, SIGN_LABEL + body, sig)
    except AuthenticationError:
        raise InvalidOperation("operation signature does not verify") from None
    return Op(
        raw=raw,
        id=crypto.blake2b_256(raw),
        channel_id=channel_id,
        author=author,
        seq=seq,
        created_at=created,
        parents=tuple(parents),
        type=kind,
        **values,  # type: ignore[arg-type]  # checked per type by _decode_fields
    )


_TYPES: Final = frozenset(int(t) for t in OpType)


def is_key(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == crypto.KEY_SIZE


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_UINT


def _decode_fields(kind: OpType, f: list[object]) -> dict[str, object]:
    bad = InvalidOperation(f"malformed {kind.name.lower()} operation")
    match kind:
        case OpType.CREATE:
            if not (
                len(f) == 2 and isinstance(f[0], str) and len(f[0]) > 0 and is_key(f[1])
            ):
                raise bad
            return {"name": f[0], "epoch_id": f[1]}
        case OpType.EPOCH:
            if not (
                len(f) == 3
                and isinstance(f[0], list)
                and 1 <= len(f[0]) <= MAX_PARENT_EPOCHS
                and all(is_key(e) for e in f[0])
                and all(a < b for a, b in itertools.pairwise(f[0]))
                and is_key(f[1])
                and isinstance(f[2], list)
                and 1 <= len(f[2]) <= MAX_MEMBERS
            ):
                raise bad
            entries = []
            for entry in f[2]:
                if not (
                    isinstance(entry, list)
                    and len(entry) == 2
                    and is_key(entry[0])
                    and isinstance(entry[1], list)
                    and len(entry[1]) <= MAX_RANK
                    and all(_is_uint(n) for n in entry[1])
                ):
                    raise bad
                entries.append(CheckpointEntry(entry[0], tuple(entry[1])))
            if len({e.key for e in entries}) != len(entries):
                raise bad
            return {
                "parent_epochs": tuple(f[0]),
                "epoch_id": f[1],
                "checkpoint": tuple(entries),
            }
        case OpType.INVITE:
            if not (
                len(f) == 4
                and is_key(f[0])
                and _is_uint(f[1])
                and (f[2] is None or is_key(f[2]))
                and isinstance(f[3], bool)
            ):
                raise bad
            return {"token": f[0], "expires_at": f[1], "for_group": f[2], "with_history": f[3]}
        case OpType.REVOKE:
            if not (len(f) == 1 and is_key(f[0])):
                raise bad
            return {"token": f[0]}
        case OpType.ADD:
            if not (len(f) == 2 and is_key(f[0]) and (f[1] is None or is_key(f[1]))):
                raise bad
            return {"key": f[0], "token": f[1]}
        case OpType.REMOVE:
            if not (len(f) == 1 and isinstance(f[0], list) and 1 <= len(f[0]) <= MAX_TARGETS):
                raise bad
            targets = []
            for t in f[0]:
                if not (
                    isinstance(t, list)
                    and len(t) == 3
                    and is_key(t[0])
                    and _is_uint(t[1])
                    and (t[2] is None if t[1] == 0 else is_key(t[2]))
                ):
                    raise bad
                targets.append(Frontier(t[0], t[1], t[2]))
            if len({t.key for t in targets}) != len(targets):
                raise bad
            return {"targets": tuple(targets)}
        case OpType.LEAVE:
            if f:
                raise bad
            return {}
