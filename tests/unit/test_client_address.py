from __future__ import annotations

import pytest

from server.client_address import ClientAddresses, peer_address


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:5555", "10.1.2.3"),
        ("ipv6:[::1]:5555", "::1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_peer_address(peer: str, address: str) -> None:
    assert peer_address(peer) == address


GATEWAY = "ipv4:10.0.0.5:40000"


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "client"),
    [
        ((), GATEWAY, "198.51.100.1", "10.0.0.5"),  # no proxy trusted: the peer
        (("10.0.0.0/24",), GATEWAY, None, "10.0.0.5"),  # a proxy, but no header
        (("10.0.0.0/24",), GATEWAY, "198.51.100.1", "198.51.100.1"),
        (("10.0.0.0/24",), GATEWAY, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # spoofed left
        (("10.0.0.0/24",), GATEWAY, "198.51.100.1, 10.0.0.9", "198.51.100.1"),  # two proxies
        (("10.0.0.0/24",), GATEWAY, "10.0.0.7, 10.0.0.9", "10.0.0.7"),  # all trusted
        (("10.0.0.0/24",), GATEWAY, "not-an-ip, 198.51.100.1", "198.51.100.1"),
        (("10.0.0.0/24",), GATEWAY, "198.51.100.1, junk", "10.0.0.5"),  # garbage next to us
        (("10.0.0.5",), "ipv4:10.0.0.6:1", "198.51.100.1", "10.0.0.6"),  # peer not trusted
        (("::1",), "ipv6:[::1]:1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    trusted: tuple[str, ...], peer: str, forwarded: str | None, client: str
) -> None:
    assert ClientAddresses(trusted).resolve(peer, forwarded) == client
