"""The OpenTelemetry SDK MeterProvider that owns ccag's instruments.

Theory of operation: one ``MeterProvider`` (meter ``ccag``) holds the
fourteen counters and the up-down counter of :data:`INSTRUMENTS` as the
SDK's observable instruments. Their callbacks read the
:class:`~ccag.telemetry.recorder.Recorder`'s cells, so the request path
only does dict and attribute arithmetic, and every reader of the provider
(Prometheus, OTLP) collects them through the SDK.

The two histograms are the exception: the SDK's synchronous
``Histogram.record`` costs about 10-20 microseconds per call with two
readers (it cleans and hashes the attributes once per reader; measured in
``perf/bench_telemetry.py``), several times the whole request path, and the
SDK has no asynchronous histogram nor, in Python, a ``MetricProducer`` for
values aggregated elsewhere. So ccag aggregates them in its cells, with the
:data:`DURATION_BUCKETS_MS` bounds, and every reader joins them to its
collection as the SDK's own ``Histogram`` data (:class:`JoinsHistograms`,
at the ``_receive_metrics`` hook the SDK documents for reader subclasses).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    MeterProvider,
    ObservableCounter,
    ObservableUpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ccag.telemetry import instruments as ins
from ccag.telemetry.instruments import DURATION_BUCKETS_MS, Instrument, Kind
from ccag.telemetry.recorder import HistogramValue, Recorder

METER_NAME = "ccag"
"""The instrumentation scope of every instrument."""

HISTOGRAMS: tuple[Instrument, ...] = tuple(
    instrument for instrument in ins.INSTRUMENTS if instrument.kind is Kind.HISTOGRAM
)
"""The instruments aggregated in ccag's cells rather than by the SDK."""

HistogramSource = Callable[[], Sequence[Metric]]


def open_meter_provider(
    recorder: Recorder, readers: Sequence[MetricReader], resource: Resource
) -> MeterProvider:
    """A MeterProvider with ``readers`` and an observable instrument for
    every counter and up-down counter of :data:`INSTRUMENTS`.

    The caller shuts it down (no ``atexit`` hook: ccag closes its telemetry
    itself, and tests open many).
    """
    provider = MeterProvider(
        metric_readers=readers,
        resource=resource,
        # Exemplars need sampled traces, which ccag does not make.
        exemplar_filter=AlwaysOffExemplarFilter(),
        shutdown_on_exit=False,
    )
    meter = provider.get_meter(METER_NAME)
    for instrument in ins.INSTRUMENTS:
        if instrument.kind is Kind.HISTOGRAM:
            continue
        create = (
            meter.create_observable_counter
            if instrument.kind is Kind.COUNTER
            else meter.create_observable_up_down_counter
        )
        create(
            instrument.name,
            callbacks=[_observe(recorder, instrument)],
            unit=instrument.unit,
            description=instrument.help,
        )
    return provider


def _observe(
    recorder: Recorder, instrument: Instrument
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    names = instrument.labels

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for labels, value in recorder.read(instrument):
            assert not isinstance(value, HistogramValue)
            observations.append(Observation(value, dict(zip(names, labels, strict=True))))
        return observations

    return callback


def cardinality_limits(cap: int) -> dict[type, int]:
    """Per-reader limits high enough that the SDK never folds a series into
    ``otel.metric.overflow``: ccag's own label bounding keeps every
    instrument under ``cap`` (see :func:`~ccag.telemetry.instruments.series_cap`)."""
    return {ObservableCounter: cap, ObservableUpDownCounter: cap}


def histogram_source(recorder: Recorder, start_ns: int) -> HistogramSource:
    """The histograms' current values as the SDK's cumulative ``Histogram``
    data, since ``start_ns``."""

    def metrics() -> list[Metric]:
        now_ns = time.time_ns()
        found = []
        for instrument in HISTOGRAMS:
            points = [
                _histogram_point(dict(zip(instrument.labels, labels)), value, start_ns, now_ns)
                for labels, value in recorder.read(instrument)
            ]
            if not points:
                continue
            data = Histogram(
                data_points=points,
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            )
            found.append(Metric(instrument.name, instrument.help, instrument.unit, data))
        return found

    return metrics


def _histogram_point(
    attributes: dict[str, str], value: Any, start_ns: int, now_ns: int
) -> HistogramDataPoint:
    assert isinstance(value, HistogramValue)
    return HistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start_ns,
        time_unix_nano=now_ns,
        count=value.count,
        sum=value.sum,
        bucket_counts=value.bucket_counts,
        explicit_bounds=DURATION_BUCKETS_MS,
        min=value.min,
        max=value.max,
    )


def join_histograms(data: MetricsData, histograms: Sequence[Metric]) -> MetricsData:
    """``data`` with ``histograms`` added to the ``ccag`` scope."""
    if not histograms:
        return data
    resource_metrics = []
    for resource in data.resource_metrics:
        scopes = list(resource.scope_metrics)
        for index, scope in enumerate(scopes):
            if scope.scope.name == METER_NAME:
                scopes[index] = ScopeMetrics(
                    scope.scope, [*scope.metrics, *histograms], scope.schema_url
                )
                break
        else:
            scopes.append(
                ScopeMetrics(InstrumentationScope(METER_NAME), list(histograms), "")
            )
        resource_metrics.append(ResourceMetrics(resource.resource, scopes, resource.schema_url))
    return MetricsData(resource_metrics=resource_metrics)


class JoinsHistograms:
    """Mixin for a ``MetricReader``: each collection it receives gets the
    histograms joined before the reader handles it.

    Set ``self.histograms`` before the reader's own ``__init__`` runs (a
    periodic reader may collect from its thread right away).
    """

    histograms: HistogramSource

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        joined = join_histograms(metrics_data, self.histograms())
        super()._receive_metrics(joined, timeout_millis=timeout_millis, **kwargs)  # type: ignore[misc]
