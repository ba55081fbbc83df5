"""host:port addresses (dht.md, "Addresses"): one grammar, the wire rule of contact
records and invites, and the DHT's IPv4 rule, all in ``core/address.py``.

Each address below is checked by the function itself, by the writers (the
invite of version 1 and 2, the contact record) and by the decoders a reader
runs on the bytes that arrive (``Channel.parse_invite``, ``invite.parse_code``,
``records.validate``), so the places that write an address can never disagree
with the places that read it. The tables pin what the wire accepts, oddities
included (``0:80`` and ``0.0.0.00:80`` are DNS names; ``255.255.255.255`` is
neither unspecified nor multicast): a change to them is a change to the wire.
The grammar alone serves what an operator types and what the transport dials
(``tests/cli/test_config_addresses.py`` pins the configuration's side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from meshnode.core import channel, codec, invite, records, textcode
from meshnode.core.address import (
    check_address,
    ipv4_host,
    is_wildcard,
    join_address,
    network_of,
    split_address,
    split_ipv4_address,
)
from meshnode.core.channel import INVITE_PREFIX, INVITE_SIGN_LABEL, Channel
from meshnode.errors import InvalidInvite, InvalidRecord

if TYPE_CHECKING:
    from meshnode.core.identity import Identity

NOW = 1_760_000_000
CHANNEL = Channel.from_secret("x", bytes(32))

USABLE = [
    "a:1",  # the shortest: 3 bytes
    "127.0.0.1:4000",
    "10.0.0.1:65535",
    "[::1]:4001",
    "[2001:db8::1]:7447",
    "[::ffff:192.0.2.1]:80",
    "[fe80::1]:80",  # link-local, but without a zone
    "node-1.example.org:7447",
    "Host.Example:1",
    "xn--bcher-kva.example:443",
    "localhost:7447",
    "01.2.3.4:80",  # not an IPv4 literal (a leading zero): a name of digit labels
    "0.0.0.00:80",
    "300.1.1.1:80",
    "127.1:80",
    "1.2.3.4.5:80",
    "0:80",  # a one-label name, not the unspecified address
    "-a:1",  # a label may begin or end with "-"
    "a-:1",
    "255.255.255.255:80",  # broadcast is neither unspecified nor multicast
    "169.254.0.1:80",
    "[::ffff:0.0.0.0]:80",  # an IPv4-mapped address is not itself unspecified
    "[::ffff:224.0.0.1]:80",
    "host:08080",  # leading zeros in the port, as records have always allowed
    "a:00001",
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
    "host:+80",
    "0.0.0.0:7447",
    "[::]:7447",
    "[0:0:0:0:0:0:0:0]:1",
    "224.0.0.1:7447",
    "239.255.255.250:1900",
    "[ff02::1]:7447",
    "[fe80::1%eth0]:7447",  # a zone names an interface of the writer's machine
    "[::1%eth0]:1",
    "[::1:7447",
    "[::1]",
    "[::1]:",
    "[]:80",
    "[1.2.3.4]:80",  # brackets hold IPv6 only
    "[[::1]]:80",
    "[::1]]:80",
    "[::1]x:80",
    "[zz::1]:7447",
    "::1:7447",  # IPv6 without brackets
    "a:1:2",
    "localhost:7447:",
    "bad host:7447",
    "a: 1",
    "a:1 ",
    "a:1\t",
    "exa_mple.org:7447",
    "---:1",
    "a..b:7447",
    ".a:1",
    "example.org.:7447",
    "0.0.0.0.:1",
    "h\u00e9llo:7447",
    "host:7447\n",
    "host:\u0661\u0662",  # Arabic-Indic digits
    "a:\uff11",  # a fullwidth digit
]

NOT_TEXT = [b"a:1", 1, None, ["a:1"], True]


def _contact_value(alice: Identity, address: object) -> bytes:
    """A contact record as it arrives from the DHT, signed, its address unchecked."""
    body = [1, alice.public_key, 1, NOW, NOW + 3600, [address]]
    signature = alice.sign(records.CONTACT_SIGN_LABEL + codec.pack(body))
    return codec.pack([*body, signature])


def _read_contact(alice: Identity, address: object) -> records.ContactRecord:
    key = records.contact_key(alice.public_key)
    contact = records.validate(key, _contact_value(alice, address), NOW)
    assert isinstance(contact, records.ContactRecord)
    return contact


def _signed_invite(alice: Identity, address: object) -> str:
    """A code of version 1, signed, its address unchecked."""
    body = codec.pack([1, "x", bytes(32), 0, bytes(32), [address], NOW, None, alice.public_key])
    return textcode.encode(INVITE_PREFIX, body + alice.sign(INVITE_SIGN_LABEL + body))


def _signed_code(alice: Identity, address: object) -> str:
    """A code of version 2 (online), signed, its address unchecked."""
    body = codec.pack(
        [2, 0, "x", CHANNEL.id, alice.public_key, [address], bytes(32), NOW, NOW + 3600, None]
    )
    return textcode.encode(INVITE_PREFIX, body + alice.sign(INVITE_SIGN_LABEL + body))


@pytest.mark.parametrize("address", USABLE)
def test_usable_addresses(address: str, alice: Identity) -> None:
    assert check_address(address, 262) == address
    code = CHANNEL.make_invite(alice, now=NOW, bootstrap=[address])
    assert Channel.parse_invite(code, now=NOW).bootstrap == (address,)
    code = invite.make_code(
        alice, channel=CHANNEL, token_seed=bytes(32), addresses=[address], now=NOW,
        expires_at=NOW + 3600,
    )  # fmt: skip
    assert invite.parse_code(code, now=NOW).addresses == (address,)
    assert records.make_contact(alice, [address], seq=1, now=NOW).addresses == (address,)


@pytest.mark.parametrize("address", USABLE)
def test_usable_addresses_are_read_from_the_wire(address: str, alice: Identity) -> None:
    assert Channel.parse_invite(_signed_invite(alice, address), now=NOW).bootstrap == (address,)
    assert invite.parse_code(_signed_code(alice, address), now=NOW).addresses == (address,)
    assert _read_contact(alice, address).addresses == (address,)


@pytest.mark.parametrize("address", UNUSABLE)
def test_unusable_addresses_are_refused_by_writers_and_readers(
    address: str, alice: Identity
) -> None:
    with pytest.raises(ValueError, match="address"):
        check_address(address, 262)
    with pytest.raises(ValueError, match="address"):
        CHANNEL.make_invite(alice, now=NOW, bootstrap=[address])
    with pytest.raises(ValueError, match="address"):
        invite.make_code(
            alice, channel=CHANNEL, token_seed=bytes(32), addresses=[address], now=NOW,
            expires_at=NOW + 3600,
        )  # fmt: skip
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(_signed_invite(alice, address), now=NOW)
    with pytest.raises(InvalidInvite):
        invite.parse_code(_signed_code(alice, address), now=NOW)
    with pytest.raises(InvalidRecord, match="address"):
        records.make_contact(alice, [address], seq=1, now=NOW)
    with pytest.raises(InvalidRecord, match="address"):
        _read_contact(alice, address)


@pytest.mark.parametrize("address", NOT_TEXT)
def test_an_address_that_is_not_text_is_refused_by_readers(
    address: object, alice: Identity
) -> None:
    with pytest.raises(ValueError, match="text"):
        check_address(address, 262)
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(_signed_invite(alice, address), now=NOW)
    with pytest.raises(InvalidInvite):
        invite.parse_code(_signed_code(alice, address), now=NOW)
    with pytest.raises(InvalidRecord):
        _read_contact(alice, address)


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


def test_the_decoders_apply_their_own_size_limit(alice: Identity) -> None:
    longest_record = "a" * (records.MAX_ADDRESS_SIZE - 5) + ":7447"
    assert _read_contact(alice, longest_record).addresses == (longest_record,)
    with pytest.raises(InvalidRecord):
        _read_contact(alice, "a" + longest_record)
    longest_invite = "a" * (channel.MAX_ADDRESS_SIZE - 5) + ":7447"
    got = Channel.parse_invite(_signed_invite(alice, longest_invite), now=NOW)
    assert got.bootstrap == (longest_invite,)
    assert invite.parse_code(_signed_code(alice, longest_invite), now=NOW).addresses == (
        longest_invite,
    )
    with pytest.raises(InvalidInvite):
        Channel.parse_invite(_signed_invite(alice, "a" + longest_invite), now=NOW)
    with pytest.raises(InvalidInvite):
        invite.parse_code(_signed_code(alice, "a" + longest_invite), now=NOW)


def test_messages_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="port is 1 to 65535"):
        check_address("host:0", 262)
    with pytest.raises(ValueError, match='"host:port"'):
        check_address("host", 262)
    with pytest.raises(ValueError, match="wildcard"):
        check_address("0.0.0.0:7447", 262)


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("127.0.0.1:7447", ("127.0.0.1", 7447)),
        ("[::1]:80", ("::1", 80)),
        ("::1:7447", ("::1", 7447)),  # unbracketed: everything before the last colon
        ("localhost:0", ("localhost", 0)),
        ("a:00080", ("a", 80)),
        ("bad host:1", ("bad host", 1)),  # the host is the system's to resolve
        ("[]:80", ("", 80)),
        ("[::1:80", ("[::1", 80)),  # one pair of brackets comes off, not half of one
    ],
)
def test_the_grammar_splits_host_and_port(address: str, parts: tuple[str, int]) -> None:
    assert split_address(address) == parts


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1", '"host:port"'),
        (":80", '"host:port"'),
        ("host:", '"host:port"'),
        ("host:port", '"host:port"'),
        ("host:123456", '"host:port"'),
        ("host:+80", '"host:port"'),
        ("host:\u0661", '"host:port"'),  # str.isdigit says yes; the grammar says ASCII
        ("host:\u00b2", '"host:port"'),
        ("host:65536", "port is 0 to 65535"),
        ("host:99999", "port is 0 to 65535"),
    ],
)
def test_the_grammar_refuses(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_address(address)


def test_port_0_is_allowed_only_when_asked() -> None:
    assert split_address("0.0.0.0:0", zero_port=True) == ("0.0.0.0", 0)
    with pytest.raises(ValueError, match="port is 1 to 65535"):
        split_address("0.0.0.0:0", zero_port=False)


@pytest.mark.parametrize("address", USABLE)
def test_every_usable_address_follows_the_grammar(address: str) -> None:
    host, port = split_address(address, zero_port=False)
    assert split_address(join_address(host, port)) == (host, port)


def test_join_brackets_ipv6_only() -> None:
    assert join_address("127.0.0.1", 7447) == "127.0.0.1:7447"
    assert join_address("::1", 80) == "[::1]:80"
    assert join_address("node.example", 1) == "node.example:1"


@pytest.mark.parametrize(
    ("host", "wildcard"),
    [
        ("", True),
        ("0.0.0.0", True),
        ("::", True),
        ("0:0::0", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0", False),  # a name
        ("[::]", False),  # brackets are the caller's to take off (split_address does)
    ],
)
def test_a_wildcard_binds_every_interface_and_names_none(host: str, wildcard: bool) -> None:
    assert is_wildcard(host) is wildcard


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", None),
        ("224.0.0.1", None),
        ("255.255.255.255", None),
        ("01.2.3.4", None),
        ("1.2.3.4 ", None),
        ("localhost", None),
        ("::1", None),
        (b"1.2.3.4", None),
        (16909060, None),
    ],
)
def test_the_dht_takes_routable_ipv4_literals_only(host: object, ip: str | None) -> None:
    assert ipv4_host(host) == ip


def test_the_dht_splits_ipv4_addresses_only() -> None:
    assert split_ipv4_address("127.0.0.1:7447") == ("127.0.0.1", 7447)
    assert split_ipv4_address("10.0.0.1:00080") == ("10.0.0.1", 80)
    for bad in ("localhost:7447", "[1.2.3.4]:80", "0.0.0.0:7447", "255.255.255.255:1", "[::1]:1"):
        with pytest.raises(ValueError, match="not an IPv4 host:port"):
            split_ipv4_address(bad)
    for malformed in ("1.2.3.4:0", "1.2.3.4", "1.2.3.4:\u0661", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match="address"):
            split_ipv4_address(malformed)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("1.2.3.4:80", "34010203"),  # b"4" and the /24
        ("1.2.3.99:7447", "34010203"),
        ("1.2.4.4:80", "34010204"),
        ("[2001:db8::1]:80", "3620010db800000000"),  # b"6" and the /64
        ("[2001:db8::ffff:1]:7447", "3620010db800000000"),
        ("[2001:db9::1]:80", "3620010db900000000"),
        ("[::ffff:1.2.3.4]:80", "34010203"),  # IPv4-mapped: its IPv4 network
        ("[fe80::1%eth0]:80", "36fe80000000000000"),
        ("1.2.3.4", "34010203"),  # a bare host
        ("2001:db8::1", "3620010db800000000"),
        ("::1", "360000000000000000"),
        ("localhost:7447", ""),  # a name counts against no network
        ("node.example", ""),
        ("", ""),
        ("[::1", ""),
        ("a:b:c", ""),
        # Not host:port by the grammar, so no network (a session's remote address,
        # which is what is counted, never looks like these).
        ("1.2.3.4:99999", ""),
        ("[::1]x:80", ""),
    ],
)
def test_the_network_an_address_is_counted_in(address: str, network: str) -> None:
    assert network_of(address).hex() == network
