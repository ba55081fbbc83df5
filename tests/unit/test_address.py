"""host:port addresses: one rule (dht.md, "Addresses") for contact records and invites.

Each address below is checked by the function itself, by the invite writer and
reader, and by the contact record writer, so the places that write an address
can never disagree with the places that read it.
"""

from __future__ import annotations

import pytest

from meshnode.core import channel, codec, records, textcode
from meshnode.core.address import check_address
from meshnode.core.channel import INVITE_PREFIX, INVITE_SIGN_LABEL, Channel
from meshnode.core.identity import Identity
from meshnode.errors import InvalidInvite, InvalidRecord

NOW = 1_760_000_000

USABLE = [
    "a:1",  # the shortest: 3 bytes
    "127.0.0.1:4000",
    "10.0.0.1:65535",
    "[::1]:4001",
    "[2001:db8::1]:7447",
    "[::ffff:192.0.2.1]:80",
    "node-1.example.org:7447",
    "localhost:7447",
    "01.2.3.4:80",  # not an IPv4 literal (a leading zero): a name of digit labels
    "300.1.1.1:80",
    "host:08080",  # leading zeros in the port, as records have always allowed
]

UNUSABLE = [
    "",
    "a:",
    ":1",
    "ab",
    "a1",
    "host",
    "host:0",  # port 0: any free port, which nobody can dial
    "host:00000",
    "host:65536",
    "host:123456",
    "host:http",
    "host:-1",
    "0.0.0.0:7447",
    "[::]:7447",
    "224.0.0.1:7447",
    "[ff02::1]:7447",
    "[fe80::1%eth0]:7447",  # a zone names an interface of the writer's machine
    "[::1:7447",
    "[zz::1]:7447",
    "::1:7447",  # IPv6 without brackets
    "bad host:7447",
    "exa_mple.org:7447",
    "a..b:7447",
    "example.org.:7447",
    "h\u00e9llo:7447",
    "host:7447\n",
    "host:\u0661\u0662",  # Arabic-Indic digits
]


@pytest.mark.parametrize("address", USABLE)
def test_usable_addresses(address: str, alice: Identity) -> None:
    assert check_address(address, 262) == address
    code = Channel.from_secret("x", bytes(32)).make_invite(alice, now=NOW, bootstrap=[address])
    assert Channel.parse_invite(code, now=NOW).bootstrap == (address,)
    assert records.make_contact(alice, [address], seq=1, now=NOW).addresses == (address,)


def _signed_invite(alice: Identity, address: object) -> str:
    body = codec.pack([1, "x", bytes(32), 0, bytes(32), [address], NOW, None, alice.public_key])
    return textcode.encode(INVITE_PREFIX, body + alice.sign(INVITE_SIGN_LABEL + body))


@pytest.mark.parametrize("address", UNUSABLE)
def test_unusable_addresses_are_refused_by_writers_and_readers(
    address: str, alice: Identity
) -> None:
    with pytest.raises(ValueError, match="address"):
        check_address(address, 262)
    with pytest.raises(ValueError, match="address"):
        Channel.from_secret("x", bytes(32)).make_invite(alice, now=NOW, bootstrap=[address])
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(_signed_invite(alice, address), now=NOW)
    with pytest.raises(InvalidRecord, match="address"):
        records.make_contact(alice, [address], seq=1, now=NOW)


def test_address_sizes_are_bytes_and_each_format_has_its_own_limit(alice: Identity) -> None:
    for limit in (records.MAX_ADDRESS_SIZE, channel.MAX_ADDRESS_SIZE):
        longest = "a" * (limit - 5) + ":7447"
        assert check_address(longest, limit) == longest
        with pytest.raises(ValueError, match=f"3 to {limit} bytes"):
            check_address("a" + longest, limit)
    with pytest.raises(ValueError, match="ASCII"):
        check_address("\u00e9" * 10 + ":1", 262)  # 13 characters, 23 bytes: refused anyway
    with pytest.raises(ValueError, match="text"):
        check_address(b"a:1", 262)


def test_messages_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="port is 1 to 65535"):
        check_address("host:0", 262)
    with pytest.raises(ValueError, match='"host:port"'):
        check_address("host", 262)
    with pytest.raises(ValueError, match="wildcard"):
        check_address("0.0.0.0:7447", 262)
