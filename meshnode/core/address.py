"""``host:port`` addresses: the one module that splits, checks and joins them.

Normative text: ``docs/spec/dht.md``, "Addresses". Every rule starts from one
grammar, then each place that reads an address adds what it needs:

Grammar (:func:`split_address`):
1. The text splits at its last ``:`` into ``host`` and ``port``; ``host`` is
   not empty, and one pair of brackets around it (``[::1]``) is taken off.
2. ``port`` is 1 to 5 ASCII digits with a value up to 65535 (leading zeros
   allowed); port 0 only where the caller allows it (listening on port 0
   asks the system for any free port).

Wire rule (:func:`check_address`): contact records (:mod:`meshnode.core.records`)
and invites (:mod:`meshnode.core.channel`, :mod:`meshnode.core.invite`) carry
addresses for another node to dial, and a writer must never make an address
its readers refuse, so both check with :func:`check_address`; only the
longest address each allows differs.
3. ``host:port`` in printable ASCII without spaces, so its size in bytes
   (UTF-8) is its length in characters: at least 3 bytes (``a:1``), at most
   the caller's ``max_size``.
4. ``port`` is 1 to 65535: port 0 asks the system for any port, which no
   other node can dial.
5. ``host`` is a bracketed IPv6 literal without a zone (``[2001:db8::1]``; a
   zone such as ``%eth0`` names an interface of the writer's machine), else
   an IPv4 literal (four decimal numbers 0 to 255 without leading zeros),
   else a DNS name: labels of ASCII letters, digits and ``-`` joined by ``.``.
6. The unspecified addresses (``0.0.0.0``, ``[::]``) and multicast ones are
   refused: they tell a reader nothing about where to dial.

DHT rule (:func:`split_ipv4_address`, :func:`ipv4_host`): the DHT does no DNS
(not in a datagram callback, not for a bootstrap address) and routes IPv4 only.
7. ``host`` is an IPv4 literal, unbracketed, that is neither unspecified,
   multicast nor the broadcast address; ``port`` is 1 to 65535.

What an operator types (``listen``, ``announce``, ``bootstrap``, ``peer add``)
and what the transport dials follow the grammar alone: the host is resolved
or bound by the system, which says what is wrong with it. :func:`is_wildcard`
tells a host that binds every interface (and so names none) from one to dial,
and :func:`network_of` the network a peer's address is counted in (its /24 or /64).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Final

MIN_ADDRESS_SIZE: Final = 3
MAX_PORT_DIGITS: Final = 5
MAX_PORT: Final = 65535
_IPV4_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")


def split_address(address: str, *, zero_port: bool = True) -> tuple[str, int]:
    """The host (without brackets) and port of ``address`` (rules 1 and 2).

    Args:
        address: ``host:port`` as typed or received.
        zero_port: whether port 0 is allowed (an address to listen on).

    Raises:
        ValueError: not ``host:port``, or the port is out of range; the
            message says which.
    """
    host, sep, port = address.rpartition(":")
    # isascii: str.isdigit also accepts digits int() refuses ("²") and other scripts' digits
    if not (sep and host and port.isascii() and port.isdigit() and len(port) <= MAX_PORT_DIGITS):
        raise ValueError(f'an address is "host:port": {address!r}')
    lowest = 0 if zero_port else 1
    if not lowest <= int(port) <= MAX_PORT:
        raise ValueError(f"an address's port is {lowest} to {MAX_PORT}: {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def join_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets: what :func:`split_address` splits."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_wildcard(host: str) -> bool:
    """Whether ``host`` (brackets taken off) is empty or an unspecified address
    (``0.0.0.0``, ``::``): one that binds every interface and names none to dial."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def check_address(address: object, max_size: int) -> str:
    """Return ``address`` if it is a ``host:port`` another node can dial (rules 1 to 6).

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
    split_address(address, zero_port=False)
    if not _usable_host(address.rpartition(":")[0]):
        raise ValueError(
            "an address's host is a DNS name, an IPv4 address or a bracketed IPv6 address, "
            f"not a wildcard or multicast one: {address!r}"
        )
    return address


def _usable_host(host: str) -> bool:
    """Rules 5 and 6 for ``host`` as written, brackets included."""
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


def ipv4_host(host: object) -> str | None:
    """``host`` as a routable IPv4 literal (rule 7), or None: never a name, so a
    node list from a peer never makes us resolve one."""
    if not isinstance(host, str) or len(host) > 15:
        return None
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast or ip == _IPV4_BROADCAST:
        return None
    return str(ip)


def split_ipv4_address(address: str) -> tuple[str, int]:
    """The DHT's ``host:port`` (rules 1, 2 and 7), as a socket address.

    Raises:
        ValueError: not ``host:port``, or the host is not a routable IPv4
            literal (a name, say: the DHT does no DNS).
    """
    host, port = split_address(address, zero_port=False)
    ip = ipv4_host(host)
    if ip is None or address.startswith("["):  # an IPv4 literal is never bracketed
        raise ValueError(f"not an IPv4 host:port address: {address!r}")
    return ip, port


@functools.lru_cache(maxsize=4096)
def network_of(address: str) -> bytes:
    """The source network an address is counted in, where one operator's addresses are
    cheap to multiply: its IPv4 /24 (``b"4"`` and three bytes) or IPv6 /64 (``b"6"``
    and eight bytes; an IPv4-mapped IPv6 address counts as its IPv4 one). Empty for
    anything else (a DNS name, say), which counts against no network.

    Args:
        address: ``host:port``, ``[v6]:port`` (split by :func:`split_address`) or a
            bare host (an IPv6 one has colons of its own, so it is tried first).
    """
    try:
        ip = _ip_literal(address)
    except ValueError:
        try:
            ip = _ip_literal(split_address(address)[0])
        except ValueError:
            return b""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return b"4" + ip.packed[:3]
    return b"6" + ip.packed[:8]


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``host`` as an IP address, without any zone (``%eth0``)."""
    return ipaddress.ip_address(host.partition("%")[0])
