"""Pushing the instruments to an OpenTelemetry collector over gRPC.

The settings come from the standard ``OTEL_*`` variables of the environment
ccag was handed. Each export turns a snapshot into the SDK's metrics data
model (cumulative temporality, as Prometheus sees it too) and hands it to
the SDK's OTLP gRPC exporter in a worker thread, so a collector that is
down, slow or refusing costs the request path nothing; each export is
bounded by :data:`EXPORT_TIMEOUT_S` (or the interval, if shorter).

A collector that stays down would otherwise log on every attempt: the
exporter here logs the first failure of an episode as a WARNING, stays
quiet until an export succeeds, then logs the recovery at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from urllib.parse import urlparse

import attrs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.re import parse_env_headers

from ccag.errors import ConfigError
from ccag.telemetry.instruments import DURATION_BUCKETS_MS, Kind
from ccag.telemetry.recorder import HistogramValue, Snapshot

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_MS = 60_000
"""The OpenTelemetry default for ``OTEL_METRIC_EXPORT_INTERVAL``."""

EXPORT_TIMEOUT_S = 10.0
"""Longest one export may take, retries included: long enough for a busy
collector, short enough that a dead one does not hold the exporter thread
for most of an interval."""

DEFAULT_SERVICE_NAME = "ccag"

_SDK_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
_SCOPE = InstrumentationScope("ccag")


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


def metrics_data(
    snapshot: Snapshot, resource: Resource, start_ns: int, now_ns: int
) -> MetricsData:
    """One snapshot in the SDK's data model, cumulative since ``start_ns``."""
    cumulative = AggregationTemporality.CUMULATIVE
    metrics = []
    for instrument, series in snapshot:
        if not series:
            continue
        data: Sum | Histogram
        if instrument.kind is Kind.HISTOGRAM:
            histogram_points = []
            for labels, value in series:
                assert isinstance(value, HistogramValue)
                histogram_points.append(
                    HistogramDataPoint(
                        attributes=dict(zip(instrument.labels, labels)),
                        start_time_unix_nano=start_ns,
                        time_unix_nano=now_ns,
                        count=value.count,
                        sum=value.sum,
                        bucket_counts=value.bucket_counts,
                        explicit_bounds=DURATION_BUCKETS_MS,
                        min=value.min,
                        max=value.max,
                    )
                )
            data = Histogram(data_points=histogram_points, aggregation_temporality=cumulative)
        else:
            number_points = []
            for labels, number in series:
                assert not isinstance(number, HistogramValue)
                number_points.append(
                    NumberDataPoint(
                        attributes=dict(zip(instrument.labels, labels)),
                        start_time_unix_nano=start_ns,
                        time_unix_nano=now_ns,
                        value=number,
                    )
                )
            data = Sum(
                data_points=number_points,
                aggregation_temporality=cumulative,
                is_monotonic=instrument.kind is Kind.COUNTER,
            )
        metrics.append(Metric(instrument.name, instrument.help, instrument.unit, data))

    scope_metrics = ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url="")
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=[scope_metrics], schema_url="")
        ]
    )


class _OnlyCritical(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


_ONLY_CRITICAL = _OnlyCritical()


class OtlpPusher:
    """The SDK's OTLP gRPC exporter, logging failures once per episode.

    Args:
        settings: endpoint, headers, interval and service name.

    :meth:`push` blocks for up to ``settings.export_timeout_s``: call it
    from a worker thread.
    """

    def __init__(self, settings: OtlpSettings) -> None:
        self.settings = settings
        self.resource = Resource.create({"service.name": settings.service_name})
        self.start_ns = time.time_ns()
        self.is_failing = False

        # The SDK exporter logs every failed attempt (and each retry); the
        # episode log below replaces that.
        logging.getLogger(_SDK_EXPORTER_LOGGER).addFilter(_ONLY_CRITICAL)
        self._exporter = OTLPMetricExporter(
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            headers=dict(settings.headers),
            timeout=settings.export_timeout_s,
        )

    def push(self, snapshot: Snapshot) -> bool:
        """Export one snapshot; True when the collector took it."""
        data = metrics_data(snapshot, self.resource, self.start_ns, time.time_ns())
        try:
            result = self._exporter.export(data)
            error = None
            if result is not MetricExportResult.SUCCESS:
                error = "the collector refused it or could not be reached"
        except Exception as exc:  # noqa: BLE001 - foreign exporter code; no failure may escape
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
        return error is None

    def close(self) -> None:
        """Stop retries in progress and close the gRPC channel."""
        self._exporter.shutdown(timeout_millis=self.settings.export_timeout_s * 1000)
