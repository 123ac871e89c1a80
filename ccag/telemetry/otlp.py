"""The OTLP reader of ccag's MeterProvider: a push over gRPC.

The settings come from the standard ``OTEL_*`` variables of the environment
ccag was handed. :class:`OtlpReader` is the SDK's
``PeriodicExportingMetricReader``: its own thread collects from the
provider every interval (cumulative temporality, as Prometheus sees it
too), joins the histograms and hands the collection to the SDK's
``OTLPMetricExporter``. A collector that is down, slow or refusing holds up
that thread only, never a request; each export is bounded by
:data:`EXPORT_TIMEOUT_S` (or the interval, if shorter).

A collector that stays down would otherwise log on every attempt:
:class:`EpisodeLoggingExporter` logs the first failure of an episode as a
WARNING, stays quiet until an export succeeds, then logs the recovery at
INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import attrs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.util.re import parse_env_headers

from ccag.errors import ConfigError
from ccag.telemetry.meter import HistogramSource, JoinsHistograms

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_MS = 60_000
"""The OpenTelemetry default for ``OTEL_METRIC_EXPORT_INTERVAL``."""

EXPORT_TIMEOUT_S = 10.0
"""Longest one export may take, retries included: long enough for a busy
collector, short enough that a dead one does not hold the exporter thread
for most of an interval."""

DEFAULT_SERVICE_NAME = "ccag"

CUMULATIVE: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (
        Counter, UpDownCounter, Histogram,
        ObservableCounter, ObservableUpDownCounter, ObservableGauge,
    )
}
"""Every instrument cumulative, whatever
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` says: the histograms
ccag joins are cumulative, and one push must not mix temporalities."""

_SDK_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"


@attrs.frozen
class OtlpSettings:
    """Where and how often to push.

    Attributes:
        endpoint: the collector's gRPC URL, such as ``http://collector:4317``.
        insecure: plain-text gRPC (an ``http://`` endpoint, or
            ``OTEL_EXPORTER_OTLP_INSECURE=true``).
        headers: extra gRPC metadata (``OTEL_EXPORTER_OTLP_HEADERS``).
        interval_s: seconds between exports.
        service_name: the ``service.name`` resource attribute.
    """

    endpoint: str
    insecure: bool
    headers: tuple[tuple[str, str], ...]
    interval_s: float
    service_name: str

    @property
    def export_timeout_s(self) -> float:
        return min(EXPORT_TIMEOUT_S, self.interval_s)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> OtlpSettings | None:
        """The settings, or ``None`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is unset.

        Raises:
            ConfigError: the interval is not a positive number of milliseconds.
        """
        endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not endpoint:
            return None

        raw_interval = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
        try:
            interval_ms = float(raw_interval) if raw_interval else DEFAULT_INTERVAL_MS
        except ValueError:
            interval_ms = -1.0
        if not interval_ms > 0:
            raise ConfigError(
                f"OTEL_METRIC_EXPORT_INTERVAL: {raw_interval!r} is not a positive "
                "number of milliseconds"
            )

        headers = parse_env_headers(environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""), liberal=True)
        insecure = (
            urlparse(endpoint).scheme == "http"
            or environ.get("OTEL_EXPORTER_OTLP_INSECURE", "").strip().lower() == "true"
        )
        return cls(
            endpoint=endpoint,
            insecure=insecure,
            headers=tuple(headers.items()),
            interval_s=interval_ms / 1000.0,
            service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME,
        )


class _OnlyCritical(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


_ONLY_CRITICAL = _OnlyCritical()


class EpisodeLoggingExporter(MetricExporter):
    """The SDK's OTLP gRPC exporter, logging failures once per episode.

    Args:
        settings: endpoint, headers, interval.

    :meth:`export` blocks for up to ``settings.export_timeout_s``; the
    reader calls it from its own thread.
    """

    def __init__(self, settings: OtlpSettings) -> None:
        super().__init__(preferred_temporality=CUMULATIVE)
        self.settings = settings
        self.is_failing = False
        self.last_succeeded = False

        # The SDK exporter logs every failed attempt (and each retry); the
        # episode log below replaces that.
        logging.getLogger(_SDK_EXPORTER_LOGGER).addFilter(_ONLY_CRITICAL)
        self._exporter = OTLPMetricExporter(
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            headers=dict(settings.headers),
            timeout=settings.export_timeout_s,
            preferred_temporality=CUMULATIVE,
        )

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self._exporter.export(metrics_data, timeout_millis=timeout_millis)
            error = None
            if result is not MetricExportResult.SUCCESS:
                error = "the collector refused it or could not be reached"
        except Exception as exc:  # noqa: BLE001 - foreign exporter code; no failure may escape
            result = MetricExportResult.FAILURE
            error = f"{type(exc).__name__}: {exc}"

        if error is not None and not self.is_failing:
            self.is_failing = True
            logger.warning(
                "OTLP metrics export to %s failed (%s); retrying every %gs, "
                "logging again when it recovers",
                self.settings.endpoint, error, self.settings.interval_s,
            )
        elif error is None and self.is_failing:
            self.is_failing = False
            logger.info("OTLP metrics export to %s recovered", self.settings.endpoint)
        self.last_succeeded = error is None
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Stop retries in progress and close the gRPC channel."""
        self._exporter.shutdown(timeout_millis=timeout_millis)


class OtlpReader(JoinsHistograms, PeriodicExportingMetricReader):
    """The SDK's periodic push reader, with the histograms joined.

    Args:
        settings: endpoint, headers, interval.
        histograms: the histograms' current values (see
            :func:`~ccag.telemetry.meter.histogram_source`).
        cardinality_limits: per instrument class, passed to the SDK.

    Its thread starts here and ends with the provider's ``shutdown``, which
    makes one last push.
    """

    def __init__(
        self,
        settings: OtlpSettings,
        histograms: HistogramSource,
        cardinality_limits: Mapping[type, int],
    ) -> None:
        self.histograms = histograms
        self.exporter = EpisodeLoggingExporter(settings)
        interval_ms = settings.interval_s * 1000
        super().__init__(
            self.exporter,
            export_interval_millis=interval_ms,
            export_timeout_millis=settings.export_timeout_s * 1000,
            cardinality_limits=dict(cardinality_limits),
        )

    def push_now(self) -> bool:
        """Collect and export now, blocking; True when the collector took it."""
        self.collect(timeout_millis=self.exporter.settings.export_timeout_s * 1000)
        return self.exporter.last_succeeded
