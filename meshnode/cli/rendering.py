"""What the ``meshnode`` commands print: text for people, or JSON with ``--json``.

With ``--json`` a command prints one JSON object on stdout, or one per line where it
lists or streams records (as ``read`` does); diagnostics stay on stderr. Records
(:mod:`meshnode.core.views`) become objects of their fields, bytes become hex.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from meshnode.core.identity import Identity
    from meshnode.core.views import (
        BulletinRecord,
        ChannelInfo,
        ContactInfo,
        InviteInfo,
        MemberInfo,
        NodeStatus,
        OperationInfo,
        PeerInfo,
        ShareUse,
        UnreadableInfo,
    )
    from meshnode.home import DataDir


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def emit_json(value: Any) -> None:
    print(json.dumps(jsonable(value)), flush=True)


def print_view(args: argparse.Namespace, view: dict[str, str]) -> None:
    if args.json:
        emit_json(view)
        return
    width = max(len(k) for k in view)
    for key, value in view.items():
        print(f"{key.replace('_', ' '):<{width}}  {value}")


def when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def print_bulletin(record: BulletinRecord) -> None:
    where = f"#{record.channel}" if record.channel else record.kind
    reply = f"  (reply to {record.reply_to.hex()[:12]})" if record.reply_to else ""
    text = record.text
    if record.endorses is not None:
        text = f"stands behind {record.endorses.hex()[:16]}" + (f": {text}" if text else "")
    print(f"[{when(record.created_at)}] {where} {record.author_name}: {text}{reply}")
    print(f"    id {record.id.hex()[:16]}", flush=True)


def unreadable_line(u: UnreadableInfo) -> str:
    where = f"#{u.channel}" if u.channel else u.kind
    fault = " (the author's doing)" if u.author_at_fault else ""
    head = f"[{when(u.created_at)}] {where} {u.author_name}: {u.reason}{fault}"
    return f"{head}\n    id {u.id.hex()[:16]}"


def contact_card(identity: Identity) -> str:
    """``meshnode:<key text>?name=<name, percent-encoded>``: what another group needs to
    name this one, as text (``id``, ``id --json``) and in ``id --qr``'s QR code."""
    return f"meshnode:{identity.key_text}?name={urllib.parse.quote(identity.name)}"


def identity_view(identity: Identity, home: DataDir) -> dict[str, str]:
    return {
        "name": identity.name,
        "fingerprint": identity.fingerprint,
        "key": identity.key_text,
        "contact_card": contact_card(identity),
        "data_dir": str(home.path),
    }


_STORAGE = {
    "ok": "ok",
    "full": "full: the disk of the data directory has no room; new bulletins are "
    "refused until there is (free space there)",
    "error": "error: the store failed; see the daemon's log",
}


def share_line(share: ShareUse) -> str:
    """``12.3 of 614 MB (2 %)``: how full one share of the store's budget is."""
    percent = 100 * share.used // share.budget if share.budget else 100
    return f"{share.used / 1e6:.1f} of {share.budget / 1e6:.0f} MB ({percent} %)"


def print_status(status: NodeStatus) -> None:
    sync = when(int(status.last_sync)) if status.last_sync else "not yet"
    print(f"{status.name}  {status.address}")
    print(f"peers              {status.peers}")
    print(f"DHT size (est.)    {status.dht_size}")
    print(f"channels           {status.channels}")
    print(f"last sync          {sync}")
    print(f"pending deliveries {status.pending_deliveries}")
    print(f"held for others    {status.held_mail}")
    print(f"unreadable         {status.unreadable}")
    print(f"storage            {_STORAGE.get(status.storage, status.storage)}")
    for share in status.shares:
        print(f"  {share.name + ' share':<16} {share_line(share)}")
    if status.evicted:
        print(f"  evicted          {status.evicted} public bulletins (not fetched again)")
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


def print_list(
    args: argparse.Namespace, items: list[Any], line: Callable[[Any], str], empty: str
) -> None:
    if args.json:
        for entry in items:
            emit_json(entry)
        return
    if not items:
        print(empty)
    for entry in items:
        print(line(entry))


def channel_line(c: ChannelInfo) -> str:
    line = (
        f"{c.name:<24} epoch {c.epoch:<3} {c.members} members  {c.bulletins} bulletins  "
        f"id {c.id.hex()[:16]}"
    )
    if c.removed_by is not None:
        return f"{line}  (removed from {c.name} by {c.removed_by})"
    if c.read_only:
        return f"{line}  (read-only until a member runs 'meshnode channel upgrade')"
    return line


def member_line(m: MemberInfo) -> str:
    added = "founded it" if m.added_by is None else f"added {when(m.added_at)}"
    return f"{m.name:<28} {fingerprint(m.key)}  {added}"


def invite_line(i: InviteInfo) -> str:
    if i.revoked:
        state = "revoked"
    elif i.used_by is not None:
        state = f"used by {fingerprint(i.used_by)}"
    else:
        state = f"expires {when(i.expires_at)}"
    issued = f"issued by {fingerprint(i.issued_by)} {when(i.created_at)}"
    return f"{i.id.hex()[:16]}  {issued}  {state}"


def fingerprint(key: bytes) -> str:
    from meshnode.core.identity import fingerprint

    return fingerprint(key)


def operation_line(op: OperationInfo) -> str:
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
    return f"{when(op.created_at)}  {op.author_name} {what}{void}"


def show_posted(args: argparse.Namespace, record: BulletinRecord) -> None:
    if args.json:
        emit_json(record)
    else:
        print(f"Posted {record.id.hex()}")


def contact_line(c: ContactInfo) -> str:
    marks = ("verified " if c.verified else "") + ("blocked" if c.blocked else "")
    from meshnode.core.identity import fingerprint, format_key

    return f"{c.petname:<20} {fingerprint(c.key)}  {marks}\n    {format_key(c.key)}"


def show_contact(args: argparse.Namespace, contact: ContactInfo) -> None:
    if args.json:
        emit_json(contact)
    else:
        print(contact_line(contact))


def peer_line(p: PeerInfo) -> str:
    direction = "out" if p.outbound else "in"
    return f"{p.name:<20} {p.address:<22} {direction:<3}  {p.key.hex()[:16]}"
