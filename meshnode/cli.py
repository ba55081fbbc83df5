"""The ``meshnode`` command: parsing, rendering (text or --json) and exit codes.

One dispatcher turns every known error into one line on stderr,
``meshnode: error: ...``, and an :class:`ExitStatus`; ``--traceback`` shows the
whole story instead. Options common to every command (``--data-dir``,
``--json``, ``--traceback``) are accepted before or after the subcommand.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import getpass
import json
import os
import shlex
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from meshnode.errors import (
    AlreadyInitialised,
    ConfigError,
    DaemonUnreachable,
    MeshError,
    OperationTimeout,
    PeerDisconnected,
    ProtocolError,
    UsageError,
)

if TYPE_CHECKING:
    from meshnode.client import Client
    from meshnode.core.views import (
        BulletinRecord,
        ChannelInfo,
        ContactInfo,
        InviteInfo,
        MemberInfo,
        NodeStatus,
        OperationInfo,
        PeerInfo,
        UnreadableInfo,
    )


class ExitStatus(IntEnum):
    """The documented exit codes of every ``meshnode`` command."""

    OK = 0
    ERROR = 1
    USAGE = 2
    DAEMON_UNREACHABLE = 3
    TIMEOUT = 4
    PEER_FAILURE = 5
    INTERRUPTED = 130


PASSPHRASE_ENV = "MESHNODE_PASSPHRASE"
_CHANNEL_HELP = "a channel's name, or its id in hex (8 digits or more; see 'channel list')"
"""Names may repeat (a join can bring a second channel of a name): the id never does."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes become UsageError, handled by the dispatcher."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are SUPPRESSed, so a value given before the
    # subcommand is not overwritten by the subparser's default.
    default: Any = None if top else argparse.SUPPRESS
    flag_default: Any = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--data-dir",
        default=default,
        metavar="DIR",
        help="the node's data directory (default: $MESHNODE_HOME or the XDG data dir)",
    )
    parser.add_argument(
        "--json", action="store_true", default=flag_default, help="print JSON instead of text"
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=flag_default,
        help="show the full traceback of an error (for bug reports)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, also used to generate docs/cli.md."""
    parser = _Parser(
        prog="meshnode",
        description="A peer-to-peer bulletin network for groups.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 daemon unreachable, 4 timeout, "
        "5 peer or protocol failure, 130 interrupted.",
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(
        group: Any, name: str, help_text: str, run: Callable[[argparse.Namespace], None]
    ) -> Any:
        p = group.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        p.set_defaults(run=run)
        return p

    def noun(name: str, help_text: str) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        p.set_defaults(run=_needs_subcommand(p))
        return p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)

    p = command(sub, "init", "create this group's identity, store and configuration", _cmd_init)
    p.add_argument("--name", help="the group's display name (default: the host name)")
    p.add_argument("--passphrase", action="store_true", help=_PASSPHRASE_HELP)
    p.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 0.0.0.0:7447)")
    p.add_argument("--announce", metavar="HOST:PORT", help="public address other nodes dial")
    p.add_argument(
        "--bootstrap", metavar="HOST:PORT", nargs="+", default=[], help="nodes to join through"
    )
    mesh = p.add_mutually_exclusive_group()
    mesh.add_argument("--network-key", metavar="FILE", help="join the private mesh of this key")
    mesh.add_argument(
        "--private-mesh",
        action="store_true",
        help="start a new private mesh: writes network.key to hand to the other groups",
    )
    p.add_argument(
        "--if-missing", action="store_true", help="succeed without change if already initialised"
    )

    p = command(sub, "id", "show this group's name, fingerprint and contact card", _cmd_id)
    p.add_argument("--qr", action="store_true", help="also show the contact card as a QR code")
    p.add_argument("--passphrase", action="store_true", help=_PASSPHRASE_HELP)

    p = command(sub, "daemon", "run this group's node in the foreground", _cmd_daemon)
    p.add_argument("--listen", metavar="HOST:PORT", help="override the configured listen address")
    p.add_argument("--bootstrap", metavar="HOST:PORT", nargs="+", help="override bootstrap nodes")
    p.add_argument("--log-format", choices=("text", "json"), help="logs for people or machines")
    p.add_argument("--passphrase", action="store_true", help=_PASSPHRASE_HELP)

    p = command(sub, "status", "peers, DHT size, channels, sync and reachability", _cmd_status)
    p.add_argument("--follow", action="store_true", help="print it again at each change")

    channel = noun("channel", "create, share, join and manage channels")
    p = command(channel, "create", "create a channel (this group is its first member)", _cmd_create)
    p.add_argument("name")
    p = command(channel, "invite", "print a one-time invite code for a channel", _cmd_invite)
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument("--expires", metavar="DURATION", help="e.g. 7d, 12h (default: 7d)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="a code that works without this node online (it carries the channel's key)",
    )
    p.add_argument(
        "--with-history", action="store_true", help="also hand over the earlier epochs' keys"
    )
    p.add_argument(
        "--for", dest="for_group", metavar="GROUP", help="only this group may use the code"
    )
    p = command(channel, "join", "join a channel with an invite code", _cmd_join)
    p.add_argument("code")
    command(channel, "list", "list this group's channels", _cmd_channels)
    p = command(channel, "members", "list a channel's members, by seniority", _cmd_members)
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(
        channel, "remove", "remove groups from a channel and rekey it without them", _cmd_remove
    )
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument("groups", metavar="GROUP", nargs="+", help="petname, fingerprint or key")
    p = command(channel, "invites", "list a channel's invites and who used them", _cmd_invites)
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(channel, "revoke", "revoke an unused invite", _cmd_revoke)
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument("invite_id", metavar="INVITE_ID", help="from 'channel invites' (8+ hex digits)")
    p = command(
        channel, "log", "the audit trail: who added, invited, removed whom, when", _cmd_log
    )
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(
        channel, "upgrade", "give a channel made by meshnode 0.1.0 its membership log", _cmd_upgrade
    )
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument(
        "--keep",
        metavar="GROUP",
        nargs="+",
        default=[],
        help="the groups that stay members (petname, fingerprint or key)",
    )
    p = command(channel, "leave", "leave a channel and forget its keys", _cmd_leave)
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(channel, "rekey", "start a new key epoch, optionally removing a group", _cmd_rekey)
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument(
        "--remove",
        metavar="GROUP",
        action="append",
        default=[],
        help="a member to leave out (petname or key); repeatable",
    )

    p = command(sub, "post", "post a bulletin to a channel (or --public)", _cmd_post)
    p.add_argument("channel", nargs="?", help=f"{_CHANNEL_HELP} (omit with --public)")
    p.add_argument("text", nargs="?", help="the text, or - to read it from standard input")
    p.add_argument("--public", action="store_true", help="post to the whole mesh")
    p.add_argument("--reply-to", metavar="ID", help="the id of the bulletin this answers")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 7d, 12h (default: never)")

    p = command(sub, "send", "send a direct bulletin to a group", _cmd_send)
    p.add_argument("group", help="a contact's petname or a group key (mk1...)")
    p.add_argument("text", nargs="?", help="the text, or - to read it from standard input")

    p = command(sub, "read", "read bulletins, and with --follow wait for new ones", _cmd_read)
    p.add_argument("channel", nargs="?", help=f"only this channel: {_CHANNEL_HELP}")
    p.add_argument("--since", metavar="WHEN", help="a duration ago (2h, 3d) or a date (2026-11-25)")
    p.add_argument(
        "--limit", metavar="N", type=int, help="only the newest N bulletins (oldest first)"
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--follow", action="store_true", help="keep printing new bulletins")
    shown.add_argument(
        "--unreadable",
        action="store_true",
        help="list instead the bulletins for this group that do not open, and why",
    )

    p = command(sub, "endorse", "state that this group stands behind a bulletin", _cmd_endorse)
    p.add_argument("id")

    contact = noun("contact", "name the groups you know")
    p = command(contact, "add", "give a group's key a petname", _cmd_contact_add)
    p.add_argument("name")
    p.add_argument("key", help="the group's key text (mk1...)")
    command(contact, "list", "list contacts", _cmd_contact_list)
    p = command(contact, "verify", "mark a contact as verified in person", _cmd_contact_verify)
    p.add_argument("name")
    p = command(contact, "block", "refuse a group's bulletins and sessions", _cmd_contact_block)
    p.add_argument("name")

    peer = noun("peer", "the nodes this node talks to")
    command(peer, "list", "list open sessions", _cmd_peer_list)
    p = command(peer, "add", "open a session with a node", _cmd_peer_add)
    p.add_argument("address", metavar="HOST:PORT")
    return parser


_PASSPHRASE_HELP = f"ask for the identity's passphrase (scripts: set ${PASSPHRASE_ENV})"


def _needs_subcommand(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        raise UsageError(f"'{parser.prog}' needs an action (see '{parser.prog} --help')")

    return run


# Rendering ------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _emit_json(value: Any) -> None:
    print(json.dumps(_jsonable(value)), flush=True)


def _print_view(args: argparse.Namespace, view: dict[str, str]) -> None:
    if args.json:
        _emit_json(view)
        return
    width = max(len(k) for k in view)
    for key, value in view.items():
        print(f"{key.replace('_', ' '):<{width}}  {value}")


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _print_bulletin(record: BulletinRecord) -> None:
    where = f"#{record.channel}" if record.channel else record.kind
    reply = f"  (reply to {record.reply_to.hex()[:12]})" if record.reply_to else ""
    text = record.text
    if record.endorses is not None:
        text = f"stands behind {record.endorses.hex()[:16]}" + (f": {text}" if text else "")
    print(f"[{_when(record.created_at)}] {where} {record.author_name}: {text}{reply}")
    print(f"    id {record.id.hex()[:16]}", flush=True)


def _unreadable_line(u: UnreadableInfo) -> str:
    where = f"#{u.channel}" if u.channel else u.kind
    fault = " (the author's doing)" if u.author_at_fault else ""
    head = f"[{_when(u.created_at)}] {where} {u.author_name}: {u.reason}{fault}"
    return f"{head}\n    id {u.id.hex()[:16]}"


# Argument parsing helpers ----------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``30s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    text = text.strip().lower()
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in _UNITS:
        seconds = int(text[:-1]) * _UNITS[text[-1]]
        if seconds > 0:
            return seconds
    raise UsageError(f"not a duration: {text!r} (try 30m, 12h, 7d or 2w)")


def parse_when(text: str, now: float) -> int:
    """A Unix time from a duration ago (``2h``) or an ISO date or date-time."""
    if text[:1].isdigit() and text[-1:].lower() in _UNITS:
        return int(now) - parse_duration(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a time: {text!r} (try 2h, 3d or 2026-11-25)") from None
    return int(moment.timestamp())


def _read_text(text: str | None) -> str:
    if text is None or text == "-":
        if text is None and sys.stdin.isatty():
            raise UsageError("give the text, or - to read it from standard input")
        return sys.stdin.read().rstrip("\n")
    return text


def _bulletin_id(text: str) -> bytes:
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:
        raise UsageError(f"not a bulletin id: {text!r} (64 hex digits)") from None
    if len(value) != 32:
        raise UsageError(f"not a bulletin id: {text!r} (64 hex digits)")
    return value


# Commands -------------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Any:
    from meshnode.home import DataDir

    return DataDir.resolve(args.data_dir)


def _client(args: argparse.Namespace) -> Client:
    from meshnode.client import connect

    return connect(args.data_dir)


def _ask_passphrase(prompt: str, *, confirm: bool) -> str:
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise UsageError(f"no terminal to ask for the passphrase: set ${PASSPHRASE_ENV}")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise UsageError("the two passphrases differ")
    return first


def _passphrase_for(home: Any) -> str | None:
    return _ask_passphrase("Passphrase: ", confirm=False) if home.needs_passphrase() else None


def _identity_view(identity: Any, home: Any) -> dict[str, str]:
    return {
        "name": identity.name,
        "fingerprint": identity.fingerprint,
        "key": identity.key_text,
        "data_dir": str(home.path),
    }


def _cmd_init(args: argparse.Namespace) -> None:
    from meshnode.config import Config, check_address, render

    home = _data_dir(args)
    if home.is_initialised():
        if args.if_missing:
            return
        raise AlreadyInitialised(f"{home.path} already holds an identity: see 'meshnode id'")
    try:
        config = Config().replace(
            listen=args.listen and check_address(args.listen, "--listen"),
            announce=args.announce and check_address(args.announce, "--announce"),
            bootstrap=tuple(check_address(a, "--bootstrap") for a in args.bootstrap) or None,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    network_key_file = None
    if args.network_key:
        from meshnode.daemon import read_network_key

        read_network_key(args.network_key)
        network_key_file = str(Path(args.network_key).expanduser().resolve())
    name = args.name or socket.gethostname() or "meshnode"
    passphrase = None
    if args.passphrase or os.environ.get(PASSPHRASE_ENV):
        passphrase = _ask_passphrase("New passphrase: ", confirm=True)
    identity = home.initialise(name, passphrase)
    from meshnode.api import write_private_file

    if args.private_mesh:
        key_path = home.path / "network.key"
        write_private_file(key_path, os.urandom(32).hex().encode() + b"\n")
        network_key_file = str(key_path)
    config = config.replace(network_key_file=network_key_file)
    write_private_file(home.config_path, render(config).encode())
    view = _identity_view(identity, home)
    if network_key_file:
        view["network_key"] = network_key_file
    if not args.json:
        print(f"Created the identity of {identity.name!r} in {home.path}")
    _print_view(args, view)
    if args.private_mesh and not args.json:
        print(
            f"Hand {network_key_file} to the other groups of this private mesh "
            "(over a channel you trust): 'meshnode init --network-key FILE'."
        )


def _cmd_id(args: argparse.Namespace) -> None:
    home = _data_dir(args)
    identity = home.load_identity(_passphrase_for(home))
    view = _identity_view(identity, home)
    _print_view(args, view)
    if args.qr:
        import segno

        card = f"meshnode:{identity.key_text}?name={urllib.parse.quote(identity.name)}"
        segno.make(card, error="m").terminal(
            out=sys.stdout if not args.json else sys.stderr, compact=True
        )


def _cmd_daemon(args: argparse.Namespace) -> None:
    from meshnode.daemon import run_daemon

    home = _data_dir(args)
    if args.listen:
        from meshnode.config import check_address

        try:
            check_address(args.listen, "--listen")
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    run_daemon(
        home.path,
        listen=args.listen,
        bootstrap=tuple(args.bootstrap) if args.bootstrap else None,
        log_format=args.log_format,
        passphrase=_passphrase_for(home),
    )


def _cmd_status(args: argparse.Namespace) -> None:
    client = _client(args)
    show = _emit_json if args.json else _print_status
    if args.follow:
        for n, status in enumerate(client.watch()):
            if n and not args.json:
                print()  # (a blank line between two blocks)
            show(status)
        return
    show(client.status())


_STORAGE = {
    "ok": "ok",
    "full": "full: the disk of the data directory has no room; new bulletins are "
    "refused until there is (free space there)",
    "error": "error: the store failed; see the daemon's log",
}


def _print_status(status: NodeStatus) -> None:
    sync = _when(int(status.last_sync)) if status.last_sync else "not yet"
    print(f"{status.name}  {status.address}")
    print(f"peers              {status.peers}")
    print(f"DHT size (est.)    {status.dht_size}")
    print(f"channels           {status.channels}")
    print(f"last sync          {sync}")
    print(f"pending deliveries {status.pending_deliveries}")
    print(f"held for others    {status.held_mail}")
    print(f"unreadable         {status.unreadable}")
    print(f"storage            {_STORAGE.get(status.storage, status.storage)}")
    for notice in status.removed:
        print(f"removed            {notice}")
    if status.reachable is False:
        print(
            "reachable          no: other nodes cannot dial this one. If it is behind NAT, "
            "forward the TCP and UDP port to it and set 'announce' in meshnode.toml."
        )
    elif status.reachable:
        print("reachable          yes")
    elif status.peers:
        print(
            "reachable          not yet known: no node has dialled this one. If it is behind "
            "NAT, forward the TCP and UDP port to it and set 'announce' in meshnode.toml."
        )
    else:
        print("reachable          unknown (no peers yet)")
    sys.stdout.flush()


def _print_list(
    args: argparse.Namespace, items: list[Any], line: Callable[[Any], str], empty: str
) -> None:
    if args.json:
        for entry in items:
            _emit_json(entry)
        return
    if not items:
        print(empty)
    for entry in items:
        print(line(entry))


def _channel_line(c: ChannelInfo) -> str:
    line = (
        f"{c.name:<24} epoch {c.epoch:<3} {c.members} members  {c.bulletins} bulletins  "
        f"id {c.id.hex()[:16]}"
    )
    if c.removed_by is not None:
        return f"{line}  (removed from {c.name} by {c.removed_by})"
    if c.read_only:
        return f"{line}  (read-only until a member runs 'meshnode channel upgrade')"
    return line


def _cmd_create(args: argparse.Namespace) -> None:
    info = _client(args).create_channel(args.name)
    if args.json:
        _emit_json(info)
    else:
        print(
            f"Created channel {info.name!r}. Invite groups with 'meshnode channel invite "
            f"{shlex.quote(info.name)}'."
        )


def _cmd_invite(args: argparse.Namespace) -> None:
    expires = parse_duration(args.expires) if args.expires else 7 * 86400
    code = _client(args).invite(
        args.name,
        expires=expires,
        offline=args.offline,
        with_history=args.with_history,
        for_group=args.for_group,
    )
    if args.offline:
        print(
            f"Anyone who sees this code can read {args.name} until the next rekey, "
            "whatever its expiry.",
            file=sys.stderr,
        )
    if args.json:
        _emit_json({"channel": args.name, "code": code, "expires_in": expires})
    else:
        print(code)


def _cmd_join(args: argparse.Namespace) -> None:
    client = _client(args)
    info = client.join(args.code)
    members = client.members(info.id.hex())
    names = {m.key: m.name for m in members}
    from meshnode.core.identity import parse_key
    from meshnode.core.invite import parse_code

    me = parse_key(client.identity()["key"])
    adder = next((m.added_by for m in members if m.key == me), None)
    if adder is None:  # an offline code: a member adds us when we meet one
        adder = parse_code(args.code, now=int(time.time())).inviter
    inviter = names.get(adder, _fingerprint(adder))
    if args.json:
        _emit_json({**_jsonable(info), "invited_by": inviter})
    else:
        print(f"Joined {info.name!r} ({info.members} members), invited by {inviter}.")


def _member_line(m: MemberInfo) -> str:
    added = "founded it" if m.added_by is None else f"added {_when(m.added_at)}"
    return f"{m.name:<28} {_fingerprint(m.key)}  {added}"


def _cmd_members(args: argparse.Namespace) -> None:
    _print_list(args, _client(args).members(args.name), _member_line, "No members.")


def _cmd_remove(args: argparse.Namespace) -> None:
    info = _client(args).remove(args.name, args.groups)
    if args.json:
        _emit_json(info)
    else:
        print(
            f"Removed {', '.join(args.groups)} from {info.name!r}: it is now at epoch "
            f"{info.epoch} with {info.members} members."
        )


def _invite_line(i: InviteInfo) -> str:
    if i.revoked:
        state = "revoked"
    elif i.used_by is not None:
        state = f"used by {_fingerprint(i.used_by)}"
    else:
        state = f"expires {_when(i.expires_at)}"
    issued = f"issued by {_fingerprint(i.issued_by)} {_when(i.created_at)}"
    return f"{i.id.hex()[:16]}  {issued}  {state}"


def _fingerprint(key: bytes) -> str:
    from meshnode.core.identity import fingerprint

    return fingerprint(key)


def _cmd_invites(args: argparse.Namespace) -> None:
    _print_list(args, _client(args).invites(args.name), _invite_line, "No invites.")


def _cmd_revoke(args: argparse.Namespace) -> None:
    _client(args).revoke_invite(args.name, args.invite_id)
    if args.json:
        _emit_json({"revoked": args.invite_id})
    else:
        print(f"Revoked invite {args.invite_id}.")


def _operation_line(op: OperationInfo) -> str:
    whom = ", ".join(op.group_names)
    what = {
        "create": "created the channel",
        "epoch": f"started epoch {op.epoch}",
        "invite": f"issued invite {(op.invite or b'').hex()[:16]}",
        "revoke": f"revoked invite {(op.invite or b'').hex()[:16]}",
        "add": f"added {whom}",
        "remove": f"removed {whom}",
        "leave": "left",
    }[op.kind]
    void = "  (void: set aside by the merge rules)" if op.void else ""
    return f"{_when(op.created_at)}  {op.author_name} {what}{void}"


def _cmd_upgrade(args: argparse.Namespace) -> None:
    info = _client(args).upgrade(args.name, keep=args.keep)
    if args.json:
        _emit_json(info)
    else:
        print(
            f"{info.name!r} has a membership log now: {info.members} members, epoch "
            f"{info.epoch}. The kept groups get its key."
        )


def _cmd_log(args: argparse.Namespace) -> None:
    _print_list(args, _client(args).log(args.name), _operation_line, "No operations.")


def _cmd_channels(args: argparse.Namespace) -> None:
    _print_list(
        args,
        _client(args).channels(),
        _channel_line,
        "No channels yet: 'meshnode channel create NAME' or 'meshnode channel join CODE'.",
    )


def _cmd_leave(args: argparse.Namespace) -> None:
    _client(args).leave(args.name)
    if args.json:
        _emit_json({"left": args.name})
    else:
        print(f"Left channel {args.name!r}.")


def _cmd_rekey(args: argparse.Namespace) -> None:
    info = _client(args).rekey(args.name, remove=args.remove)
    if args.json:
        _emit_json(info)
    else:
        print(f"Channel {info.name!r} is now at epoch {info.epoch}.")


def _show_posted(args: argparse.Namespace, record: BulletinRecord) -> None:
    if args.json:
        _emit_json(record)
    else:
        print(f"Posted {record.id.hex()}")


def _cmd_post(args: argparse.Namespace) -> None:
    expires = parse_duration(args.expires) if args.expires else None
    client = _client(args)
    if args.public:
        if args.text is not None:
            raise UsageError("with --public give only the text")
        record = client.post_public(_read_text(args.channel), expires=expires)
    else:
        if args.channel is None:
            raise UsageError("give a channel (or --public)")
        reply_to = _bulletin_id(args.reply_to) if args.reply_to else None
        record = client.post(
            args.channel, _read_text(args.text), reply_to=reply_to, expires=expires
        )
    _show_posted(args, record)


def _cmd_send(args: argparse.Namespace) -> None:
    _show_posted(args, _client(args).send([args.group], _read_text(args.text)))


def _cmd_read(args: argparse.Namespace) -> None:
    since = parse_when(args.since, time.time()) if args.since else None
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit takes a positive number")
    if args.unreadable and (args.channel or since is not None or args.limit is not None):
        raise UsageError("--unreadable lists every unreadable bulletin: it takes no filter")
    client = _client(args)
    if args.unreadable:
        _print_list(args, client.unreadable(), _unreadable_line, "No unreadable bulletins.")
        return
    show = _emit_json if args.json else _print_bulletin
    if args.follow:
        for record in client.follow(args.channel, since=since):
            show(record)
        return
    records = client.read(args.channel, since=since, limit=args.limit)
    if not records and not args.json:
        print("No bulletins yet.")
    for record in records:
        show(record)


def _cmd_endorse(args: argparse.Namespace) -> None:
    _show_posted(args, _client(args).endorse(_bulletin_id(args.id)))


def _contact_line(c: ContactInfo) -> str:
    marks = ("verified " if c.verified else "") + ("blocked" if c.blocked else "")
    from meshnode.core.identity import fingerprint, format_key

    return f"{c.petname:<20} {fingerprint(c.key)}  {marks}\n    {format_key(c.key)}"


def _show_contact(args: argparse.Namespace, contact: ContactInfo) -> None:
    if args.json:
        _emit_json(contact)
    else:
        print(_contact_line(contact))


def _cmd_contact_add(args: argparse.Namespace) -> None:
    _show_contact(args, _client(args).add_contact(args.name, args.key))


def _cmd_contact_list(args: argparse.Namespace) -> None:
    _print_list(
        args,
        _client(args).contacts(),
        _contact_line,
        "No contacts yet: 'meshnode contact add NAME KEY'.",
    )


def _cmd_contact_verify(args: argparse.Namespace) -> None:
    _show_contact(args, _client(args).verify_contact(args.name))


def _cmd_contact_block(args: argparse.Namespace) -> None:
    _show_contact(args, _client(args).block_contact(args.name))


def _peer_line(p: PeerInfo) -> str:
    direction = "out" if p.outbound else "in"
    return f"{p.name:<20} {p.address:<22} {direction:<3}  {p.key.hex()[:16]}"


def _cmd_peer_list(args: argparse.Namespace) -> None:
    _print_list(
        args,
        _client(args).peers(),
        _peer_line,
        "No peers yet: 'meshnode peer add HOST:PORT' or wait for the DHT.",
    )


def _cmd_peer_add(args: argparse.Namespace) -> None:
    peer = _client(args).add_peer(args.address)
    if args.json:
        _emit_json(peer)
    else:
        print(_peer_line(peer))


_EXIT_FOR: tuple[tuple[type[BaseException], ExitStatus], ...] = (
    (UsageError, ExitStatus.USAGE),
    (DaemonUnreachable, ExitStatus.DAEMON_UNREACHABLE),
    (OperationTimeout, ExitStatus.TIMEOUT),
    (ProtocolError, ExitStatus.PEER_FAILURE),
    (PeerDisconnected, ExitStatus.PEER_FAILURE),
)


def exit_status_for(exc: MeshError) -> ExitStatus:
    """The documented exit code of an error (1 unless it is one of the special kinds)."""
    for kind, status in _EXIT_FOR:
        if isinstance(exc, kind):
            return status
    return ExitStatus.ERROR


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status (``main`` exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    traceback_wanted = "--traceback" in args_list
    try:
        args = build_parser().parse_args(args_list)
        if not hasattr(args, "run"):
            build_parser().print_help(sys.stderr)
            return ExitStatus.USAGE
        args.run(args)
        return ExitStatus.OK
    except KeyboardInterrupt:
        if traceback_wanted:
            raise
        print("meshnode: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except MeshError as exc:
        if traceback_wanted:
            raise
        print(f"meshnode: error: {exc}", file=sys.stderr)
        return exit_status_for(exc)
    except BrokenPipeError:
        # A reader such as `head` went away: not an error of ours.
        sys.stderr.close()
        return ExitStatus.OK


def main() -> NoReturn:
    """Console-script entry point."""
    sys.exit(run())


def render_docs() -> str:
    """docs/cli.md: every command's --help, generated so it cannot drift from the code."""
    parser = build_parser()
    out = [
        "# The meshnode command line",
        "",
        "Generated from `meshnode --help` by `make docs`; a test fails when it is stale.",
        "Options common to every command (`--data-dir`, `--json`, `--traceback`) go before",
        "or after the command. Exit codes: 0 ok, 1 error, 2 usage, 3 daemon unreachable,",
        "4 timeout, 5 peer or protocol failure, 130 interrupted.",
        "",
    ]

    def walk(p: argparse.ArgumentParser, title: str) -> None:
        out.extend([f"## `{title}`", "", "```", p.format_help().rstrip(), "```", ""])
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{title} {name}")

    os.environ["COLUMNS"] = "88"
    walk(parser, "meshnode")
    return "\n".join(out)
