"""The live view page in a real browser: headless Chromium, driven over the
Chrome DevTools protocol (its WebSocket, with trio-websocket), against a
gateway serving simulator traffic. The screenshot is kept as an artifact in
tests/artifacts/liveview.png.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from tests.e2e_client import message_body, post_messages
from tests.gateway_fixture import RunningGateway, open_gateway

ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN_PASSWORD = "test-admin-password"
VIEWPORT = {"width": 1440, "height": 1280, "deviceScaleFactor": 1, "mobile": False}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
]


class DevTools:
    """One CDP session on one page, one command at a time."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.session_id: str | None = None

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params}
        if self.session_id is not None:
            command["sessionId"] = self.session_id
        await self._ws.send_message(json.dumps(command))
        while True:
            reply = json.loads(await self._ws.get_message())
            if reply.get("id") != command_id:
                continue  # an event, or an answer to nobody
            if "error" in reply:
                raise AssertionError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply["result"]
            return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 15.0) -> Any:
        with trio.move_on_after(timeout):
            while True:
                try:
                    value = await self.evaluate(expression)
                except AssertionError:
                    value = None  # the page is still loading
                if value:
                    return value
                await trio.sleep(0.1)
        raise AssertionError(f"the page never showed {what}: {expression}")


async def devtools_url(process: trio.Process) -> str:
    """Chromium prints its browser endpoint on stderr once it listens."""
    assert process.stderr is not None
    seen = b""
    while b"DevTools listening on " not in seen or not seen.endswith(b"\n"):
        chunk = await process.stderr.receive_some(4096)
        assert chunk, f"chromium exited: {seen.decode(errors='replace')}"
        seen += chunk
    line = seen.split(b"DevTools listening on ", 1)[1].split(b"\n", 1)[0]
    return line.decode().strip()


async def send_traffic(running: RunningGateway, keys: list[str]) -> None:
    for index, key in enumerate(keys):
        reply = await post_messages(
            running.port, key, message_body(stream=index % 2 == 0, text=f"question {index}")
        )
        assert reply.status == 200, reply.body


async def test_liveview_browser_shows_traffic_live(tmp_path) -> None:
    chromium = shutil.which("chromium")
    assert chromium is not None, "install chromium: scripts/install-test-deps.sh"
    ARTIFACTS.mkdir(exist_ok=True)

    with trio.fail_after(90):
        async with open_gateway(tmp_path) as running:
            alice = await running.new_key("alice-key", user="alice", team="research")
            bob = await running.new_key("bob-key", user="bob", team="platform")
            process = await trio.lowlevel.open_process(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                 "about:blank"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                url = await devtools_url(process)
                async with trio_websocket.open_websocket_url(url, max_message_size=2**25) as ws:
                    tools = DevTools(ws)
                    target = await tools.call("Target.createTarget", url="about:blank")
                    attached = await tools.call(
                        "Target.attachToTarget", targetId=target["targetId"], flatten=True
                    )
                    tools.session_id = attached["sessionId"]
                    await tools.call("Emulation.setDeviceMetricsOverride", **VIEWPORT)
                    await tools.call("Page.navigate", url=f"{running.url}/ui")

                    # The login form, then the live page.
                    await tools.wait_for(
                        "!document.getElementById('login').hidden", "the login form"
                    )
                    await tools.evaluate(
                        f"document.getElementById('login-password').value = "
                        f"{json.dumps(ADMIN_PASSWORD)};"
                        "document.getElementById('login-submit').click(); true"
                    )
                    await tools.wait_for(
                        "document.getElementById('conn').textContent === 'live'",
                        "a live connection",
                    )
                    who = await tools.evaluate("document.getElementById('who').textContent")

                    await send_traffic(running, [alice, bob, running.key] * 4)
                    rows = await tools.wait_for(
                        "document.querySelectorAll('#feed-rows tr').length >= 12 && "
                        "document.querySelectorAll('#feed-rows tr').length",
                        "twelve rows in the feed",
                    )
                    points = await tools.wait_for(
                        "(() => { const n = Number(document.getElementById('chart-rps')"
                        ".dataset.points); return n >= 6 && n; })()",
                        "points on the requests chart",
                    )
                    spend_text = await tools.wait_for(
                        "document.getElementById('spend-rows').textContent.includes('research')"
                        " && document.getElementById('spend-rows').textContent",
                        "the research team's spend",
                    )
                    first_row = await tools.evaluate(
                        "Array.from(document.querySelector('#feed-rows tr').cells)"
                        ".map(c => c.textContent)"
                    )
                    # Let the fresh-row highlight fade before the picture.
                    await trio.sleep(1.5)
                    shot = await tools.call("Page.captureScreenshot", format="png")
                    (ARTIFACTS / "liveview.png").write_bytes(base64.b64decode(shot["data"]))

                    # Filtering by user narrows the feed to that user's rows.
                    filtered = await tools.evaluate(
                        "(() => { const f = document.getElementById('f-user');"
                        " f.value = 'alice'; f.dispatchEvent(new Event('input'));"
                        " return Array.from(document.querySelectorAll('#feed-rows tr'))"
                        ".map(r => r.cells[1].textContent); })()"
                    )
            finally:
                process.terminate()
                with trio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                if process.stderr is not None:
                    await process.stderr.aclose()

    assert who.startswith("admin")
    assert rows >= 12
    assert points >= 6
    assert "research" in spend_text and "platform" in spend_text
    assert first_row[1] == "tester" and first_row[5] == "200"
    assert filtered and set(filtered) == {"alice"}
    assert (ARTIFACTS / "liveview.png").stat().st_size > 10_000
