"""The addresses an operator types: ``listen``, ``announce`` and ``bootstrap`` in
meshnode.toml, and the ``--listen``, ``--announce`` and ``--bootstrap`` flags.

They are checked more leniently than the addresses records and invites carry
(``tests/unit/test_address.py``): the host is whatever the system will bind or
resolve, so only the ``host:port`` shape and the port are checked here, and
``listen`` may use port 0 (any free port). ``announce`` is what other nodes
dial, so neither port 0 nor an unspecified host. The command-line flags accept
port 0 for all three, as they always have.
"""

from __future__ import annotations

import pytest

from meshnode.config import check_address, from_mapping
from meshnode.errors import ConfigError

# Accepted wherever an operator types an address (port 0 aside).
LENIENT = [
    "127.0.0.1:7447",
    "10.0.0.1:65535",
    "[::1]:7447",
    "::1:7447",  # unbracketed IPv6: the host is everything before the last colon
    "localhost:7447",
    "node-1.example.org:7447",
    "bad host:80",  # the host is not checked: binding or resolving it fails later
    "h\u00e9llo:1",
    "[::1:80",
    "a:1:2",
    "a:00080",
]
MALFORMED = [
    "",
    "host",
    ":80",
    "a:",
    "a:65536",
    "a:123456",
    "a:000080",  # six digits
    "a:-1",
    "a:+1",
    "a:http",
    "a:\u0661",
    "a:\u00b2",
    "a:80 ",
]
NOT_TEXT = [7447, None, ["a:1"], b"a:1", True]


@pytest.mark.parametrize("address", LENIENT)
def test_lenient_addresses_are_accepted_for_every_key(address: str) -> None:
    config = from_mapping({"listen": address, "announce": address, "bootstrap": [address]})
    assert (config.listen, config.announce, config.bootstrap) == (address, address, (address,))
    for flag in ("--listen", "--announce", "--bootstrap"):
        assert check_address(address, flag) == address


@pytest.mark.parametrize("address", [*MALFORMED, *NOT_TEXT])
@pytest.mark.parametrize("key", ["listen", "announce", "bootstrap"])
def test_malformed_addresses_are_config_errors_naming_the_key(key: str, address: object) -> None:
    value = [address] if key == "bootstrap" else address
    with pytest.raises(ConfigError, match=f'^{key}: expected "host:port"'):
        from_mapping({key: value})
    with pytest.raises(ConfigError, match=f'^--{key}: expected "host:port"'):
        check_address(address, f"--{key}")


@pytest.mark.parametrize("address", ["0.0.0.0:0", "localhost:0", "[::]:0"])
def test_port_0_is_for_listening_and_the_flags(address: str) -> None:
    assert from_mapping({"listen": address}).listen == address
    for flag in ("--listen", "--announce", "--bootstrap"):
        assert check_address(address, flag) == address
    for key, value in (("announce", address), ("bootstrap", [address])):
        with pytest.raises(ConfigError, match=f'^{key}: expected "host:port"'):
            from_mapping({key: value})


@pytest.mark.parametrize(
    "address",
    # Every spelling of the unspecified address, and an empty host in brackets: until
    # core/address.py's is_wildcard, only the first three were refused here, and the
    # others made a contact record that no node accepts.
    ["0.0.0.0:7447", "[::]:7447", ":::7447", "[]:7447", "[0::0]:7447", "[0:0:0:0:0:0:0:0]:7447"],
)
def test_a_wildcard_is_for_listening_not_announcing(address: str) -> None:
    assert from_mapping({"listen": address, "bootstrap": [address]}).listen == address
    with pytest.raises(ConfigError, match=r"^announce: .*not 0\.0\.0\.0"):
        from_mapping({"announce": address})
