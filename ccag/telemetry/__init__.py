"""ccag's metrics: one set of instruments, seen through Prometheus and OTLP.

``METRICS.md`` is the contract; :mod:`ccag.telemetry.instruments` is its code
side. The request path records into a :class:`Telemetry` (see
:class:`~ccag.telemetry.recorder.Recorder` for the calls and the label
bounding); ``GET /metrics`` renders it (:meth:`Telemetry.render_prometheus`)
and, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set,
:meth:`Telemetry.run_otlp_export` pushes the same values to a collector.
Both channels read the same cells, so they always agree.

Usage::

    telemetry = Telemetry(os.environ, catalog.canonical_names(), endpoint_ids)
    async with trio.open_nursery() as nursery:
        await nursery.start(telemetry.run_otlp_export)
        ...
    await telemetry.aclose()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import trio

from ccag.telemetry import prometheus
from ccag.telemetry.instruments import (
    AUTH_FAILURE_REASONS,
    DEFAULT_MAX_TOOL_NAMES,
    DURATION_BUCKETS_MS,
    ERROR_TYPES,
    INSTRUMENTS,
    OTHER,
    Instrument,
    Kind,
    series_cap,
)
from ccag.telemetry.otlp import OtlpPusher, OtlpSettings
from ccag.telemetry.recorder import HistogramValue, Recorder, Snapshot

__all__ = [
    "AUTH_FAILURE_REASONS",
    "DEFAULT_MAX_TOOL_NAMES",
    "DURATION_BUCKETS_MS",
    "ERROR_TYPES",
    "INSTRUMENTS",
    "OTHER",
    "HistogramValue",
    "Instrument",
    "Kind",
    "Snapshot",
    "Telemetry",
    "series_cap",
]

FINAL_EXPORT_TIMEOUT_S = 5.0
"""How long shutdown waits for the last OTLP push: a dead collector must
not hold up a SIGTERM, a live one answers in milliseconds."""


class Telemetry(Recorder):
    """The instruments of one ccag process and the channels that expose them.

    Args:
        environ: the environment to read ``OTEL_*`` settings from.
        canonical_models: model names kept as ``model`` label values.
        endpoint_ids: configured Bedrock endpoint ids.
        max_tool_names: distinct tool names kept before new ones are
            ``other``.

    Raises:
        ConfigError: an ``OTEL_*`` setting is invalid.

    Record from the Trio thread only: the cells are not locked.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        canonical_models: Iterable[str],
        endpoint_ids: Iterable[str],
        max_tool_names: int = DEFAULT_MAX_TOOL_NAMES,
    ) -> None:
        super().__init__(canonical_models, endpoint_ids, max_tool_names)
        self._registry = prometheus.open_registry(self.snapshot)
        settings = OtlpSettings.from_environ(environ)
        self._pusher = OtlpPusher(settings) if settings is not None else None
        self._push_lock = trio.Lock()
        self._closed = False

    @property
    def otlp_settings(self) -> OtlpSettings | None:
        """The OTLP settings, or ``None`` when OTLP is off."""
        return self._pusher.settings if self._pusher is not None else None

    def render_prometheus(self) -> tuple[bytes, str]:
        """The ``/metrics`` body and its content type."""
        return prometheus.render(self._registry), prometheus.CONTENT_TYPE

    async def run_otlp_export(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Push to the collector every interval until cancelled.

        Returns at once (after ``task_status.started()``) when OTLP is off.
        The last push is made by :meth:`aclose`.
        """
        task_status.started()
        if self._pusher is None:
            return
        while True:
            await trio.sleep(self._pusher.settings.interval_s)
            await self.export_otlp()

    async def export_otlp(self) -> bool:
        """Push the current values now; True when the collector took them.

        The snapshot is taken here, on the Trio thread; the gRPC call runs in
        a worker thread and is abandoned (not waited for) if cancelled.
        """
        if self._pusher is None or self._closed:
            return False
        async with self._push_lock:
            snapshot = self.snapshot()
            return await trio.to_thread.run_sync(
                self._pusher.push, snapshot, abandon_on_cancel=True
            )

    async def aclose(self) -> None:
        """Push the final values (bounded by :data:`FINAL_EXPORT_TIMEOUT_S`)
        and close the OTLP channel. Calling it twice is harmless."""
        if self._pusher is None or self._closed:
            self._closed = True
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(FINAL_EXPORT_TIMEOUT_S):
                await self.export_otlp()
            self._closed = True
            with trio.move_on_after(FINAL_EXPORT_TIMEOUT_S):
                await trio.to_thread.run_sync(self._pusher.close, abandon_on_cancel=True)

    def shutdown(self) -> None:
        """Blocking form of :meth:`aclose`, for callers outside Trio.

        The last push may block for up to the export timeout (at most
        :data:`~ccag.telemetry.otlp.EXPORT_TIMEOUT_S`); inside Trio prefer
        ``await aclose()``, which bounds it by :data:`FINAL_EXPORT_TIMEOUT_S`.
        """
        if self._pusher is None or self._closed:
            self._closed = True
            return
        self._closed = True
        self._pusher.push(self.snapshot())
        self._pusher.close()
