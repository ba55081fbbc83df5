"""meshnode: a peer-to-peer bulletin network for groups.

Names are re-exported lazily, so ``meshnode post`` starts without importing
the network stack (kademlia, trio-asyncio).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshnode.api import Bulletin, Channel, Identity
    from meshnode.client import AsyncClient, Client, connect, connect_async
    from meshnode.core.bulletin import Content, Kind
    from meshnode.core.identity import fingerprint, format_key, parse_key
    from meshnode.core.views import ChannelInfo, ChannelRef
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
    "Identity": "meshnode.api",
    "Channel": "meshnode.api",
    "Bulletin": "meshnode.api",
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
    "ChannelInfo": "meshnode.core.views",
    "ChannelRef": "meshnode.core.views",
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
