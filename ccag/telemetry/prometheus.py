"""The Prometheus reader of ccag's MeterProvider and its text exposition.

:class:`PrometheusReader` is a pull reader of the OpenTelemetry SDK: each
scrape makes it collect from the provider (running the observable
instruments' callbacks) and join the histograms
(:class:`~ccag.telemetry.meter.JoinsHistograms`). A prometheus_client
custom collector renders that collection, family by family in
:data:`INSTRUMENTS` order, under the names METRICS.md fixes. Every family is
emitted on every scrape, so ``# HELP`` and ``# TYPE`` lines are there from
the start even before a labelled instrument has a series.

Why not ``opentelemetry-exporter-prometheus``: tested against this
contract, it adds ``otel_scope_*`` labels to every series unless told not
to, leaves out the families of instruments that have no data yet, registers
itself in prometheus_client's global registry, and pins the SDK to one
minor version.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    NumberDataPoint,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from ccag.telemetry.instruments import INSTRUMENTS, Instrument, Kind
from ccag.telemetry.meter import HistogramSource, JoinsHistograms

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus version scrapes."""

DataPoint = NumberDataPoint | HistogramDataPoint


class PrometheusReader(JoinsHistograms, InMemoryMetricReader):
    """The SDK's in-memory pull reader, with the histograms joined.

    Args:
        histograms: the histograms' current values (see
            :func:`~ccag.telemetry.meter.histogram_source`).
        cardinality_limits: per instrument class, passed to the SDK.
    """

    def __init__(
        self, histograms: HistogramSource, cardinality_limits: Mapping[type, int]
    ) -> None:
        self.histograms = histograms
        super().__init__(cardinality_limits=dict(cardinality_limits))


class MetricsDataCollector:
    """A prometheus_client collector: one reader collection per scrape.

    Args:
        reader: the reader to collect through.
    """

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self._reader = reader

    def collect(self) -> Iterator[Metric]:
        points = _points_by_name(self._reader.get_metrics_data())
        for instrument in INSTRUMENTS:
            yield _family(instrument, points.get(instrument.name, []))


def _points_by_name(data: MetricsData | None) -> dict[str, list[DataPoint]]:
    points: dict[str, list[DataPoint]] = {}
    if data is None:
        return points
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(
                    point
                    for point in metric.data.data_points
                    if isinstance(point, NumberDataPoint | HistogramDataPoint)
                )
    return points


def _family(instrument: Instrument, points: list[DataPoint]) -> Metric:
    name = instrument.prometheus_name
    labels = list(instrument.labels)
    if instrument.kind is Kind.COUNTER:
        # prometheus_client appends ``_total`` to the samples itself.
        counter = CounterMetricFamily(name.removesuffix("_total"), instrument.help, labels=labels)
        for point in points:
            assert isinstance(point, NumberDataPoint)
            counter.add_metric(_label_values(instrument, point), point.value)
        return counter
    if instrument.kind is Kind.UP_DOWN_COUNTER:
        gauge = GaugeMetricFamily(name, instrument.help, labels=labels)
        for point in points:
            assert isinstance(point, NumberDataPoint)
            gauge.add_metric(_label_values(instrument, point), point.value)
        return gauge
    histogram = HistogramMetricFamily(name, instrument.help, labels=labels)
    for point in points:
        assert isinstance(point, HistogramDataPoint)
        histogram.add_metric(
            _label_values(instrument, point), _cumulative_buckets(point), point.sum
        )
    return histogram


def _label_values(instrument: Instrument, point: DataPoint) -> list[str]:
    attributes = point.attributes or {}
    return [str(attributes[label]) for label in instrument.labels]


def _cumulative_buckets(point: HistogramDataPoint) -> list[tuple[str, float]]:
    bounds = [floatToGoString(bound) for bound in point.explicit_bounds] + ["+Inf"]
    buckets: list[tuple[str, float]] = []
    running = 0
    for label, count in zip(bounds, point.bucket_counts, strict=True):
        running += count
        buckets.append((label, running))
    return buckets


def open_registry(reader: InMemoryMetricReader) -> CollectorRegistry:
    """A registry of its own (never prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsDataCollector(reader))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition, format version 0.0.4."""
    return generate_latest(registry)
