"""ccag's metrics: one OpenTelemetry SDK MeterProvider with two readers.

``METRICS.md`` is the contract; :mod:`ccag.telemetry.instruments` is its code
side. The request path records into a :class:`Telemetry` (see
:class:`~ccag.telemetry.recorder.Recorder` for the calls and the label
bounding): plain cells, a few dict and attribute operations per request.
The provider (:mod:`ccag.telemetry.meter`) exposes the counters and the
up-down counter as observable instruments over those cells and joins the
two histograms, which ccag aggregates itself, to every collection. Its
readers: :class:`~ccag.telemetry.prometheus.PrometheusReader`, collected on
each ``GET /metrics`` (:meth:`Telemetry.render_prometheus`), and, when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set,
:class:`~ccag.telemetry.otlp.OtlpReader`, which pushes from its own thread.
Both read the same cells, so they always agree.

Usage::

    telemetry = Telemetry(os.environ, catalog.canonical_names(), endpoint_ids)
    ...
    await telemetry.aclose()
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import trio
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource

from ccag.telemetry import meter, prometheus
from ccag.telemetry.instruments import (
    AUTH_FAILURE_REASONS,
    DEFAULT_MAX_TOOL_NAMES,
    DURATION_BUCKETS_MS,
    ERROR_TYPES,
    INSTRUMENTS,
    MAX_RUNTIME_ENDPOINTS,
    OTHER,
    Instrument,
    Kind,
    series_cap,
)
from ccag.telemetry.otlp import (
    DEFAULT_SERVICE_NAME,
    EXPORT_TIMEOUT_S,
    OtlpReader,
    OtlpSettings,
)
from ccag.telemetry.recorder import HistogramValue, Recorder, Snapshot

__all__ = [
    "AUTH_FAILURE_REASONS",
    "DEFAULT_MAX_TOOL_NAMES",
    "DURATION_BUCKETS_MS",
    "ERROR_TYPES",
    "INSTRUMENTS",
    "MAX_RUNTIME_ENDPOINTS",
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
    """The instruments of one ccag process and the readers that expose them.

    Args:
        environ: the environment to read ``OTEL_*`` settings from.
        canonical_models: model names kept as ``model`` label values.
        endpoint_ids: configured Bedrock endpoint ids.
        max_tool_names: distinct tool names kept before new ones are
            ``other``.

    Raises:
        ConfigError: an ``OTEL_*`` setting is invalid.

    Attributes:
        meter_provider: the SDK MeterProvider owning the instruments.
        prometheus_reader: its pull reader, behind ``GET /metrics``.
        otlp_reader: its push reader, or ``None`` when OTLP is off.

    Record from the Trio thread only: the cells are not locked (readers on
    other threads only read them).
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        canonical_models: Iterable[str],
        endpoint_ids: Iterable[str],
        max_tool_names: int = DEFAULT_MAX_TOOL_NAMES,
    ) -> None:
        models = list(canonical_models)
        endpoints = list(endpoint_ids)
        super().__init__(models, endpoints, max_tool_names)
        settings = OtlpSettings.from_environ(environ)

        # The readers: every series the label bounding allows fits under
        # the SDK's cardinality limit.
        limits = meter.cardinality_limits(series_cap(len(models), len(endpoints), max_tool_names))
        histograms = meter.histogram_source(self, time.time_ns())
        service_name = settings.service_name if settings is not None else DEFAULT_SERVICE_NAME
        resource = Resource.create({"service.name": service_name})
        self.prometheus_reader = prometheus.PrometheusReader(histograms, limits)
        readers: list[MetricReader] = [self.prometheus_reader]
        self.otlp_reader = None
        if settings is not None:
            self.otlp_reader = OtlpReader(settings, histograms, limits)
            readers.append(self.otlp_reader)

        self.meter_provider = meter.open_meter_provider(self, readers, resource)
        self._registry = prometheus.open_registry(self.prometheus_reader)
        self._push_lock = trio.Lock()
        self._closed = False

    @property
    def otlp_settings(self) -> OtlpSettings | None:
        """The OTLP settings, or ``None`` when OTLP is off."""
        return self.otlp_reader.exporter.settings if self.otlp_reader is not None else None

    def render_prometheus(self) -> tuple[bytes, str]:
        """The ``/metrics`` body and its content type."""
        return prometheus.render(self._registry), prometheus.CONTENT_TYPE

    async def run_otlp_export(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Returns at once (after ``task_status.started()``).

        The OTLP reader's own thread pushes every interval from the moment
        the Telemetry is built; :meth:`aclose` makes the last push. Kept so
        a nursery can start it like the gateway's other services.
        """
        task_status.started()

    async def export_otlp(self) -> bool:
        """Push the current values now; True when the collector took them.

        The collection and the gRPC call run in a worker thread, abandoned
        (not waited for) if cancelled.
        """
        if self.otlp_reader is None or self._closed:
            return False
        async with self._push_lock:
            return await trio.to_thread.run_sync(self.otlp_reader.push_now, abandon_on_cancel=True)

    async def aclose(self) -> None:
        """Shut the provider down: the OTLP reader makes its last push
        (bounded by :data:`FINAL_EXPORT_TIMEOUT_S`) and closes its channel.
        Calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self.otlp_reader is None:
            self.meter_provider.shutdown()
            return
        with trio.CancelScope(shield=True):
            # The SDK bounds its own shutdown by the timeout; the extra
            # second covers the exporter closing its channel after it.
            with trio.move_on_after(FINAL_EXPORT_TIMEOUT_S + 1.0):
                await trio.to_thread.run_sync(
                    self._shutdown_provider, FINAL_EXPORT_TIMEOUT_S, abandon_on_cancel=True
                )

    def shutdown(self) -> None:
        """Blocking form of :meth:`aclose`, for callers outside Trio.

        The last push may block for up to the export timeout (at most
        :data:`~ccag.telemetry.otlp.EXPORT_TIMEOUT_S`); inside Trio prefer
        ``await aclose()``, which bounds it by :data:`FINAL_EXPORT_TIMEOUT_S`.
        """
        if self._closed:
            return
        self._closed = True
        self._shutdown_provider(EXPORT_TIMEOUT_S)

    def _shutdown_provider(self, timeout_s: float) -> None:
        self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
