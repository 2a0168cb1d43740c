"""The SSRF guard on real sockets: refused ranges, a name resolving to loopback
refused at delivery time (not only at registration), only vetted addresses
handed to the connection, no redirects followed, short timeouts."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from server.webhooks.guard import AddressRefused, GuardedResolver, refused_address
from server.webhooks.sender import Sender
from tests.support.receiver import receiving

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "224.0.0.1",  # noqa: S104 - to refuse, not to bind
        "255.255.255.255", "::1", "fe80::1", "fc00::1",
        "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::",
    ],
)  # fmt: skip
def test_loopback_private_link_local_and_reserved_addresses_are_refused(address: str) -> None:
    assert refused_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not refused_address(address)


class Answers(AbstractResolver):
    """A resolver that answers a fixed list, as a DNS server in an attacker's hands could."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_only_the_vetted_addresses_reach_the_connection() -> None:
    guarded = GuardedResolver(allow_private=False, inner=Answers("10.0.0.5", "93.184.216.34"))
    assert [r["host"] for r in await guarded.resolve("rebind.example", 443)] == ["93.184.216.34"]
    refused = GuardedResolver(allow_private=False, inner=Answers("169.254.169.254"))
    with pytest.raises(AddressRefused):
        await refused.resolve("metadata.example", 80)


def sender(*, allow_private: bool, timeout: float = 2.0) -> Sender:
    return Sender(
        allow_http=True,
        allow_private=allow_private,
        connect_timeout=1.0,
        timeout=timeout,
        response_max_bytes=4096,
        connections=4,
    )


async def test_a_name_resolving_to_loopback_is_refused_when_the_post_is_sent() -> None:
    async with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        guarded = sender(allow_private=False)
        await guarded.start()
        try:
            by_name = await guarded.post(f"http://localhost:{port}/hook", b"{}", {})
            by_address = await guarded.post(f"http://127.0.0.1:{port}/hook", b"{}", {})
        finally:
            await guarded.close()
        assert by_name.outcome == "refused"
        assert by_name.error is not None
        assert "resolves only to loopback" in by_name.error
        assert by_address.outcome == "refused"
        assert receiver.requests == []


async def test_redirects_are_not_followed_and_a_hang_times_out() -> None:
    async with receiving(lambda _: 302) as receiver:
        client = sender(allow_private=True, timeout=0.5)
        await client.start()
        try:
            moved = await client.post(receiver.url + "/hook", b"{}", {})
            hung = await client.post(receiver.url + "/hang", b"{}", {})
        finally:
            await client.close()
    assert (moved.outcome, moved.http_status) == ("http_error", 302)
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert hung.outcome == "timeout"
    assert 0.4 < hung.latency < 1.5


async def test_a_big_or_endless_answer_is_read_only_to_the_limit() -> None:
    from aiohttp import web

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        await response.write(b"x" * 8192)  # more than the limit, then never ends
        await asyncio.sleep(3600)
        return response

    app = web.Application()
    app.router.add_post("/", endless)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = sender(allow_private=True, timeout=5.0)
    await client.start()
    try:
        answer = await client.post(f"http://127.0.0.1:{runner.addresses[0][1]}/", b"{}", {})
    finally:
        await client.close()
        await runner.cleanup()
    assert (answer.outcome, answer.http_status) == ("delivered", 200)
    assert answer.latency < 2.0  # it did not wait for the rest
