"""meshnode: a peer-to-peer bulletin network for groups.

Names are re-exported lazily, so ``meshnode post`` starts without importing
the network stack (kademlia, trio-asyncio). Each is the one type of its
concept: the node, the store and the client hand back exactly these classes.

Importing the package installs the system's clock and random source
(:data:`meshnode.api.SYSTEM`) for the conveniences of the core's classes
(:mod:`meshnode.core.providers`), which read neither themselves.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meshnode.api import SYSTEM as _SYSTEM
from meshnode.core.providers import install as _install

_install(_SYSTEM)

if TYPE_CHECKING:
    from meshnode.api import load_identity, save_identity
    from meshnode.client import AsyncClient, Client, connect, connect_async
    from meshnode.core.bulletin import Bulletin, Content, Kind
    from meshnode.core.channel import Channel
    from meshnode.core.identity import Identity, fingerprint, format_key, parse_key
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
        ShareUse,
        UnreadableInfo,
    )
    from meshnode.errors import (
        AmbiguousChannel,
        AuthenticationError,
        InvalidBulletin,
        InvalidInvite,
        InvalidKey,
        InviteExpired,
        KeyfileError,
        MeshError,
        NotARecipient,
        UnknownChannel,
        WrongChannel,
        WrongPassphrase,
    )
    from meshnode.launch import open_node
    from meshnode.net.node import Node, NodeConfig

_EXPORTS: dict[str, str] = {
    "Identity": "meshnode.core.identity",
    "Channel": "meshnode.core.channel",
    "Bulletin": "meshnode.core.bulletin",
    "save_identity": "meshnode.api",
    "load_identity": "meshnode.api",
    "open_node": "meshnode.launch",
    "Node": "meshnode.net.node",
    "NodeConfig": "meshnode.net.node",
    "connect": "meshnode.client",
    "connect_async": "meshnode.client",
    "Client": "meshnode.client",
    "AsyncClient": "meshnode.client",
    "Content": "meshnode.core.bulletin",
    "Kind": "meshnode.core.bulletin",
    "format_key": "meshnode.core.identity",
    "parse_key": "meshnode.core.identity",
    "fingerprint": "meshnode.core.identity",
    "BulletinRecord": "meshnode.core.views",
    "ChannelInfo": "meshnode.core.views",
    "ChannelRef": "meshnode.core.views",
    "ContactInfo": "meshnode.core.views",
    "InviteInfo": "meshnode.core.views",
    "MemberInfo": "meshnode.core.views",
    "NodeStatus": "meshnode.core.views",
    "OperationInfo": "meshnode.core.views",
    "PeerInfo": "meshnode.core.views",
    "ShareUse": "meshnode.core.views",
    "UnreadableInfo": "meshnode.core.views",
    "MeshError": "meshnode.errors",
    "InvalidBulletin": "meshnode.errors",
    "InvalidKey": "meshnode.errors",
    "InvalidInvite": "meshnode.errors",
    "InviteExpired": "meshnode.errors",
    "KeyfileError": "meshnode.errors",
    "WrongPassphrase": "meshnode.errors",
    "AuthenticationError": "meshnode.errors",
    "NotARecipient": "meshnode.errors",
    "WrongChannel": "meshnode.errors",
    "UnknownChannel": "meshnode.errors",
    "AmbiguousChannel": "meshnode.errors",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meshnode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
