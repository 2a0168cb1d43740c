"""What an outgoing webhook request may reach (the SSRF guard).

- A URL is ``https`` (``http`` too with TASKGATE_WEBHOOK_ALLOW_HTTP), at most
  2048 characters, with a host and no user, password or fragment.
- Its host must resolve to public addresses only: loopback, private,
  link-local (the cloud metadata service at 169.254.169.254 among them),
  shared, multicast, reserved and unspecified ranges are refused, unless
  TASKGATE_WEBHOOK_ALLOW_PRIVATE (tests and ``make run`` set it).
- The name is resolved once, by :class:`GuardedResolver`, which hands aiohttp
  only the addresses it vetted: the connection goes to a checked address (a
  DNS answer that changes between the check and the connection cannot
  redirect it), while TLS's SNI and the Host header keep the name.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

URL_MAX = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(OSError):
    """The host resolves to no address a webhook may reach."""


def refused_address(address: str) -> bool:
    """Whether ``address`` (an IP literal) is outside the public internet."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def url_problem(url: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook endpoint (its syntax and, for an IP literal,
    its address); None when it can."""
    if len(url) > URL_MAX:
        return f"must be at most {URL_MAX} characters"
    try:
        parsed = URL(url)
    except ValueError:
        return "is not a URL"
    schemes = ("https", "http") if allow_http else ("https",)
    if parsed.scheme not in schemes:
        return "must be an https URL" if not allow_http else "must be an http or https URL"
    if not parsed.host:
        return "must name a host"
    if parsed.user is not None or parsed.password is not None:
        return "must not carry a user or password"
    if parsed.fragment:
        return "must not have a fragment"
    try:
        parsed.port  # noqa: B018 - a port out of range raises
    except ValueError:
        return "has a bad port"
    if not allow_private and _ip_literal(parsed.host) and refused_address(parsed.host):
        return "must not point at a loopback, private, link-local or reserved address"
    return None


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and keeps only the addresses allowed."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        """``inner`` does the lookups (the system's resolver by default)."""
        self._resolver = inner or ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        if self._allow_private:
            return found
        allowed = [result for result in found if not refused_address(result["host"])]
        if not allowed:
            raise AddressRefused(
                f"{host} resolves only to loopback, private, link-local or reserved addresses"
            )
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


async def resolution_problem(url: str, *, allow_private: bool) -> str | None:
    """Why the host of ``url`` (already past :func:`url_problem`) cannot be reached
    now: it does not resolve, or only to refused addresses (a resolution cut short
    by the caller's timeout counts as not resolving). Checked again at every
    delivery, since a name can change its addresses."""
    host = URL(url).host or ""
    if allow_private or _ip_literal(host):
        return None
    resolver = GuardedResolver(allow_private=False)
    try:
        await resolver.resolve(host, 443, socket.AF_UNSPEC)
    except AddressRefused:
        return "must not point at a loopback, private, link-local or reserved address"
    except OSError:
        return "names a host that does not resolve"
    finally:
        await resolver.close()
    return None
