"""Headless Chromium opens /docs and registers a user from Swagger UI.

Debian's ``chromium`` is driven over the DevTools protocol with aiohttp's
websocket client (no browser driver package). Skipped, with the reason, when
no ``chromium`` is installed (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import Client
from tests.support.clients import PASSWORD, new_username

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)"
    ),
    pytest.mark.timeout(90),
]


class Page:
    """One page target over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        await self.ws.send_json({"id": number, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == number:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, within: float = 30.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"never true: {expression}")


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="gw-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            port = None
            while port is None:
                line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
                if not line:
                    raise AssertionError("chromium exited before DevTools listened")
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                port = int(found.group(1)) if found else None
            drain = asyncio.create_task(process.stderr.read())
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                page = next(t for t in targets if t["type"] == "page")
                async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    yield Page(ws)
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()
            with contextlib.suppress(Exception):
                await drain


CLICK_CREATE_USER = """
(() => {
  const op = document.querySelector('#operations-UserService-UserService_CreateUser');
  if (!op) return false;
  if (!op.classList.contains('is-open')) op.querySelector('.opblock-summary-control').click();
  return true;
})()
"""
TRY_IT_OUT = """
(() => {
  const button = document.querySelector(
    '#operations-UserService-UserService_CreateUser .try-out__btn');
  if (!button) return false;
  button.click();
  return true;
})()
"""
FILL_BODY = """
(() => {
  const area = document.querySelector(
    '#operations-UserService-UserService_CreateUser textarea.body-param__text');
  if (!area) return false;
  const setter = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;
  setter.call(area, %s);
  area.dispatchEvent(new Event('input', {bubbles: true}));
  return true;
})()
"""
EXECUTE = """
(() => {
  const button = document.querySelector('#operations-UserService-UserService_CreateUser .execute');
  if (!button) return false;
  button.click();
  return true;
})()
"""
LIVE_STATUS = """
(() => {
  const cell = document.querySelector(
    '#operations-UserService-UserService_CreateUser .live-responses-table '
    + 'tr.response .response-col_status');
  return cell ? cell.textContent.trim() : '';
})()
"""
LIVE_BODY = """
(() => {
  const body = document.querySelector(
    '#operations-UserService-UserService_CreateUser .live-responses-table .microlight');
  return body ? body.textContent : '';
})()
"""


async def test_swagger_ui_registers_a_user(http: Client) -> None:
    url = f"http://127.0.0.1:{http.port}/docs"
    username = new_username()
    async with chromium_page() as page:
        await page.send("Page.enable")
        await page.send("Page.navigate", url=url)
        await page.wait_for(
            "window.ui !== undefined && document.querySelector('.opblock') !== null"
        )
        title = await page.evaluate("document.querySelector('.title').textContent")
        assert title.startswith("taskgate")
        await page.wait_for(CLICK_CREATE_USER)
        await page.wait_for(TRY_IT_OUT)
        body = json.dumps({"username": username, "password": PASSWORD})
        await page.wait_for(FILL_BODY % json.dumps(body))
        await page.wait_for(EXECUTE)
        status = await page.wait_for(LIVE_STATUS)
        shown = await page.evaluate(LIVE_BODY)
    assert status == "200", shown
    assert json.loads(shown)["user"]["username"] == username
    response = await http.post("/v1/sessions", json={"username": username, "password": PASSWORD})
    assert response.status == 200
