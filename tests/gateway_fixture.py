"""Start a simulator and a gateway pointed at it, both on loopback.

``open_gateway`` is what end-to-end tests use: a real ccag (real sockets, a
real SQLite store in a temporary directory, the real app wiring) in front of
a simulator the test can script, with one API key ready to use.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ccag.app import Gateway, run_gateway
from ccag.auth.keys import create_key
from ccag.bedrock.credentials import CredentialSource
from ccag.config import load_config
from ccag.simulator import Simulator, open_simulator


@attrs.define
class RunningGateway:
    gateway: Gateway
    simulator: Simulator
    key: str
    shutdown: trio.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def telemetry(self) -> Any:
        return self.gateway.services.telemetry

    async def new_key(self, name: str, **owner: Any) -> str:
        owner.setdefault("user", name)
        key = await create_key(self.gateway.store, name, **owner)
        await self.gateway.services.keys.refresh()
        return key


@asynccontextmanager
async def open_gateway(
    tmp_path: Path,
    *,
    settings: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    simulator_options: dict[str, Any] | None = None,
    key_name: str = "test-key",
) -> AsyncIterator[RunningGateway]:
    """A gateway on 127.0.0.1 (free port) in front of a fresh simulator.

    ``key_name`` names the ready key; gateways sharing one store need
    different names (live key names are unique).
    """
    async with open_simulator(**(simulator_options or {})) as simulator:
        flags = {
            "host": "127.0.0.1",
            "port": 0,
            "store": str(tmp_path / "ccag.sqlite3"),
            "simulator": "off",
            "endpoint_url": simulator.url,
            "region": simulator.region,
            "admin_password": "test-admin-password",
            **(settings or {}),
        }
        config = load_config(flags, environ={})
        credentials = CredentialSource.static(simulator.access_key, simulator.secret_key)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            gateway: Gateway = await nursery.start(
                functools.partial(
                    run_gateway,
                    config,
                    environ=environ or {},
                    shutdown=shutdown,
                    credentials=credentials,
                )
            )
            key = await create_key(gateway.store, key_name, user="tester")
            await gateway.services.keys.refresh()
            try:
                yield RunningGateway(gateway, simulator, key, shutdown)
            finally:
                nursery.cancel_scope.cancel()
