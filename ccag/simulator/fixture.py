"""Running a simulator on a loopback port, for tests, demos and perf.

``async with open_simulator(**options) as sim:`` serves a
:class:`~ccag.simulator.handler.BedrockSimulator` through
:func:`ccag.server.serve` on 127.0.0.1 (port 0 picks a free port) until the
block ends; ``await nursery.start(run_simulator, ...)`` does the same inside a
caller's nursery and hands back the :class:`Simulator`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ccag.config import load_config
from ccag.server import serve
from ccag.simulator.handler import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    BedrockSimulator,
    ReceivedRequest,
    SimulatorOptions,
)
from ccag.simulator.scenarios import Scenario


@attrs.define
class Simulator:
    """A running simulator: where it listens and how to sign for it."""

    handler: BedrockSimulator
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def region(self) -> str:
        return self.handler.options.region

    @property
    def access_key(self) -> str:
        """The first configured access key id."""
        return next(iter(self.handler.options.credentials))

    @property
    def secret_key(self) -> str:
        return self.handler.options.credentials[self.access_key]

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order."""
        return self.handler.requests

    def model_requests(self) -> list[ReceivedRequest]:
        """The received model calls (invoke, stream, count-tokens)."""
        return [record for record in self.handler.requests if record.model_id is not None]

    def script(self, *scenarios: Scenario, model: str | None = None, kind: str | None = None) -> None:
        """See :meth:`BedrockSimulator.script`."""
        self.handler.script(*scenarios, model=model, kind=kind)

    def reset(self) -> None:
        self.handler.reset()


def _options(options: dict[str, Any]) -> SimulatorOptions:
    access_key = options.pop("access_key", None)
    secret_key = options.pop("secret_key", None)
    if access_key is not None or secret_key is not None:
        options["credentials"] = {access_key or DEFAULT_ACCESS_KEY: secret_key or DEFAULT_SECRET_KEY}
    return SimulatorOptions(**options)


async def run_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown: trio.Event | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve a simulator until cancelled (or ``shutdown`` is set).

    Args:
        host: the address to bind; loopback by default.
        port: the port; 0 picks a free one.
        shutdown: when set, stop serving gracefully.
        task_status: receives the :class:`Simulator` once it listens.
        options: :class:`SimulatorOptions` fields, plus ``access_key`` and
            ``secret_key`` as a shorthand for one credential pair.
    """
    handler = BedrockSimulator(_options(dict(options)))
    config = load_config({"host": host, "port": port}, environ={})

    async def serve_and_report(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await serve(
            handler, config, shutdown=shutdown, name="Bedrock simulator", task_status=task_status
        )

    async with trio.open_nursery() as nursery:
        bound_port = await nursery.start(serve_and_report)
        task_status.started(Simulator(handler, host, bound_port))


@asynccontextmanager
async def open_simulator(**options: Any) -> AsyncIterator[Simulator]:
    """A simulator on a loopback port for the duration of the block.

    Args:
        options: as for :func:`run_simulator`.
    """
    async with trio.open_nursery() as nursery:
        simulator: Simulator = await nursery.start(lambda task_status: run_simulator(task_status=task_status, **options))
        try:
            yield simulator
        finally:
            nursery.cancel_scope.cancel()
