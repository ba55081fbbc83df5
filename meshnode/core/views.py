"""What the node shows its users: plain, immutable records.

The node produces these, the control socket carries them (``control.py``
encodes them field by field) and the client hands them back, so a developer
sees the same types embedded (``open_node``) and over the socket
(``meshnode.connect``). They hold no keys and no secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, kw_only=True)
class BulletinRecord:
    """A bulletin as an organizer reads it.

    ``channel`` is the channel's name (None for public and direct bulletins),
    ``channel_id`` its id; ``author_name`` is the petname given to the author,
    else the name it announced, else its fingerprint. ``cursor`` orders
    arrivals in this node's store, for resuming a follow.
    """

    id: bytes
    author: bytes
    author_name: str
    kind: str
    channel: str | None
    channel_id: bytes | None
    text: str
    created_at: int
    expires_at: int | None
    reply_to: bytes | None
    endorses: bytes | None
    seq: int
    cursor: int


@dataclass(frozen=True, kw_only=True)
class UnreadableInfo:
    """A stored bulletin addressed to this group (in a channel it holds, or direct with
    a key slot for it) that does not open, and why: reading goes on without it.

    ``reason`` is short text such as ``unknown epoch 3`` (a rekey whose key update
    has not reached us) or ``direct content does not decrypt: altered``.
    ``author_at_fault`` is set when the author signed a box that does not open or
    content that is malformed: the signature covers the ciphertext, so no carrier
    could have altered it (an unknown epoch is nobody's fault yet).
    """

    id: bytes
    author: bytes
    author_name: str
    kind: str
    channel: str | None
    channel_id: bytes | None
    created_at: int
    reason: str
    author_at_fault: bool


@dataclass(frozen=True, kw_only=True)
class ChannelInfo:
    """A channel this node is a member of (or was: see ``removed_by``).

    ``members`` counts the members its membership log holds; ``read_only`` marks a
    channel made by meshnode 0.1.0, which has no log until a member upgrades it;
    ``removed_by`` names who removed this group (a petname or fingerprint; this
    group's own name when it left), after which it reads nothing new there.
    """

    id: bytes
    name: str
    epoch: int
    members: int
    bulletins: int
    read_only: bool = False
    removed_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class MemberInfo:
    """A member of a channel, as its membership log shows it. ``added_by`` is None
    for the group that founded the channel; ``name`` is a petname, the member's own
    name if it is this group, else its fingerprint."""

    key: bytes
    name: str
    added_by: bytes | None
    added_at: int


@dataclass(frozen=True, kw_only=True)
class InviteInfo:
    """An invite of a channel: ``id`` is its token's public key."""

    id: bytes
    issued_by: bytes
    created_at: int
    expires_at: int
    used_by: bytes | None
    revoked: bool


@dataclass(frozen=True, kw_only=True)
class OperationInfo:
    """One operation of a channel's membership log: the audit trail of who created,
    invited, added, removed and rekeyed. ``kind`` is create, epoch, invite, revoke,
    add, remove or leave; ``groups`` are the groups it adds or removes; ``void``
    marks an operation the merge rules set aside (docs/spec/membership.md)."""

    id: bytes
    kind: str
    author: bytes
    author_name: str
    created_at: int
    groups: tuple[bytes, ...]
    group_names: tuple[str, ...]
    invite: bytes | None
    epoch: int | None
    void: bool


ChannelRef: TypeAlias = ChannelInfo | bytes | str
"""How a caller names a channel: the record the API handed out, the channel id
(32 bytes), or a text that is an exact name, else the id in hex (whole or a
unique prefix of at least 8 digits). Names may repeat, the id never does."""


@dataclass(frozen=True, kw_only=True)
class PeerInfo:
    """An open session with another node; ``bytes_sent`` and ``bytes_received``
    count what the session carried (handshake included) since it opened."""

    key: bytes
    name: str
    address: str
    outbound: bool
    since: float
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True, kw_only=True)
class ContactInfo:
    """A group this node knows by a petname."""

    key: bytes
    petname: str
    verified: bool
    blocked: bool


@dataclass(frozen=True, slots=True)
class ShareUse:
    """One share of the store's budget: bytes held and bytes it may hold. ``channels``
    (our channels and direct bulletins to us), ``public`` or ``mail`` (held for others)."""

    name: str
    used: int
    budget: int


@dataclass(frozen=True, kw_only=True)
class NodeStatus:
    """What ``meshnode status`` shows."""

    name: str
    key: bytes
    address: str
    peers: int
    dht_size: int
    channels: int
    last_sync: float | None
    pending_deliveries: int
    held_mail: int
    """Bulletins this node holds for groups that are offline."""
    removed: tuple[str, ...] = ()
    """"removed from NAME by GROUP", for each channel this group was removed from."""
    reachable: bool | None
    unreadable: int
    """Stored bulletins addressed to this group that do not open (see
    :class:`UnreadableInfo`; ``meshnode read --unreadable`` lists them)."""
    storage: str = "ok"
    """``"ok"``; ``"full"`` when the last write found the disk full (the node serves
    what it holds and refuses new data until a write succeeds again); ``"error"``
    after another store error (see the daemon's log)."""
    shares: tuple[ShareUse, ...] = ()
    """How full each share of the store's budget is (``[store]`` in meshnode.toml)."""
    evicted: int = 0
    """Ids of public bulletins evicted to make room, remembered so that they are not
    fetched again."""
