"""The port a node binds: one number for its sessions (TCP) and its DHT (UDP).

A node's contact record carries one address, and a node found in a routing
table is dialled at its DHT's address, so sessions listen on the DHT's port
number. With port 0 the DHT binds a free UDP port first; when the same TCP
port is taken, it tries another, ``BIND_ATTEMPTS`` times at most.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

import trio

from meshnode.core.address import is_wildcard
from meshnode.core.address import split_address as _split
from meshnode.net import dht as _dht

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshnode.core.identity import Identity
    from meshnode.store import Store

BIND_ATTEMPTS: Final = 20


def parse(listen: str, bootstrap: Sequence[str], announce: str | None) -> tuple[str, int]:
    """The host and port to bind from ``listen``, once every address is checked.

    Raises:
        ValueError: an address is not ``host:port``, or ``announce`` is a wildcard
            address, which no other node can dial.
    """
    host, port = _split(listen)
    for b in bootstrap:
        _split(b)
    if announce is not None and is_wildcard(_split(announce)[0]):
        raise ValueError("announce the address other nodes can dial, not 0.0.0.0")
    return host, port


async def bind(
    stack: contextlib.AsyncExitStack,
    identity: Identity,
    host: str,
    port: int,
    *,
    network_key: bytes,
    store: Store,
    config: _dht.DHTConfig,
    bootstrap: Sequence[str],
) -> tuple[_dht.DHTNode, list[trio.SocketListener]]:
    """Bind UDP (the DHT) and TCP (sessions) on one port number, both closed with
    ``stack``; with port 0 try free UDP ports until the same TCP port is free too.
    Then join the DHT through ``bootstrap``.

    Raises:
        OSError: the port (or, with port 0, no port) is free for both.
    """
    for _ in range(BIND_ATTEMPTS):
        inner = contextlib.AsyncExitStack()
        dht = await inner.enter_async_context(
            _dht.open_dht(
                identity,
                host,
                port,
                network_key=network_key,
                bootstrap=(),
                store=store,
                config=config,
            )
        )
        try:
            listeners = await trio.open_tcp_listeners(dht.port, host=host)
        except OSError:
            await inner.aclose()
            if port != 0:
                raise
            continue
        await stack.enter_async_context(inner)
        for listener in listeners:
            stack.push_async_callback(listener.aclose)
        if bootstrap:
            await dht.bootstrap(list(bootstrap))
        return dht, listeners
    raise OSError(f"no port free for both TCP and UDP on {host}")
