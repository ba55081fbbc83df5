"""The ``meshnode`` command line's grammar: every command, option and help text.

The same parser generates docs/cli.md (``make docs``). Options common to every
command (``--data-dir``, ``--json``, ``--traceback``) are accepted before or after
the subcommand; a mistake raises :class:`~meshnode.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, NoReturn

from meshnode.cli.commands import (
    PASSPHRASE_ENV,
    cmd_channels,
    cmd_contact_add,
    cmd_contact_block,
    cmd_contact_list,
    cmd_contact_verify,
    cmd_create,
    cmd_daemon,
    cmd_endorse,
    cmd_id,
    cmd_init,
    cmd_invite,
    cmd_invites,
    cmd_join,
    cmd_leave,
    cmd_log,
    cmd_members,
    cmd_peer_add,
    cmd_peer_list,
    cmd_post,
    cmd_read,
    cmd_rekey,
    cmd_remove,
    cmd_revoke,
    cmd_send,
    cmd_status,
    cmd_upgrade,
)
from meshnode.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

_CHANNEL_HELP = "a channel's name, or its id in hex (8 digits or more; see 'channel list')"
"""Names may repeat (a join can bring a second channel of a name): the id never does."""


_PASSPHRASE_HELP = f"ask for the identity's passphrase (scripts: set ${PASSPHRASE_ENV})"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes become UsageError, handled by the dispatcher.

    A command's options and positionals mix freely (``post CH --reply-to ID TEXT``
    as well as ``post --reply-to ID CH TEXT``): a parser without subcommands reads
    its options first, then the positionals left, as ``parse_intermixed_args`` does.
    Plain argparse gives two optional positionals to the words before the first
    option, so a TEXT after an option was an unrecognized argument.
    """

    _intermixing = False

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_known_args(  # type: ignore[override]  # (one signature for typeshed's overloads)
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # parse_known_intermixed_args calls this method back for its two passes.
        if self._subparsers is not None or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


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
        group: argparse._SubParsersAction[_Parser],
        name: str,
        help_text: str,
        run: Callable[[argparse.Namespace], None],
    ) -> _Parser:
        p = group.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        p.set_defaults(run=run)
        return p

    def noun(name: str, help_text: str) -> argparse._SubParsersAction[_Parser]:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        p.set_defaults(run=_needs_subcommand(p))
        return p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)

    p = command(sub, "init", "create this group's identity, store and configuration", cmd_init)
    p.add_argument("--name", help="the group's display name (default: the host name)")
    p.add_argument("--passphrase", action="store_true", help=_PASSPHRASE_HELP)
    p.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 0.0.0.0:7447)")
    p.add_argument("--announce", metavar="HOST:PORT", help="public address other nodes dial")
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        nargs="+",
        action="extend",
        default=[],
        help="nodes to join through (several, or the option again)",
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

    p = command(sub, "id", "show this group's name, fingerprint and contact card", cmd_id)
    p.add_argument("--qr", action="store_true", help="also show the contact card as a QR code")
    p.add_argument("--passphrase", action="store_true", help=_PASSPHRASE_HELP)

    p = command(sub, "daemon", "run this group's node in the foreground", cmd_daemon)
    p.add_argument("--listen", metavar="HOST:PORT", help="override the configured listen address")
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        nargs="+",
        action="extend",
        help="override the bootstrap nodes (several, or the option again)",
    )
    p.add_argument("--log-format", choices=("text", "json"), help="logs for people or machines")
    p.add_argument("--passphrase", action="store_true", help=_PASSPHRASE_HELP)

    p = command(sub, "status", "peers, DHT size, channels, sync and reachability", cmd_status)
    p.add_argument("--follow", action="store_true", help="print it again at each change")

    channel = noun("channel", "create, share, join and manage channels")
    p = command(channel, "create", "create a channel (this group is its first member)", cmd_create)
    p.add_argument("name")
    p = command(channel, "invite", "print a one-time invite code for a channel", cmd_invite)
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
    p = command(channel, "join", "join a channel with an invite code", cmd_join)
    p.add_argument("code")
    command(channel, "list", "list this group's channels", cmd_channels)
    p = command(channel, "members", "list a channel's members, by seniority", cmd_members)
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(
        channel, "remove", "remove groups from a channel and rekey it without them", cmd_remove
    )
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument("groups", metavar="GROUP", nargs="+", help="petname, fingerprint or key")
    p = command(channel, "invites", "list a channel's invites and who used them", cmd_invites)
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(channel, "revoke", "revoke an unused invite", cmd_revoke)
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument("invite_id", metavar="INVITE_ID", help="from 'channel invites' (8+ hex digits)")
    p = command(channel, "log", "the audit trail: who added, invited, removed whom, when", cmd_log)
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(
        channel, "upgrade", "give a channel made by meshnode 0.1.0 its membership log", cmd_upgrade
    )
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument(
        "--keep",
        metavar="GROUP",
        nargs="+",
        action="extend",
        default=[],
        help="the groups that stay members (petname, fingerprint or key)",
    )
    p = command(channel, "leave", "leave a channel and forget its keys", cmd_leave)
    p.add_argument("name", help=_CHANNEL_HELP)
    p = command(channel, "rekey", "start a new key epoch, optionally removing a group", cmd_rekey)
    p.add_argument("name", help=_CHANNEL_HELP)
    p.add_argument(
        "--remove",
        metavar="GROUP",
        action="append",
        default=[],
        help="a member to leave out (petname or key); repeatable",
    )

    p = command(sub, "post", "post a bulletin to a channel (or --public)", cmd_post)
    p.add_argument("channel", nargs="?", help=f"{_CHANNEL_HELP} (omit with --public)")
    p.add_argument("text", nargs="?", help="the text, or - to read it from standard input")
    p.add_argument("--public", action="store_true", help="post to the whole mesh")
    p.add_argument("--reply-to", metavar="ID", help="the id of the bulletin this answers")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 7d, 12h (default: never)")

    p = command(sub, "send", "send a direct bulletin to a group", cmd_send)
    p.add_argument("group", help="a contact's petname or a group key (mk1...)")
    p.add_argument("text", nargs="?", help="the text, or - to read it from standard input")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 1d, 12h (default: 7d)")

    p = command(sub, "read", "read bulletins, and with --follow wait for new ones", cmd_read)
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

    p = command(sub, "endorse", "state that this group stands behind a bulletin", cmd_endorse)
    p.add_argument("id")

    contact = noun("contact", "name the groups you know")
    p = command(contact, "add", "give a group's key a petname", cmd_contact_add)
    p.add_argument("name")
    p.add_argument("key", help="the group's key text (mk1...) or contact card (meshnode:mk1...)")
    command(contact, "list", "list contacts", cmd_contact_list)
    p = command(contact, "verify", "mark a contact as verified in person", cmd_contact_verify)
    p.add_argument("name")
    p = command(contact, "block", "refuse a group's bulletins and sessions", cmd_contact_block)
    p.add_argument("name")

    peer = noun("peer", "the nodes this node talks to")
    command(peer, "list", "list open sessions", cmd_peer_list)
    p = command(peer, "add", "open a session with a node", cmd_peer_add)
    p.add_argument("address", metavar="HOST:PORT")
    return parser


def _needs_subcommand(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        raise UsageError(f"'{parser.prog}' needs an action (see '{parser.prog} --help')")

    return run


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
