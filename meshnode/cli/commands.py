"""What each ``meshnode`` command does: through the Client, or for the commands that
need no daemon (``init``, ``id``, ``daemon``) with the data directory itself.

Each command takes the parsed arguments, prints through :mod:`meshnode.cli.rendering`
and returns once done; a failure is a :class:`~meshnode.errors.MeshError` that the
dispatcher (:mod:`meshnode.cli.dispatch`) turns into one line and an exit code.
"""

from __future__ import annotations

import datetime
import getpass
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from meshnode.cli.rendering import (
    channel_line,
    contact_line,
    emit_json,
    fingerprint,
    identity_view,
    invite_line,
    jsonable,
    member_line,
    operation_line,
    peer_line,
    print_bulletin,
    print_list,
    print_status,
    print_view,
    show_contact,
    show_posted,
    unreadable_line,
)
from meshnode.errors import AlreadyInitialised, ConfigError, UsageError

if TYPE_CHECKING:
    import argparse

    from meshnode.client import Client
    from meshnode.home import DataDir

PASSPHRASE_ENV = "MESHNODE_PASSPHRASE"


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
    """The text of a post or send: given, or read from standard input (``-``, or none
    given on a pipe). A text of nothing but whitespace is a mistake, not a bulletin."""
    if text is None or text == "-":
        if text is None and sys.stdin.isatty():
            raise UsageError("give the text, or - to read it from standard input")
        text = sys.stdin.read().rstrip("\n")
    if not text.strip():
        raise UsageError("the text is empty: a bulletin needs something to say")
    return text


def _bulletin_id(text: str) -> bytes:
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:
        raise UsageError(f"not a bulletin id: {text!r} (64 hex digits)") from None
    if len(value) != 32:
        raise UsageError(f"not a bulletin id: {text!r} (64 hex digits)")
    return value


def _data_dir(args: argparse.Namespace) -> DataDir:
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


def _passphrase_for(home: DataDir) -> str | None:
    return _ask_passphrase("Passphrase: ", confirm=False) if home.needs_passphrase() else None


def _address(value: str, flag: str) -> str:
    """A ``host:port`` given with ``flag``, or a UsageError naming the flag."""
    from meshnode.config import check_address

    try:
        return check_address(value, flag)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _bootstrap(args: argparse.Namespace) -> tuple[str, ...] | None:
    """Every ``--bootstrap`` address, however given (``A B`` or ``A --bootstrap B``)."""
    return tuple(_address(a, "--bootstrap") for a in args.bootstrap or ()) or None


def cmd_init(args: argparse.Namespace) -> None:
    from meshnode.config import Config, render

    home = _data_dir(args)
    if home.is_initialised():
        if args.if_missing:
            return
        raise AlreadyInitialised(f"{home.path} already holds an identity: see 'meshnode id'")
    config = Config().replace(
        listen=args.listen and _address(args.listen, "--listen"),
        announce=args.announce and _address(args.announce, "--announce"),
        bootstrap=_bootstrap(args),
    )
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
    view = identity_view(identity, home)
    if network_key_file:
        view["network_key"] = network_key_file
    if not args.json:
        print(f"Created the identity of {identity.name!r} in {home.path}")
    print_view(args, view)
    if args.private_mesh and not args.json:
        print(
            f"Hand {network_key_file} to the other groups of this private mesh "
            "(over a channel you trust): 'meshnode init --network-key FILE'."
        )


def cmd_id(args: argparse.Namespace) -> None:
    home = _data_dir(args)
    identity = home.load_identity(_passphrase_for(home))
    view = identity_view(identity, home)
    print_view(args, view)
    if args.qr:
        import segno

        segno.make(view["contact_card"], error="m").terminal(
            out=sys.stdout if not args.json else sys.stderr, compact=True
        )


def cmd_daemon(args: argparse.Namespace) -> None:
    from meshnode.daemon import run_daemon

    home = _data_dir(args)
    run_daemon(
        home.path,
        listen=args.listen and _address(args.listen, "--listen"),
        bootstrap=_bootstrap(args),
        log_format=args.log_format,
        passphrase=_passphrase_for(home),
    )


def cmd_status(args: argparse.Namespace) -> None:
    client = _client(args)
    show = emit_json if args.json else print_status
    if args.follow:
        for n, status in enumerate(client.watch()):
            if n and not args.json:
                print()  # (a blank line between two blocks)
            show(status)
        return
    show(client.status())


def cmd_create(args: argparse.Namespace) -> None:
    info = _client(args).create_channel(args.name)
    if args.json:
        emit_json(info)
    else:
        print(
            f"Created channel {info.name!r}. Invite groups with 'meshnode channel invite "
            f"{shlex.quote(info.name)}'."
        )


def cmd_invite(args: argparse.Namespace) -> None:
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
        emit_json({"channel": args.name, "code": code, "expires_in": expires})
    else:
        print(code)


def cmd_join(args: argparse.Namespace) -> None:
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
    inviter = names.get(adder, fingerprint(adder))
    if args.json:
        emit_json({**jsonable(info), "invited_by": inviter})
    else:
        print(f"Joined {info.name!r} ({info.members} members), invited by {inviter}.")


def cmd_members(args: argparse.Namespace) -> None:
    print_list(args, _client(args).members(args.name), member_line, "No members.")


def cmd_remove(args: argparse.Namespace) -> None:
    info = _client(args).remove(args.name, args.groups)
    if args.json:
        emit_json(info)
    else:
        print(
            f"Removed {', '.join(args.groups)} from {info.name!r}: it is now at epoch "
            f"{info.epoch} with {info.members} members."
        )


def cmd_invites(args: argparse.Namespace) -> None:
    print_list(args, _client(args).invites(args.name), invite_line, "No invites.")


def cmd_revoke(args: argparse.Namespace) -> None:
    _client(args).revoke_invite(args.name, args.invite_id)
    if args.json:
        emit_json({"revoked": args.invite_id})
    else:
        print(f"Revoked invite {args.invite_id}.")


def cmd_upgrade(args: argparse.Namespace) -> None:
    info = _client(args).upgrade(args.name, keep=args.keep)
    if args.json:
        emit_json(info)
    else:
        print(
            f"{info.name!r} has a membership log now: {info.members} members, epoch "
            f"{info.epoch}. The kept groups get its key."
        )


def cmd_log(args: argparse.Namespace) -> None:
    print_list(args, _client(args).log(args.name), operation_line, "No operations.")


def cmd_channels(args: argparse.Namespace) -> None:
    print_list(
        args,
        _client(args).channels(),
        channel_line,
        "No channels yet: 'meshnode channel create NAME' or 'meshnode channel join CODE'.",
    )


def cmd_leave(args: argparse.Namespace) -> None:
    _client(args).leave(args.name)
    if args.json:
        emit_json({"left": args.name})
    else:
        print(f"Left channel {args.name!r}.")


def cmd_rekey(args: argparse.Namespace) -> None:
    info = _client(args).rekey(args.name, remove=args.remove)
    if args.json:
        emit_json(info)
    else:
        print(f"Channel {info.name!r} is now at epoch {info.epoch}.")


def cmd_post(args: argparse.Namespace) -> None:
    expires = _expires(args)
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
    show_posted(args, record)


def cmd_send(args: argparse.Namespace) -> None:
    text = _read_text(args.text)
    show_posted(args, _client(args).send([args.group], text, expires=_expires(args)))


def _expires(args: argparse.Namespace) -> int | None:
    """``--expires`` in seconds, or None for the default of the command's bulletin."""
    return parse_duration(args.expires) if args.expires else None


def cmd_read(args: argparse.Namespace) -> None:
    since = parse_when(args.since, time.time()) if args.since else None
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit takes a positive number")
    if args.unreadable and (args.channel or since is not None or args.limit is not None):
        raise UsageError("--unreadable lists every unreadable bulletin: it takes no filter")
    client = _client(args)
    if args.unreadable:
        print_list(args, client.unreadable(), unreadable_line, "No unreadable bulletins.")
        return
    show = emit_json if args.json else print_bulletin
    if args.follow:
        for record in client.follow(args.channel, since=since):
            show(record)
        return
    records = client.read(args.channel, since=since, limit=args.limit)
    if not records and not args.json:
        print("No bulletins yet.")
    for record in records:
        show(record)


def cmd_endorse(args: argparse.Namespace) -> None:
    show_posted(args, _client(args).endorse(_bulletin_id(args.id)))


def cmd_contact_add(args: argparse.Namespace) -> None:
    show_contact(args, _client(args).add_contact(args.name, args.key))


def cmd_contact_list(args: argparse.Namespace) -> None:
    print_list(
        args,
        _client(args).contacts(),
        contact_line,
        "No contacts yet: 'meshnode contact add NAME KEY'.",
    )


def cmd_contact_verify(args: argparse.Namespace) -> None:
    show_contact(args, _client(args).verify_contact(args.name))


def cmd_contact_block(args: argparse.Namespace) -> None:
    show_contact(args, _client(args).block_contact(args.name))


def cmd_peer_list(args: argparse.Namespace) -> None:
    print_list(
        args,
        _client(args).peers(),
        peer_line,
        "No peers yet: 'meshnode peer add HOST:PORT' or wait for the DHT.",
    )


def cmd_peer_add(args: argparse.Namespace) -> None:
    peer = _client(args).add_peer(args.address)
    if args.json:
        emit_json(peer)
    else:
        print(peer_line(peer))
