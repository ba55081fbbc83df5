"""The control-socket protocol between the daemon and its local clients (no I/O).

Theory of operation (normative text: docs/spec/control.md):
- One request per connection. The client sends one *frame* holding
  ``{"v": 1, "op": NAME, "args": {...}}``; the daemon answers with one frame
  ``{"ok": true, "result": VALUE}`` or ``{"ok": false, "error": {"type": T,
  "message": M}}``. A streaming op (``read``, ``status`` with ``follow``) answers with any
  number of ``{"item": VALUE}`` frames and ends with a result or an error
  (``unreadable`` streams too: an attacker may leave many).
- A frame is a 4-byte big-endian length and that many bytes of msgpack. Frames
  are at most ``MAX_FRAME`` bytes and decoded with the bounds of
  :mod:`meshnode.core.codec`, arrays and maps nested at most ``MAX_DEPTH``
  deep (:func:`decode_value` walks them recursively).
- Decoding is total: any bytes, and any map in them, become a value or a
  :class:`ControlProtocolError`, never another exception.
- Errors travel by the name of their class in :mod:`meshnode.errors`, so the
  client raises the same exception the daemon did; unknown names become
  :class:`~meshnode.errors.MeshError`.
- Records (:mod:`meshnode.core.views`) travel as maps of their fields and are
  rebuilt strictly: unknown or missing fields are a protocol error.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Final, TypeVar

from meshnode import errors
from meshnode.core import codec, views
from meshnode.errors import MeshError, RemoteProtocolError

VERSION: Final = 1
MAX_FRAME: Final = 1 << 20
MAX_DEPTH: Final = 16
"""Nesting of arrays and maps in a frame: records inside lists inside the answer map need
far fewer levels; a deep nest is an attack on a recursive walk."""
SOCKET_NAME: Final = "control.sock"
_HEADER: Final = struct.Struct(">I")

T = TypeVar("T")

RECORD_TYPES: Final[dict[str, type[Any]]] = {
    "bulletin": views.BulletinRecord,
    "channel": views.ChannelInfo,
    "peer": views.PeerInfo,
    "contact": views.ContactInfo,
    "status": views.NodeStatus,
    "member": views.MemberInfo,
    "invite": views.InviteInfo,
    "operation": views.OperationInfo,
    "unreadable": views.UnreadableInfo,
    "share": views.ShareUse,
}
_TYPE_NAMES: Final = {cls: name for name, cls in RECORD_TYPES.items()}


class ControlProtocolError(RemoteProtocolError):
    """The other end of the control socket broke the protocol."""


def frame(message: dict[str, Any]) -> bytes:
    """One length-prefixed frame."""
    body = codec.pack(message)
    if len(body) > MAX_FRAME:
        raise errors.LocalProtocolError(f"control message of {len(body)} bytes is too large")
    return _HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte frame header, refusing oversized frames."""
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ControlProtocolError(f"control frame of {length} bytes exceeds {MAX_FRAME}")
    return int(length)


def parse_frame(body: bytes) -> dict[str, Any]:
    """Decode a frame body into its top-level map."""
    try:
        value = codec.unpack(
            body,
            max_size=MAX_FRAME,
            max_str=MAX_FRAME,
            max_bin=MAX_FRAME,
            max_array=100_000,
            max_map=64,
            max_depth=MAX_DEPTH,
        )
    except codec.DecodeError as exc:
        raise ControlProtocolError(f"malformed control frame: {exc}") from None
    if not isinstance(value, dict):
        raise ControlProtocolError("a control frame is a map")
    return value


def request(op: str, **args: Any) -> dict[str, Any]:
    """A request message (arguments already encoded with :func:`encode_value`)."""
    return {"v": VERSION, "op": op, "args": {k: encode_value(v) for k, v in args.items()}}


def parse_request(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The op name and arguments of a request, refusing other versions."""
    version = message.get("v")
    if type(version) is not int or version != VERSION:
        raise ControlProtocolError(
            f"control protocol version {version!r} is not {VERSION}: "
            "the CLI and the daemon are from different meshnode versions"
        )
    op, args = message.get("op"), message.get("args")
    if not isinstance(op, str) or not isinstance(args, dict):
        raise ControlProtocolError("a request has an op name and an argument map")
    return op, {k: decode_value(v) for k, v in args.items()}


def result(value: Any) -> dict[str, Any]:
    """The final, successful answer to a request."""
    return {"ok": True, "result": encode_value(value)}


def item(value: Any) -> dict[str, Any]:
    """One streamed item of a streaming answer."""
    return {"item": encode_value(value)}


def failure(exc: BaseException) -> dict[str, Any]:
    """The final answer to a failed request, naming the error's class."""
    name = type(exc).__name__ if isinstance(exc, MeshError) else "MeshError"
    message = (
        str(exc) if isinstance(exc, MeshError) else "internal error in the daemon (see its log)"
    )
    return {"ok": False, "error": {"type": name, "message": message}}


def raise_failure(message: dict[str, Any]) -> None:
    """Raise the error an answer carries, as the daemon's own exception class."""
    error = message.get("error")
    if not isinstance(error, dict):
        raise ControlProtocolError("a failed answer carries an error map")
    cls = getattr(errors, str(error.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, MeshError)):
        cls = MeshError
    raise cls(str(error.get("message", "the daemon reported an error")))


def encode_value(value: Any) -> Any:
    """Records become tagged maps; containers are encoded element by element."""
    kind = _TYPE_NAMES.get(type(value))
    if kind is not None:
        fields = {f.name: encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$type": kind, **fields}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    return value


def decode_value(value: Any, *, _depth: int = 0) -> Any:
    """Inverse of :func:`encode_value`, refusing records with unknown or missing fields,
    and values nested deeper than ``MAX_DEPTH`` (so a frame cannot exhaust the stack)."""
    if _depth > MAX_DEPTH:
        raise ControlProtocolError(f"a control value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict) and "$type" in value:
        kind = value["$type"]
        cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ControlProtocolError(f"unknown record type {codec.describe(kind)}")
        fields = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in (
                (k, decode_value(v, _depth=_depth + 1)) for k, v in value.items() if k != "$type"
            )
        }
        names = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != names:
            raise ControlProtocolError(f"a {kind} record with the wrong fields")
        return cls(**fields)
    if isinstance(value, list):
        return [decode_value(v, _depth=_depth + 1) for v in value]
    return value


def expect(value: Any, cls: type[T]) -> T:
    """``value`` if it is a ``cls``, else a protocol error (for typed client methods)."""
    if not isinstance(value, cls):
        raise ControlProtocolError(f"expected a {cls.__name__}, got {type(value).__name__}")
    return value
