"""Network-interface discovery: the address a node announces when none is configured.

A node that listens on a wildcard address (``0.0.0.0``) must still put an
address other machines can dial in its contact record and invites. Rules:
1. A configured ``announce`` address wins.
2. A specific listen address is announced as it is.
3. For a wildcard one: the IPv4 address of the interface the default route
   leaves through (Linux: ``/proc/net/route``, then ``SIOCGIFADDR``, read
   locally without sending a packet), else the host name's address. Debian
   maps the host name to 127.0.1.1, which no other machine can dial, so the
   host name comes last.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Final

from meshnode.core.address import is_wildcard, join_address

_SIOCGIFADDR: Final = 0x8915


def announced(host: str, port: int, announce: str | None) -> str:
    """The address to put in contact records and invites when none is configured.

    For a wildcard listen address: the address of the interface the default route
    leaves through (what other machines on the network reach), else the host
    name's address; Debian maps the host name to 127.0.1.1, which no other
    machine can dial.
    """
    if announce is not None:
        return announce
    if is_wildcard(host):
        host = _default_route_address() or _hostname_address()
    return join_address(host, port)


def _hostname_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def default_interface(route_table: str) -> str | None:
    """The interface of the default route in the text of Linux's /proc/net/route."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


def _default_route_address() -> str | None:
    """The IPv4 address of the default route's interface (Linux), read locally: no
    packet is sent."""
    try:
        with open("/proc/net/route", encoding="ascii") as f:
            name = default_interface(f.read())
        if name is None:
            return None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            request = struct.pack("256s", name.encode()[:15])
            answer = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
        return socket.inet_ntoa(answer[20:24])
    except (OSError, UnicodeError):
        return None
