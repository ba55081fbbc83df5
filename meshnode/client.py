"""The client for a running daemon, used by the CLI and by developers.

``meshnode.connect()`` returns a synchronous :class:`Client`; trio code uses
``meshnode.connect_async()``, an :class:`AsyncClient` whose every method is the
synchronous one run in a worker thread, so both always offer the same
operations. Each call opens one connection to the control socket
(docs/spec/control.md), sends one request and reads the answer.
"""

from __future__ import annotations

import functools
import shlex
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

from meshnode import control
from meshnode.errors import DaemonUnreachable, OperationTimeout
from meshnode.paths import resolve_data_dir

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence

    from meshnode.core.views import (
        BulletinRecord,
        ChannelInfo,
        ChannelRef,
        ContactInfo,
        InviteInfo,
        MemberInfo,
        NodeStatus,
        OperationInfo,
        PeerInfo,
        UnreadableInfo,
    )

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

SOCKET_POINTER = "control.path"
"""A file in the data directory naming the socket when it lives elsewhere (long paths)."""

MAX_TEXT: Final = control.MAX_TEXT
"""The longest text (in UTF-8 bytes) a Client sends for one bulletin (BulletinTooLarge)."""


def socket_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the daemon of ``data_dir`` listens (see :mod:`meshnode.home` for the default)."""
    home = resolve_data_dir(data_dir)
    try:
        return Path((home / SOCKET_POINTER).read_text().strip())
    except OSError:
        # No pointer (the usual case), or a data directory we may not search:
        # connecting then says so in a DaemonUnreachable message.
        return home / control.SOCKET_NAME


class Client:
    """A synchronous connection to a daemon's control socket.

    Every method raises the daemon's own :class:`~meshnode.errors.MeshError`
    subclass on failure, :class:`~meshnode.errors.DaemonUnreachable` when no
    daemon answers and :class:`~meshnode.errors.OperationTimeout` after
    ``timeout`` seconds without an answer.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 60.0,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.data_dir = Path(data_dir) if data_dir is not None else None
        """The data directory the daemon runs on, named in error messages."""

    def _start_hint(self) -> str:
        if self.data_dir is None or self.data_dir == resolve_data_dir(None):
            return "meshnode daemon"
        return f"meshnode daemon --data-dir {shlex.quote(str(self.data_dir))}"

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            where = self.data_dir if self.data_dir is not None else self.path.parent
            raise DaemonUnreachable(
                f"no meshnode daemon is running for {where} (start one with '{self._start_hint()}')"
            ) from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"no permission to use the control socket {self.path}"
            ) from None
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(f"cannot reach the daemon at {self.path}: {exc}") from None
        return sock

    def _exchange(self, op: str, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Send one request and yield every answer frame until the final one."""
        with self._connect() as sock:
            try:
                sock.sendall(control.frame(control.request(op, **args)))
                while True:
                    header = _recv_exact(sock, 4)
                    message = control.parse_frame(_recv_exact(sock, control.frame_length(header)))
                    yield message
                    if "item" not in message:
                        return
            except TimeoutError:
                raise OperationTimeout(
                    f"the daemon did not answer '{op}' within {self.timeout:g} s"
                ) from None
            except (ConnectionError, BrokenPipeError):
                raise DaemonUnreachable("the daemon closed the connection (did it stop?)") from None

    def call(self, op: str, **args: Any) -> Any:
        """Run one operation and return its decoded result."""
        for message in self._exchange(op, args):
            if "item" in message:
                continue
            if not message.get("ok"):
                control.raise_failure(message)
            return control.decode_value(message.get("result"))
        raise DaemonUnreachable("the daemon closed the connection without an answer")

    def stream(self, op: str, **args: Any) -> Generator[Any, None, None]:
        """Run one streaming operation, yielding each item as it arrives."""
        for message in self._exchange(op, args):
            if "item" in message:
                yield control.decode_value(message["item"])
            elif not message.get("ok"):
                control.raise_failure(message)

    def _run(self, operation: control.Operation[R], /, **args: Any) -> R:
        """One operation of the table (``control.OPERATIONS``) that answers once or with
        a list: its request from ``args`` (by Python name), its checked answer."""
        request = operation.request(**args)
        if operation.answer is control.Answer.ONE:
            return operation.result(self.call(operation.name, **request))
        assert operation.answer is control.Answer.LIST, operation
        return operation.result(list(self.stream(operation.name, **request)))

    def _follow(self, operation: control.Operation[R], /, **args: Any) -> Generator[R, None, None]:
        """One ``FOLLOW`` operation of the table: its checked items, until the caller stops."""
        assert operation.answer is control.Answer.FOLLOW, operation
        for value in self.stream(operation.name, **operation.request(**args)):
            yield operation.result(value)

    # The operations, each one call through its row of control.OPERATIONS (which pairs it
    # with its Node method). A channel is a ChannelRef (a ChannelInfo, an id, a name or
    # the id in hex: the daemon resolves it as Node does); groups are petnames or key texts.

    def status(self) -> NodeStatus:
        """Peers, DHT size, channels, last sync, pending deliveries, held mail,
        reachability."""
        return self._run(control.STATUS)

    def watch(self) -> Generator[NodeStatus, None, None]:
        """The status now, then again after each change (sessions, channels, syncs,
        deliveries, held mail), until the caller stops: wait on the daemon instead of
        asking it again and again."""
        return self._follow(control.WATCH)

    def identity(self) -> dict[str, str]:
        """This node's name, fingerprint, key text and address."""
        return self._run(control.IDENTITY)

    def peers(self) -> list[PeerInfo]:
        """The open sessions with other nodes."""
        return self._run(control.PEERS)

    def add_peer(self, address: str) -> PeerInfo:
        """Open a session with the node at ``host:port``."""
        return self._run(control.PEER_ADD, address=address)

    def channels(self) -> list[ChannelInfo]:
        """The channels this group is a member of."""
        return self._run(control.CHANNELS)

    def create_channel(self, name: str) -> ChannelInfo:
        """Create a channel; this group is its first member."""
        return self._run(control.CHANNEL_CREATE, name=name)

    def invite(
        self,
        channel: ChannelRef,
        expires: int | None = 7 * 86400,
        offline: bool = False,
        with_history: bool = False,
        for_group: str | bytes | None = None,
    ) -> str:
        """A one-time invite code for ``channel``, valid for ``expires`` seconds (None:
        the default, 7 days), redeemed online at this node (see ``Node.invite``).

        Raises:
            UnknownChannel: the daemon's node has no such channel.
            AmbiguousChannel: the name (or id prefix) fits several: pass the id.
        """
        return self._run(
            control.CHANNEL_INVITE,
            channel=channel,
            expires=expires,
            offline=offline,
            with_history=with_history,
            for_group=for_group,
        )

    def members(self, channel: ChannelRef) -> list[MemberInfo]:
        """The members of ``channel`` by seniority, from its membership log."""
        return self._run(control.CHANNEL_MEMBERS, channel=channel)

    def remove(self, channel: ChannelRef, groups: Sequence[str | bytes]) -> ChannelInfo:
        """Remove groups from ``channel`` and start the epoch they cannot read."""
        return self._run(control.CHANNEL_REMOVE, channel=channel, groups=groups)

    def invites(self, channel: ChannelRef) -> list[InviteInfo]:
        """The invites of ``channel``, oldest first."""
        return self._run(control.CHANNEL_INVITES, channel=channel)

    def revoke_invite(self, channel: ChannelRef, invite_id: bytes | str) -> None:
        """Revoke an unused invite of ``channel``."""
        return self._run(control.CHANNEL_REVOKE, channel=channel, invite_id=invite_id)

    def upgrade(self, channel: ChannelRef, keep: Sequence[str | bytes] = ()) -> ChannelInfo:
        """Give a channel made by meshnode 0.1.0 its membership log, keeping ``keep``."""
        return self._run(control.CHANNEL_UPGRADE, channel=channel, keep=keep)

    def log(self, channel: ChannelRef) -> list[OperationInfo]:
        """The membership operations of ``channel``, oldest first."""
        return self._run(control.CHANNEL_LOG, channel=channel)

    def join(self, code: str) -> ChannelInfo:
        """Join the channel an invite code admits to."""
        return self._run(control.CHANNEL_JOIN, code=code)

    def leave(self, channel: ChannelRef) -> None:
        """Leave a channel and forget its keys."""
        return self._run(control.CHANNEL_LEAVE, channel=channel)

    def rekey(self, channel: ChannelRef, remove: Sequence[str | bytes] = ()) -> ChannelInfo:
        """Start a new epoch of ``channel``, leaving out the groups in ``remove``."""
        return self._run(control.CHANNEL_REKEY, channel=channel, remove=remove)

    def post(
        self,
        channel: ChannelRef,
        text: str,
        *,
        reply_to: bytes | None = None,
        expires: int | None = None,
    ) -> BulletinRecord:
        """Post to a channel; returns once the bulletin is durable on disk.

        Raises:
            BulletinTooLarge: ``text`` does not fit one bulletin (checked before sending).
        """
        return self._run(
            control.POST, channel=channel, text=text, reply_to=reply_to, expires=expires
        )

    def post_public(self, text: str, *, expires: int | None = None) -> BulletinRecord:
        """Post a public bulletin, readable by the whole mesh."""
        return self._run(control.POST_PUBLIC, text=text, expires=expires)

    def send(
        self, recipients: Sequence[str], text: str, *, expires: int | None = None
    ) -> BulletinRecord:
        """A direct bulletin to 1 to 16 groups (petnames or key texts); it waits for an
        offline recipient with holders near it for ``expires`` seconds (None: 7 days)."""
        return self._run(control.SEND, recipients=recipients, text=text, expires=expires)

    def endorse(self, bulletin_id: bytes) -> BulletinRecord:
        """State publicly that this group stands behind a bulletin."""
        return self._run(control.ENDORSE, bulletin_id=bulletin_id)

    def read(
        self,
        channel: ChannelRef | None = None,
        *,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[BulletinRecord]:
        """Stored bulletins (all readable ones, or one channel's), oldest first; with
        ``limit``, the newest ``limit`` of them."""
        return self._run(control.READ, channel=channel, since=since, limit=limit)

    def follow(
        self, channel: ChannelRef | None = None, *, since: int | None = None
    ) -> Generator[BulletinRecord, None, None]:
        """Stored bulletins, then new ones as they arrive, until the caller stops."""
        return self._follow(control.FOLLOW, channel=channel, since=since)

    def unreadable(self) -> list[UnreadableInfo]:
        """Stored bulletins addressed to this group that do not open, oldest first, each
        with why (``read`` skips them)."""
        return self._run(control.UNREADABLE)

    def contacts(self) -> list[ContactInfo]:
        """The groups this node knows by petname."""
        return self._run(control.CONTACTS)

    def add_contact(self, petname: str, key: str) -> ContactInfo:
        """Name a group's key (``mk1...``) with a petname."""
        return self._run(control.CONTACT_ADD, petname=petname, key=key)

    def verify_contact(self, petname: str) -> ContactInfo:
        """Mark a contact as verified (its fingerprint was compared in person)."""
        return self._run(control.CONTACT_VERIFY, petname=petname)

    def block_contact(self, petname: str) -> ContactInfo:
        """Refuse this group's bulletins and sessions from now on."""
        return self._run(control.CONTACT_BLOCK, petname=petname)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("closed")
        chunks += chunk
    return bytes(chunks)


def _async_twin(
    method: Callable[Concatenate[Client, P], R],
) -> Callable[Concatenate[AsyncClient, P], Awaitable[R]]:
    async def call(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        import trio

        work = functools.partial(method, self.sync, *args, **kwargs)
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)

    call.__name__ = method.__name__
    call.__qualname__ = f"AsyncClient.{method.__name__}"
    call.__doc__ = method.__doc__
    call.__wrapped__ = method  # type: ignore[attr-defined]  # (inspect.signature follows it)
    return call


class AsyncClient:
    """The async twin of :class:`Client` for trio code: same methods, awaited."""

    def __init__(self, client: Client) -> None:
        self.sync = client

    status = _async_twin(Client.status)
    identity = _async_twin(Client.identity)
    peers = _async_twin(Client.peers)
    add_peer = _async_twin(Client.add_peer)
    channels = _async_twin(Client.channels)
    create_channel = _async_twin(Client.create_channel)
    invite = _async_twin(Client.invite)
    join = _async_twin(Client.join)
    leave = _async_twin(Client.leave)
    rekey = _async_twin(Client.rekey)
    members = _async_twin(Client.members)
    remove = _async_twin(Client.remove)
    invites = _async_twin(Client.invites)
    revoke_invite = _async_twin(Client.revoke_invite)
    log = _async_twin(Client.log)
    upgrade = _async_twin(Client.upgrade)
    post = _async_twin(Client.post)
    post_public = _async_twin(Client.post_public)
    send = _async_twin(Client.send)
    endorse = _async_twin(Client.endorse)
    read = _async_twin(Client.read)
    unreadable = _async_twin(Client.unreadable)
    contacts = _async_twin(Client.contacts)
    add_contact = _async_twin(Client.add_contact)
    verify_contact = _async_twin(Client.verify_contact)
    block_contact = _async_twin(Client.block_contact)

    async def follow(
        self, channel: ChannelRef | None = None, *, since: int | None = None
    ) -> AsyncIterator[BulletinRecord]:
        """Stored bulletins, then new ones as they arrive (see :meth:`Client.follow`)."""
        async for record in _pumped(lambda: self.sync.follow(channel, since=since)):
            yield record

    async def watch(self) -> AsyncIterator[NodeStatus]:
        """The status, then again after each change (see :meth:`Client.watch`)."""
        async for status in _pumped(self.sync.watch):
            yield status


async def _pumped(items: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """A blocking stream of the sync client, read in a worker thread, as an async one."""
    import trio

    send, receive = trio.open_memory_channel[T](64)
    token = trio.lowlevel.current_trio_token()

    def pump() -> None:
        try:
            for item in items():
                trio.from_thread.run(send.send, item, trio_token=token)
        finally:
            trio.from_thread.run_sync(send.close, trio_token=token)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(trio.to_thread.run_sync, pump, abandon_on_cancel=True))
        async with receive:
            async for item in receive:
                yield item
        nursery.cancel_scope.cancel()


def connect(data_dir: str | os.PathLike[str] | None = None, *, timeout: float = 60.0) -> Client:
    """A client for the daemon running on ``data_dir`` (default: the default data dir)."""
    return Client(socket_path(data_dir), timeout=timeout, data_dir=resolve_data_dir(data_dir))


def connect_async(
    data_dir: str | os.PathLike[str] | None = None, *, timeout: float = 60.0
) -> AsyncClient:
    """The async twin of :func:`connect`, for trio code."""
    return AsyncClient(connect(data_dir, timeout=timeout))
