"""The DHT's datagrams: rpcudp's framing, the seal of a private mesh, checked entries.

Normative text: ``docs/spec/dht.md``, "Wire format" and "Private meshes". Nothing
here touches a socket or an event loop: the protocol (:mod:`.protocol`) calls
these on every datagram it sends or receives.
"""

from __future__ import annotations

import os
from typing import Final, TypeAlias, TypeGuard

from meshnode.core import crypto, records
from meshnode.core.address import ipv4_host
from meshnode.errors import AuthenticationError

SEAL_LABEL: Final = b"meshnode/v1/dht-seal"
SEAL_OVERHEAD: Final = crypto.XNONCE_SIZE + crypto.TAG_SIZE
REQUEST: Final = 0x00
RESPONSE: Final = 0x01
MSG_ID_SIZE: Final = 20
HEADER_SIZE: Final = 1 + MSG_ID_SIZE
MAX_PAYLOAD: Final = 8192
"""rpcudp refuses to send a request whose msgpack is longer; we refuse to receive one."""
MAX_DATAGRAM: Final = HEADER_SIZE + MAX_PAYLOAD

Address: TypeAlias = tuple[str, int]
Reply: TypeAlias = tuple[bool, object]
"""rpcudp's result of a call: (answered, the decoded answer or None)."""


class _Sealer:
    """Private meshes: XChaCha20-Poly1305 over every datagram, random nonce in front.

    Without the network key a datagram neither opens nor can be forged, so an
    outsider gets no answer at all: it can neither query nor enumerate the mesh.
    """

    def __init__(self, network_key: bytes) -> None:
        self._key = crypto.derive(network_key, SEAL_LABEL)

    def seal(self, datagram: bytes) -> bytes:
        nonce = os.urandom(crypto.XNONCE_SIZE)
        return nonce + crypto.xchacha_encrypt(self._key, nonce, datagram, SEAL_LABEL)

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < SEAL_OVERHEAD:
            raise AuthenticationError("too short to be sealed")
        nonce, box = sealed[: crypto.XNONCE_SIZE], sealed[crypto.XNONCE_SIZE :]
        return crypto.xchacha_decrypt(self._key, nonce, box, SEAL_LABEL)


def _node_entry(entry: object) -> tuple[bytes, str, int] | None:
    """A FIND_NODE triple from a peer, checked, or None."""
    if not (isinstance(entry, list) and len(entry) == 3):
        return None
    node_id, host, port = entry
    ip = ipv4_host(host)
    if not (isinstance(node_id, bytes) and len(node_id) == records.NODE_ID_SIZE and ip):
        return None
    if type(port) is not int or not 0 < port < 65536:
        return None
    return node_id, ip, port


def _is_id(value: object) -> TypeGuard[bytes]:
    return isinstance(value, bytes) and len(value) == records.NODE_ID_SIZE


def _ids(args: list[object], count: int) -> list[bytes] | None:
    """The first ``count`` arguments if each is a node ID or key, else None."""
    ids = [a for a in args[:count] if _is_id(a)]
    return ids if len(ids) == count else None
