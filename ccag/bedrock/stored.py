"""Endpoints, team routes and capability verdicts kept in the store.

Plain units of work for :meth:`ccag.store.Store.run` (each takes a
connection), plus :class:`StoredCapabilities`, the capability memory that
also writes what it learns so that other gateways, and this one after a
restart, start from it. Reading happens at start and in a background loop;
the hot path only touches memory.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import trio

from ccag.anthropic.capabilities import CapabilityMemory, Kind
from ccag.bedrock.endpoints import (
    EndpointSpec,
    TeamRoute,
    endpoint_document,
    parse_endpoint,
    parse_team_route,
)
from ccag.errors import ConfigError
from ccag.store import StoreError

logger = logging.getLogger(__name__)

# Verdict writes waiting for the store; past this new ones are dropped (the
# memory itself still has them), so a store outage cannot grow memory.
MAX_PENDING_VERDICTS = 1024


def load_endpoints(connection: Any) -> list[EndpointSpec]:
    """Every stored endpoint; a broken row is logged and skipped."""
    specs = []
    for endpoint_id, definition in connection.query(
        "SELECT id, definition FROM bedrock_endpoints ORDER BY id"
    ):
        try:
            specs.append(parse_endpoint(json.loads(definition), f"stored endpoint {endpoint_id!r}"))
        except (ValueError, ConfigError) as exc:
            logger.error("stored endpoint %s is unusable: %s", endpoint_id, exc)
    return specs


def save_endpoint(connection: Any, spec: EndpointSpec, now: float) -> None:
    definition = json.dumps(endpoint_document(spec), sort_keys=True)
    connection.execute("DELETE FROM bedrock_endpoints WHERE id = ?", (spec.id,))
    connection.execute(
        "INSERT INTO bedrock_endpoints (id, definition, updated_at) VALUES (?, ?, ?)",
        (spec.id, definition, now),
    )


def delete_endpoint(connection: Any, endpoint_id: str) -> int:
    return connection.execute("DELETE FROM bedrock_endpoints WHERE id = ?", (endpoint_id,))


def load_team_routes(connection: Any) -> dict[str, TeamRoute]:
    routes = {}
    for team, definition in connection.query("SELECT team, definition FROM team_routes ORDER BY team"):
        try:
            routes[team] = parse_team_route(json.loads(definition), f"stored route of team {team!r}")
        except (ValueError, ConfigError) as exc:
            logger.error("stored route of team %s is unusable: %s", team, exc)
    return routes


def save_team_route(connection: Any, team: str, route: TeamRoute, now: float) -> None:
    definition = {"endpoints": list(route.endpoints), "strategy": route.strategy, "geography": route.geography}
    document = json.dumps({k: v for k, v in definition.items() if v is not None}, sort_keys=True)
    connection.execute("DELETE FROM team_routes WHERE team = ?", (team,))
    connection.execute(
        "INSERT INTO team_routes (team, definition, updated_at) VALUES (?, ?, ?)", (team, document, now)
    )


def delete_team_route(connection: Any, team: str) -> int:
    return connection.execute("DELETE FROM team_routes WHERE team = ?", (team,))


def load_verdicts(connection: Any, now: float) -> list[tuple[str, str, str, float]]:
    return [
        (str(key), str(kind), str(name), float(expires))
        for key, kind, name, expires in connection.query(
            "SELECT model_key, kind, name, expires_at FROM capability_verdicts WHERE expires_at > ?", (now,)
        )
    ]


def _write_verdicts(connection: Any, verdicts: list[tuple[str, str, str, float | None]]) -> None:
    for key, kind, name, expires in verdicts:
        connection.execute(
            "DELETE FROM capability_verdicts WHERE model_key = ? AND kind = ? AND name = ?", (key, kind, name)
        )
        if expires is not None:
            connection.execute(
                "INSERT INTO capability_verdicts (model_key, kind, name, expires_at) VALUES (?, ?, ?, ?)",
                (key, kind, name, expires),
            )


class StoredCapabilities(CapabilityMemory):
    """The capability memory, written through to the store in the background.

    Times handed to it are the wall clock (``Services.wall_clock``), so the
    stored expiry means the same to every gateway.
    """

    def __init__(self, ttl_seconds: float, store: Any) -> None:
        super().__init__(ttl_seconds)
        self._store = store
        self._pending: list[tuple[str, str, str, float | None]] = []
        self._wake = trio.Event()

    def remember(self, model_key: str, kind: Kind, name: str, now: float) -> None:
        super().remember(model_key, kind, name, now)
        self._queue(model_key, kind, name, now + self.ttl_seconds)

    def override(self, model_key: str, kind: Kind, name: str, now: float, seconds: float) -> None:
        """An admin's verdict: treat ``name`` as refused for ``seconds``."""
        CapabilityMemory.remember(self, model_key, kind, name, now)
        self._entries[model_key][kind][name] = now + seconds
        self._queue(model_key, kind, name, now + seconds)

    def forget(self, model_key: str, kind: str, name: str) -> bool:
        """Drop one verdict; True if there was one."""
        names = self._entries.get(model_key, {}).get(kind)
        if not names or name not in names:
            return False
        del names[name]
        self._queue(model_key, kind, name, None)
        return True

    async def load(self, now: float) -> None:
        for key, kind, name, expires in await self._store.run(lambda c: load_verdicts(c, now), readonly=True):
            self._entries.setdefault(key, {}).setdefault(kind, {})[name] = expires

    def _queue(self, key: str, kind: str, name: str, expires: float | None) -> None:
        if len(self._pending) < MAX_PENDING_VERDICTS:
            self._pending.append((key, kind, name, expires))
        self._wake.set()

    async def run_writer(self) -> None:
        """Write queued verdicts as they come; runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await self._store.run(functools.partial(_write_verdicts, verdicts=batch))
            except StoreError as exc:
                logger.warning("capability verdicts not stored: %s", exc)
