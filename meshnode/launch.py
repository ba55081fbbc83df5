"""Open a node on a data directory: the public entry point above the network shell.

``meshnode/net/`` knows nothing of data directories or configuration files:
:func:`~meshnode.net.node.start_node` takes an identity and an open store.
This module stands above it, where the data directory (:mod:`meshnode.home`)
and the daemon's configuration (:mod:`meshnode.config`) are known:
1. :func:`open_node` opens the data directory (creating the identity on first
   use), the identity and the store, runs the node on them, and closes the
   store after the node.
2. :func:`node_config` turns a daemon's ``[limits]``, ``[timing]`` and
   ``[store]`` tables into the node's :class:`~meshnode.net.node.NodeConfig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from typing import TYPE_CHECKING

from meshnode.config import Limits, StoreSettings, Timing
from meshnode.core.gossip import GossipConfig
from meshnode.home import DataDir
from meshnode.net.node import DEFAULT_LISTEN, Node, NodeConfig, start_node
from meshnode.net.transport import SessionConfig
from meshnode.store import Budget

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Sequence


def node_config(
    limits: Limits, timing: Timing | None = None, store: StoreSettings | None = None
) -> NodeConfig:
    """The configuration a daemon's ``[limits]``, ``[timing]`` and ``[store]`` tables
    ask for."""
    base = NodeConfig()
    timing = timing or Timing()
    store = store or StoreSettings()
    gossip = GossipConfig(
        d=limits.mesh_degree,
        d_low=min(base.gossip.d_low, limits.mesh_degree),
        d_high=max(base.gossip.d_high, limits.mesh_degree),
        heartbeat=timing.heartbeat,
        sync=dataclasses.replace(base.gossip.sync, interval=timing.sync_interval),
    )
    session = SessionConfig(
        handshake_timeout=timing.handshake_timeout,
        max_sessions=limits.max_sessions,
        max_sessions_per_ip=limits.max_sessions_per_ip,
        max_handshakes=limits.max_handshakes,
        max_handshakes_per_ip=limits.max_handshakes_per_ip,
    )
    return NodeConfig(
        gossip=gossip,
        session=session,
        dht=dataclasses.replace(base.dht, rpc_timeout=timing.rpc_timeout),
        overlay_interval=timing.overlay_interval,
        delivery_interval=timing.delivery_interval,
        mail_interval=timing.mail_interval,
        author_quota=limits.quota_mb_per_author * 1024 * 1024,
        budget=Budget.split(
            store.max_mb, store.channels_percent, store.public_percent, store.mail_percent
        ),
    )


@contextlib.asynccontextmanager
async def open_node(
    data_dir: str | os.PathLike[str] | None,
    *,
    name: str | None = None,
    listen: str = DEFAULT_LISTEN,
    announce: str | None = None,
    bootstrap: Sequence[str] = (),
    network_key: bytes | None = None,
    passphrase: str | None = None,
    limits: Limits | None = None,
    config: NodeConfig | None = None,
) -> AsyncIterator[Node]:
    """Open a node on ``data_dir``; on exit close its sessions, DHT and store.

    Args:
        data_dir: the node's data directory (created with its identity on
            first use, named ``name``); None for the default one.
        listen: ``host:port`` to bind; port 0 picks a free port, the same
            number for TCP (sessions) and UDP (DHT).
        announce: the address other nodes should dial, put in the contact
            record and invites (default: the bound address).
        bootstrap: addresses of nodes to join the mesh through; none makes
            this the first node (or one that rejoins from its saved routing table).
        network_key: the mesh's 32-byte key (default: the open mesh's).
        passphrase: unlocks (or, on first use, seals) the keyfile.
        limits: a daemon's ``[limits]``; ``config`` overrides it.
        config: every interval and bound (see :class:`~meshnode.net.node.NodeConfig`).

    Raises:
        WrongPassphrase, KeyfileError: the identity does not open.
        OSError: the address cannot be bound.
        ValueError: a malformed address or network key.
    """
    home = DataDir.resolve(data_dir)
    if not home.is_initialised():
        home.initialise(name or socket.gethostname() or "meshnode", passphrase)
    identity = home.load_identity(passphrase)
    cfg = config or (node_config(limits) if limits is not None else NodeConfig())
    store = home.open_store(identity, author_quota=cfg.author_quota, budget=cfg.budget)
    try:
        async with start_node(
            identity,
            store,
            listen=listen,
            announce=announce,
            bootstrap=bootstrap,
            network_key=network_key,
            config=cfg,
        ) as node:
            yield node
    finally:
        store.close()
