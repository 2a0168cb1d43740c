"""Reading metrics as Prometheus would: from a registry, or scraped over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.polling import eventually


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 when the sample does not exist (yet)."""
    return registry.get_sample_value(name, labels) or 0.0


async def settles(registry: CollectorRegistry, name: str, expected: float, **labels: str) -> None:
    """Waits for a sample to reach ``expected`` (the server counts after the client hears)."""

    async def reached() -> bool:
        return value(registry, name, **labels) >= expected

    with contextlib.suppress(TimeoutError):
        await eventually(reached, within=5.0)
    assert value(registry, name, **labels) == expected, (name, labels)


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    """(status, content type, body) of a GET on 127.0.0.1:port."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def find(text: str, name: str, labels: Mapping[str, str] | None = None) -> list[Sample]:
    """The samples called ``name`` whose labels include ``labels``."""
    wanted = dict(labels or {})
    return [
        s
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in wanted.items())
    ]
