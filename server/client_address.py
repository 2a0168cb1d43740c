"""Who is calling, by IP address: the gRPC peer, or behind a trusted proxy the
last address in ``x-forwarded-for`` that is not one of the trusted proxies.

The HTTP gateway appends its client's address to X-Forwarded-For and sends it
on as ``x-forwarded-for`` metadata. Anyone can send that metadata, so it is
believed only when the peer itself is a configured proxy, and read from the
right: entries a trusted proxy appended are skipped, the first other one is
the client (anything left of it is what the client claimed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_address(peer: str) -> str:
    """``ipv4:1.2.3.4:5678`` → ``1.2.3.4``; ``ipv6:[::1]:5678`` → ``::1``; else as given."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


def _ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies
        )

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address for a call from ``peer`` with that metadata."""
        address = peer_address(peer)
        ip = _ip(address)
        if ip is None or not self._trusted or not self._is_trusted(ip) or not forwarded_for:
            return address
        for hop in reversed(forwarded_for.split(",")):
            hop_ip = _ip(hop)
            if hop_ip is None:
                return address  # garbage in the chain: trust it no further
            if not self._is_trusted(hop_ip):
                return str(hop_ip)
            address = str(hop_ip)
        return address
