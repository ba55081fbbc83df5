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
- The operations are one table, :data:`OPERATIONS`: each row pairs an op on the wire
  with the ``Node`` method that does it and the ``Client`` method that asks for it,
  with their arguments. The daemon dispatches through it (:meth:`Operation.bind`)
  and every Client method is one call through its row (:meth:`Operation.request`,
  :attr:`Operation.result`), so the three cannot drift; tests/unit/test_operations.py
  holds the signatures of both against it.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from meshnode import errors
from meshnode.core import codec, views
from meshnode.errors import BulletinTooLarge, MeshError, RemoteProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

VERSION: Final = 1
MAX_FRAME: Final = 1 << 20
MAX_DEPTH: Final = 16
"""Nesting of arrays and maps in a frame: records inside lists inside the answer map need
far fewer levels; a deep nest is an attack on a recursive walk."""
MAX_REQUEST: Final = 1 << 17
"""A request frame's largest body: the longest bulletin text with room to spare. Every
byte of a frame may decode to an object of about 80 bytes (an empty map), so the
daemon reads requests under this bound, not :data:`MAX_FRAME` (answers may be larger)."""
MAX_REQUEST_CONTAINERS: Final = 256
"""Arrays and maps in a request frame: a request is a map of a few arguments, the
largest a list of up to 16 groups."""
SOCKET_NAME: Final = "control.sock"
_HEADER: Final = struct.Struct(">I")
MAX_INT_ARG: Final = 2**63 - 1
"""Integer arguments (times, counts) fit SQLite's signed 64 bits, as the store needs."""
MAX_TEXT: Final = 64 * 1024
"""A bulletin's whole envelope is at most this many bytes (``core.bulletin.MAX_SIZE``), so
longer text is refused by the client, before it could overflow a control frame."""

T = TypeVar("T")
R = TypeVar("R")

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


def frame_length(header: bytes, limit: int = MAX_FRAME) -> int:
    """The body length announced by a 4-byte frame header, refusing frames over ``limit``
    (:data:`MAX_REQUEST` for requests, read by the daemon)."""
    (length,) = _HEADER.unpack(header)
    if length > limit:
        raise ControlProtocolError(f"control frame of {length} bytes exceeds {limit}")
    return int(length)


def parse_frame(body: bytes, *, max_containers: int | None = None) -> dict[str, Any]:
    """Decode a frame body into its top-level map (a request: with ``max_containers``
    :data:`MAX_REQUEST_CONTAINERS`, since no request needs more)."""
    try:
        value = codec.unpack(
            body,
            max_size=MAX_FRAME,
            max_str=MAX_FRAME,
            max_bin=MAX_FRAME,
            max_array=100_000,
            max_map=64,
            max_depth=MAX_DEPTH,
            max_containers=max_containers,
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


# The table of operations -----------------------------------------------------------------


def _typed(name: str, value: Any, kinds: tuple[type, ...]) -> Any:
    """``value`` if its type is exactly one of ``kinds``, else a protocol error.

    Exact, because msgpack's ``true`` is a Python bool and bool is a subclass of int.
    """
    if type(value) not in kinds:
        wanted = " or ".join(k.__name__ for k in kinds)
        raise ControlProtocolError(
            f"argument {name!r} must be {wanted}, not {type(value).__name__}"
        )
    if type(value) is int and not 0 <= value <= MAX_INT_ARG:
        raise ControlProtocolError(f"argument {name!r} is out of range")
    return value


def _exactly(*kinds: type) -> Callable[[str, Any], Any]:
    return lambda name, value: _typed(name, value, kinds)


def _group(name: str, value: Any) -> str | bytes:
    """A group named by petname, key text or fingerprint (str) or by key (bytes)."""
    # (imported here: the client never checks, and `meshnode post` need not load nacl)
    from meshnode.core.crypto import KEY_SIZE

    group: str | bytes = _typed(name, value, (str, bytes))
    if type(group) is bytes and len(group) != KEY_SIZE:
        raise ControlProtocolError(f"a group key in {name!r} is {KEY_SIZE} bytes")
    return group


def _groups(name: str, value: Any) -> list[str | bytes]:
    return [_group(name, one) for one in _typed(name, value, (list,))]


def _as_is(value: Any) -> Any:
    return value


def _bulletin_text(text: Any) -> Any:
    if isinstance(text, str) and (size := len(text.encode("utf-8"))) > MAX_TEXT:
        raise BulletinTooLarge(
            f"the text is too long for one bulletin ({size} bytes; "
            "a bulletin is at most 64 KiB with its envelope)"
        )
    return text


def _channel_ref(channel: Any) -> Any:
    """A record travels as its id (bytes), which the daemon resolves exactly; texts and
    ids go as they are."""
    return channel.id if isinstance(channel, views.ChannelInfo) else channel


@dataclasses.dataclass(frozen=True)
class Kind:
    """What an argument may be on the socket (checked by the daemon, exactly), and how
    the client puts a Python value there."""

    check: Callable[[str, Any], Any]
    encode: Callable[[Any], Any] = _as_is


STR: Final = Kind(_exactly(str))
TEXT: Final = Kind(_exactly(str), encode=_bulletin_text)
"""A bulletin's text: the client refuses one too long for a bulletin (BulletinTooLarge)."""
INT: Final = Kind(_exactly(int))
BOOL: Final = Kind(_exactly(bool))
BYTES: Final = Kind(_exactly(bytes))
HEX_ID: Final = Kind(_exactly(str, bytes))
"""An id as bytes, or in hex (whole or a unique prefix)."""
CHANNEL: Final = Kind(_exactly(str, bytes), encode=_channel_ref)
"""A name or hex id (str), or an id (bytes), resolved by the node (``Archive.find_channel``)."""
GROUP: Final = Kind(_group)
GROUPS: Final = Kind(_groups, encode=list)


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument, named as both the Node and the Client method name it.

    ``optional``: the methods give it a default; nil or absent on the wire means that
    default (the daemon leaves it out of the Node call). ``wire``: its name in the
    request, where that differs. ``node``: False for an argument the daemon applies
    itself (``limit``: only the newest N items of a history).
    """

    name: str
    kind: Kind
    optional: bool = False
    wire: str = ""
    node: bool = True

    @property
    def key(self) -> str:
        """The argument's name in a request's argument map."""
        return self.wire or self.name


class Answer(enum.Enum):
    """How an operation answers, and what its Client method returns."""

    ONE = "one"
    """One result frame: the value."""
    LIST = "list"
    """Item frames, then a nil result: the client collects them into a list (a channel's
    whole history, or all an attacker left, would not fit one frame)."""
    FOLLOW = "follow"
    """Item frames until the client stops reading: its method is a generator."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Operation(Generic[R]):
    """One row of the table: an op on the wire, the Node method that does it, the Client
    method that asks for it, their arguments, and how the answer comes back.

    ``result`` checks what the daemon sent (each item, for ``FOLLOW``) and gives the
    Client method's return value. Two rows may share an op: ``when`` names the boolean
    argument that selects this row when true (the other row is the op without it), and
    ``fixed`` holds Node arguments the row sets itself (``bulletins(follow=True)``).
    ``node`` is None where the daemon answers without the node's methods (``identity``).
    """

    name: str
    node: str | None
    client: str
    result: Callable[[Any], R]
    args: tuple[Arg, ...] = ()
    answer: Answer = Answer.ONE
    when: str | None = None
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def request(self, **values: Any) -> dict[str, Any]:
        """The request arguments for the Client method's ``values`` (by Python name)."""
        wire = {a.key: a.kind.encode(values[a.name]) for a in self.args}
        if self.when is not None:
            wire[self.when] = True
        return wire

    def bind(self, args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A request's arguments, each checked for its exact type: the keyword arguments of
        the Node call (``fixed`` included; nil ones left to the Node's default), and
        those the daemon applies itself. An argument the op does not take is refused,
        so that nothing a request carries outlives its checks (a streaming request
        would hold it as long as the stream stays open)."""
        known = {a.key for a in self.args} | _SELECTORS.get(self.name, set())
        unknown = sorted(k for k in args if k not in known)
        if unknown:
            raise ControlProtocolError(f"{self.name} takes no argument {unknown[0]!r}")
        for_node: dict[str, Any] = dict(self.fixed)
        for_daemon: dict[str, Any] = {}
        for arg in self.args:
            value = args.get(arg.key)
            if value is None and arg.optional:
                continue
            (for_node if arg.node else for_daemon)[arg.name] = arg.kind.check(arg.key, value)
        return for_node, for_daemon


def _one(cls: type[T]) -> Callable[[Any], T]:
    return lambda value: expect(value, cls)


def _many(cls: type[T]) -> Callable[[Any], list[T]]:
    return lambda value: [expect(v, cls) for v in expect(value, list)]


def _nothing(value: Any) -> None:
    if value is not None:
        raise ControlProtocolError(f"expected no result, got a {type(value).__name__}")


_CHANNEL: Final = Arg("channel", CHANNEL)
_EXPIRES: Final = Arg("expires", INT, optional=True)

# fmt: off
STATUS: Final = Operation(
    name="status", node="status", client="status", result=_one(views.NodeStatus)
)
WATCH: Final = Operation(
    name="status", node="changes", client="watch", result=_one(views.NodeStatus),
    answer=Answer.FOLLOW, when="follow",
)
IDENTITY: Final = Operation(name="identity", node=None, client="identity", result=_one(dict))
PEERS: Final = Operation(name="peers", node="peers", client="peers", result=_many(views.PeerInfo))
PEER_ADD: Final = Operation(
    name="peer_add", node="connect", client="add_peer", result=_one(views.PeerInfo),
    args=(Arg("address", STR),),
)
CHANNELS: Final = Operation(
    name="channels", node="channels", client="channels", result=_many(views.ChannelInfo)
)
CHANNEL_CREATE: Final = Operation(
    name="channel_create", node="create_channel", client="create_channel",
    result=_one(views.ChannelInfo), args=(Arg("name", STR),),
)
CHANNEL_INVITE: Final = Operation(
    name="channel_invite", node="invite", client="invite", result=_one(str),
    args=(
        _CHANNEL, _EXPIRES, Arg("offline", BOOL, optional=True),
        Arg("with_history", BOOL, optional=True), Arg("for_group", GROUP, optional=True),
    ),
)
CHANNEL_JOIN: Final = Operation(
    name="channel_join", node="join", client="join", result=_one(views.ChannelInfo),
    args=(Arg("code", STR),),
)
CHANNEL_LEAVE: Final = Operation(
    name="channel_leave", node="leave", client="leave", result=_nothing, args=(_CHANNEL,)
)
CHANNEL_REKEY: Final = Operation(
    name="channel_rekey", node="rekey", client="rekey", result=_one(views.ChannelInfo),
    args=(_CHANNEL, Arg("remove", GROUPS, optional=True)),
)
CHANNEL_REMOVE: Final = Operation(
    name="channel_remove", node="remove", client="remove", result=_one(views.ChannelInfo),
    args=(_CHANNEL, Arg("groups", GROUPS)),
)
CHANNEL_MEMBERS: Final = Operation(
    name="channel_members", node="members", client="members",
    result=_many(views.MemberInfo), args=(_CHANNEL,),
)
CHANNEL_INVITES: Final = Operation(
    name="channel_invites", node="invites", client="invites",
    result=_many(views.InviteInfo), args=(_CHANNEL,),
)
CHANNEL_REVOKE: Final = Operation(
    name="channel_revoke", node="revoke_invite", client="revoke_invite", result=_nothing,
    args=(_CHANNEL, Arg("invite_id", HEX_ID)),
)
CHANNEL_LOG: Final = Operation(
    name="channel_log", node="log", client="log", result=_many(views.OperationInfo),
    args=(_CHANNEL,),
)
CHANNEL_UPGRADE: Final = Operation(
    name="channel_upgrade", node="upgrade", client="upgrade", result=_one(views.ChannelInfo),
    args=(_CHANNEL, Arg("keep", GROUPS, optional=True)),
)
POST: Final = Operation(
    name="post", node="post", client="post", result=_one(views.BulletinRecord),
    args=(_CHANNEL, Arg("text", TEXT), Arg("reply_to", BYTES, optional=True), _EXPIRES),
)
POST_PUBLIC: Final = Operation(
    name="post_public", node="post_public", client="post_public",
    result=_one(views.BulletinRecord), args=(Arg("text", TEXT), _EXPIRES),
)
SEND: Final = Operation(
    name="send", node="send", client="send", result=_one(views.BulletinRecord),
    args=(Arg("recipients", GROUPS), Arg("text", TEXT), _EXPIRES),
)
ENDORSE: Final = Operation(
    name="endorse", node="endorse", client="endorse", result=_one(views.BulletinRecord),
    args=(Arg("bulletin_id", BYTES, wire="id"),),
)
READ: Final = Operation(
    name="read", node="bulletins", client="read", result=_many(views.BulletinRecord),
    args=(
        Arg("channel", CHANNEL, optional=True), Arg("since", INT, optional=True),
        Arg("limit", INT, optional=True, node=False),
    ),
    answer=Answer.LIST, fixed={"follow": False},
)
FOLLOW: Final = Operation(
    name="read", node="bulletins", client="follow", result=_one(views.BulletinRecord),
    args=(Arg("channel", CHANNEL, optional=True), Arg("since", INT, optional=True)),
    answer=Answer.FOLLOW, when="follow", fixed={"follow": True},
)
UNREADABLE: Final = Operation(
    name="unreadable", node="unreadable", client="unreadable",
    result=_many(views.UnreadableInfo), answer=Answer.LIST,
)
CONTACTS: Final = Operation(
    name="contacts", node="contacts", client="contacts", result=_many(views.ContactInfo)
)
CONTACT_ADD: Final = Operation(
    name="contact_add", node="add_contact", client="add_contact",
    result=_one(views.ContactInfo), args=(Arg("petname", STR), Arg("key", STR)),
)
CONTACT_VERIFY: Final = Operation(
    name="contact_verify", node="verify_contact", client="verify_contact",
    result=_one(views.ContactInfo), args=(Arg("petname", STR),),
)
CONTACT_BLOCK: Final = Operation(
    name="contact_block", node="block_contact", client="block_contact",
    result=_one(views.ContactInfo), args=(Arg("petname", STR),),
)

OPERATIONS: Final[tuple[Operation[Any], ...]] = (
    STATUS, WATCH, IDENTITY, PEERS, PEER_ADD, CHANNELS, CHANNEL_CREATE, CHANNEL_INVITE,
    CHANNEL_JOIN, CHANNEL_LEAVE, CHANNEL_REKEY, CHANNEL_REMOVE, CHANNEL_MEMBERS,
    CHANNEL_INVITES, CHANNEL_REVOKE, CHANNEL_LOG, CHANNEL_UPGRADE, POST, POST_PUBLIC, SEND,
    ENDORSE, READ, FOLLOW, UNREADABLE, CONTACTS, CONTACT_ADD, CONTACT_VERIFY, CONTACT_BLOCK,
)
"""Every operation of the control socket, in the order of docs/spec/control.md."""
# fmt: on


_SELECTORS: Final[dict[str, set[str]]] = {}
"""Op name -> the ``when`` arguments that select among its rows (any row may see them)."""
for _row in OPERATIONS:
    if _row.when is not None:
        _SELECTORS.setdefault(_row.name, set()).add(_row.when)


def find_operation(op: str, args: Mapping[str, Any]) -> Operation[Any]:
    """The row that answers ``op`` with these arguments: the one whose ``when`` argument is
    true, else the one without ``when``.

    Raises:
        ControlProtocolError: no such op, or a ``when`` argument that is not a bool.
    """
    rows = [row for row in OPERATIONS if row.name == op]
    if not rows:
        raise ControlProtocolError(f"unknown operation {op!r}")
    for row in rows:
        flag = None if row.when is None else args.get(row.when)
        if flag is not None and _typed(str(row.when), flag, (bool,)):
            return row
    return next(row for row in rows if row.when is None)
