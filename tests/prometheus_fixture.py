"""A real Prometheus server on loopback that scrapes one target, for tests.

It runs the Debian ``prometheus`` binary with a throwaway data directory and
a generated configuration: one static loopback target, scraped every
second with ``authorization: {credentials: <token>}``. Nothing else: no
remote write, no alertmanager, no rules, no service discovery, so it never
sends anything beyond 127.0.0.1.

Usage (inside a Trio test, with the target already serving)::

    async with running_prometheus(f"127.0.0.1:{port}", token="t") as prometheus:
        value = await prometheus.wait_for_value('ccag_requests_total{status="200"}', "3")

``prometheus`` must be on PATH (``apt-get install -y prometheus``). When it
is missing the fixture raises, so the test fails, unless
``CCAG_TEST_NO_PROMETHEUS=1`` says this run goes without it (then it skips).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

SCRAPE_INTERVAL = "1s"
STARTUP_TIMEOUT_S = 30.0
"""Prometheus replays an empty WAL and opens its TSDB in a second or two;
a loaded CI machine gets room."""


def require_binary(name: str) -> str:
    """The path of a Prometheus tool; fail (or, when opted out, skip) if missing."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("CCAG_TEST_NO_PROMETHEUS") == "1":
        pytest.skip(f"{name} not installed and CCAG_TEST_NO_PROMETHEUS=1")
    raise RuntimeError(
        f"{name} is not on PATH: install Debian's prometheus package "
        "(apt-get install -y prometheus), or set CCAG_TEST_NO_PROMETHEUS=1"
    )


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(target: str, metrics_path: str, token: str) -> str:
    # JSON is YAML; json.dumps quotes the token and path safely.
    document = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [
            {
                "job_name": "ccag",
                "scheme": "http",
                "metrics_path": metrics_path,
                "authorization": {"credentials": token},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    return json.dumps(document)


class PrometheusServer:
    """A running Prometheus and its HTTP query API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.load(response)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """``/api/v1/query`` for ``expr`` now: the result vector."""
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        document = await trio.to_thread.run_sync(self._get_json, path)
        if document.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {document}")
        result: list[dict[str, Any]] = document["data"]["result"]
        return result

    async def targets(self) -> list[dict[str, Any]]:
        document = await trio.to_thread.run_sync(self._get_json, "/api/v1/targets")
        active: list[dict[str, Any]] = document["data"]["activeTargets"]
        return active

    async def wait_for_value(self, expr: str, expected: str, timeout: float = 15.0) -> str:
        """Poll until ``expr`` gives exactly one sample whose value is ``expected``.

        Raises:
            trio.TooSlowError: it did not, in ``timeout`` seconds (the last
                result is in the exception's context via the log).
        """
        last: list[dict[str, Any]] = []
        try:
            with trio.fail_after(timeout):
                while True:
                    last = await self.query(expr)
                    if len(last) == 1 and last[0]["value"][1] == expected:
                        return expected
                    await trio.sleep(0.2)
        except trio.TooSlowError:
            raise AssertionError(
                f"{expr!r} never became {expected!r}; last result {last}; "
                f"targets {await self.targets()}"
            ) from None

    async def _wait_ready(self) -> None:
        with trio.fail_after(STARTUP_TIMEOUT_S):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"prometheus exited with {self.process.returncode}:\n"
                        + self.log_path.read_text()[-3000:]
                    )
                try:
                    await trio.to_thread.run_sync(self._get_json, "/api/v1/status/buildinfo")
                    return
                except OSError:
                    await trio.sleep(0.1)


@asynccontextmanager
async def running_prometheus(
    target: str, *, token: str, metrics_path: str = "/metrics"
) -> AsyncIterator[PrometheusServer]:
    """Run Prometheus scraping ``target`` (``host:port`` on loopback).

    Args:
        target: what to scrape, such as ``127.0.0.1:8080``.
        token: sent as ``Authorization: Bearer <token>``.
        metrics_path: the path to scrape.
    """
    if not target.startswith(("127.", "[::1]", "localhost:")):
        raise ValueError(f"tests scrape loopback targets only, not {target!r}")
    binary = require_binary("prometheus")

    with tempfile.TemporaryDirectory(prefix="ccag-prometheus-") as scratch:
        root = Path(scratch)
        config_path = root / "prometheus.yml"
        config_path.write_text(_config(target, metrics_path, token))
        log_path = root / "prometheus.log"
        port = _free_loopback_port()
        # Blocking open and Popen are fine here: both return at once, and the
        # fixture waits for readiness with trio below.
        with open(log_path, "wb") as log:  # noqa: ASYNC230
            process = subprocess.Popen(  # noqa: ASYNC220
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = PrometheusServer(process, port, log_path)
        try:
            await server._wait_ready()
            yield server
        finally:
            process.terminate()
            try:
                await trio.to_thread.run_sync(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
