"""Several simulated Bedrock endpoints behind one real gateway, on loopback.

``open_endpoints(tmp_path, [SimEndpoint(...), ...], routing={...})`` starts
one simulator per endpoint (its own credentials and region), a gateway whose
``endpoints`` setting names them, and hands back the running pieces.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ccag.app import Gateway, run_gateway
from ccag.auth.keys import create_key
from ccag.config import load_config
from ccag.simulator import Simulator, open_simulator


@attrs.frozen
class SimEndpoint:
    id: str
    region: str = "us-east-1"
    priority: int = 100
    weight: int = 1
    api: str = "invoke"
    geo_prefix: str | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    credentials: dict[str, Any] | None = None


@attrs.define
class RunningEndpoints:
    gateway: Gateway
    simulators: dict[str, Simulator]
    key: str

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def router(self) -> Any:
        return self.gateway.services.upstream

    @property
    def telemetry(self) -> Any:
        return self.gateway.services.telemetry

    def calls(self) -> dict[str, int]:
        """Model calls each endpoint's simulator received."""
        return {name: len(sim.model_requests()) for name, sim in self.simulators.items()}

    async def new_key(self, name: str, **owner: Any) -> str:
        owner.setdefault("user", name)
        key = await create_key(self.gateway.store, name, **owner)
        await self.gateway.services.keys.refresh()
        return key


def endpoint_table(endpoint: SimEndpoint, simulator: Simulator) -> dict[str, Any]:
    table: dict[str, Any] = {
        "id": endpoint.id,
        "region": endpoint.region,
        "url": simulator.url,
        "control_url": simulator.url,
        "api": endpoint.api,
        "priority": endpoint.priority,
        "weight": endpoint.weight,
        "credentials": endpoint.credentials
        or {
            "type": "static",
            "access_key_id": simulator.access_key,
            "secret_access_key": simulator.secret_key,
        },
    }
    if endpoint.geo_prefix:
        table["geo_prefix"] = endpoint.geo_prefix
    return table


@asynccontextmanager
async def open_endpoints(
    tmp_path: Path,
    endpoints: list[SimEndpoint],
    *,
    routing: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> AsyncIterator[RunningEndpoints]:
    async with AsyncExitStack() as stack:
        simulators = {}
        for index, endpoint in enumerate(endpoints):
            options = {
                "region": endpoint.region,
                "access_key": f"AKIDENDPOINT{index:08d}",
                "secret_key": f"secret-of-{endpoint.id}",
                **endpoint.options,
            }
            if "credentials" in endpoint.options:
                options.pop("access_key")
                options.pop("secret_key")
            simulators[endpoint.id] = await stack.enter_async_context(open_simulator(**options))

        flags = {
            "host": "127.0.0.1",
            "port": 0,
            "store": str(tmp_path / "ccag.sqlite3"),
            "simulator": "off",
            "admin_password": "test-admin-password",
            "endpoints": [endpoint_table(e, simulators[e.id]) for e in endpoints],
            "routing": routing,
            **(settings or {}),
        }
        config = load_config(flags, environ={})
        async with trio.open_nursery() as nursery:
            gateway: Gateway = await nursery.start(
                functools.partial(run_gateway, config, environ={}, shutdown=trio.Event())
            )
            key = await create_key(gateway.store, "test-key", user="tester")
            await gateway.services.keys.refresh()
            try:
                yield RunningEndpoints(gateway, simulators, key)
            finally:
                nursery.cancel_scope.cancel()
