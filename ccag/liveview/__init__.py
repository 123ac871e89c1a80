"""The live view: a page served by ccag that shows its traffic as it happens.

``GET /ui`` is the page (``ccag/static``), ``GET /ui/ws`` its WebSocket. The
request path feeds :meth:`LiveHub.record` (a Services sink); see
:mod:`ccag.liveview.hub` for how viewers are fed without slowing requests.
"""

from __future__ import annotations

from typing import Any

from ccag.liveview.hub import LiveHub
from ccag.liveview.page import ASSET_PREFIX, StaticPages
from ccag.liveview.socket import LiveSocket
from ccag.liveview.spend import SpendView, facts_pricer, system_pricer
from ccag.telemetry.instruments import IN_FLIGHT

__all__ = ["LiveHub", "register_liveview"]


def register_liveview(router: Any, services: Any, sessions: Any) -> LiveHub:
    """Add ``/ui``, ``/ui/<asset>`` and ``/ui/ws`` to ``router``.

    Returns:
        The hub; add its ``record`` to ``services.sinks`` to feed it.
    """
    spend = services.spend
    price = system_pricer(spend) if spend is not None else facts_pricer()
    hub = LiveHub(price, in_flight=lambda: in_flight(services.telemetry))
    pages = StaticPages()
    router.add("GET", "/ui", pages.index)
    router.add_prefix("GET", ASSET_PREFIX, pages.asset)
    router.add("GET", "/ui/ws", LiveSocket(hub, SpendView(hub, spend), sessions.authenticate))
    return hub


def in_flight(telemetry: Any) -> int | None:
    """Requests in flight now, from the telemetry snapshot."""
    for instrument, series in telemetry.snapshot():
        if instrument is IN_FLIGHT and series:
            return int(series[0][1])  # type: ignore[arg-type]
    return None
