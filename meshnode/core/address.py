"""``host:port`` addresses: one rule for every place meshnode writes or reads one.

Contact records (:mod:`meshnode.core.records`) and invites
(:mod:`meshnode.core.channel`) both carry addresses for another node to dial,
and a writer must never make an address its readers refuse, so both check
with :func:`check_address`; only the longest address each allows differs.
Normative text: ``docs/spec/dht.md``, "Addresses".

Rules:
1. ``host ":" port`` in printable ASCII without spaces, so its size in bytes
   (UTF-8) is its length in characters: at least 3 bytes (``a:1``), at most
   the caller's ``max_size``.
2. ``port`` is 1 to 5 decimal digits with a value of 1 to 65535: port 0 asks
   the system for any port, which no other node can dial.
3. ``host`` is a bracketed IPv6 literal without a zone (``[2001:db8::1]``; a
   zone such as ``%eth0`` names an interface of the writer's machine), else
   an IPv4 literal (four decimal numbers 0 to 255 without leading zeros),
   else a DNS name: labels of ASCII letters, digits and ``-`` joined by ``.``.
4. The unspecified addresses (``0.0.0.0``, ``[::]``) and multicast ones are
   refused: they tell a reader nothing about where to dial.
"""

from __future__ import annotations

import ipaddress
from typing import Final

MIN_ADDRESS_SIZE: Final = 3
MAX_PORT_DIGITS: Final = 5


def check_address(address: object, max_size: int) -> str:
    """Return ``address`` if it is a ``host:port`` another node can dial.

    Args:
        address: the address as written in a record or an invite.
        max_size: the longest address the caller's format allows, in bytes.

    Raises:
        ValueError: the address breaks a rule above; the message says which,
            so an organizer who typed it knows what to change.
    """
    if not isinstance(address, str):
        raise ValueError(f"an address is text, not {type(address).__name__}")
    if not address.isascii() or not address.isprintable() or " " in address:
        raise ValueError(f"an address is printable ASCII without spaces: {address!r}")
    if not MIN_ADDRESS_SIZE <= len(address) <= max_size:
        raise ValueError(
            f"an address is {MIN_ADDRESS_SIZE} to {max_size} bytes, not {len(address)}: "
            f"{address[:40]!r}"
        )
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and len(port) <= MAX_PORT_DIGITS):
        raise ValueError(f'an address is "host:port": {address!r}')
    if not 0 < int(port) < 65536:
        raise ValueError(f"an address's port is 1 to 65535: {address!r}")
    if not _usable_host(host):
        raise ValueError(
            "an address's host is a DNS name, an IPv4 address or a bracketed IPv6 address, "
            f"not a wildcard or multicast one: {address!r}"
        )
    return address


def _usable_host(host: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    if host.startswith("[") and host.endswith("]"):
        if "%" in host:
            return False
        try:
            ip = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
    else:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            return all(label and label.replace("-", "").isalnum() for label in host.split("."))
    return not (ip.is_unspecified or ip.is_multicast)


def network_of(address: str) -> bytes:
    """The source network an address is counted in, where one operator's addresses are
    cheap to multiply: its IPv4 /24 (``b"4"`` and three bytes) or IPv6 /64 (``b"6"``
    and eight bytes; an IPv4-mapped IPv6 address counts as its IPv4 one). Empty for
    anything else (a DNS name, say), which counts against no network.

    Args:
        address: ``host:port``, ``[v6]:port`` or a bare host.
    """
    host = address
    if address.startswith("["):
        host = address[1 : address.find("]")] if "]" in address else address
    elif address.count(":") == 1:
        host = address.partition(":")[0]
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return b""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return b"4" + ip.packed[:3]
    return b"6" + ip.packed[:8]
