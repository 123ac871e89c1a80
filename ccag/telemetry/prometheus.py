"""The Prometheus text exposition of a :class:`~ccag.telemetry.recorder.Recorder`.

A prometheus_client custom collector turns one snapshot into metric
families; prometheus_client writes the text. Every family is emitted on
every scrape, so ``# HELP`` and ``# TYPE`` lines are there from the start
even before a labelled instrument has a series.

Why not ``opentelemetry-exporter-prometheus``: tested against this
contract, it adds ``otel_scope_*`` labels to every series unless told not
to, leaves out the families of instruments that have no data yet, registers
itself in prometheus_client's global registry, and pins the SDK to one
minor version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from ccag.telemetry.instruments import DURATION_BUCKETS_MS, Kind
from ccag.telemetry.recorder import HistogramValue, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus version scrapes."""

_BUCKET_LABELS = tuple(floatToGoString(bound) for bound in DURATION_BUCKETS_MS) + ("+Inf",)


class SnapshotCollector:
    """A prometheus_client collector reading a fresh snapshot per scrape.

    Args:
        take_snapshot: returns the current values of every instrument.
    """

    def __init__(self, take_snapshot: Callable[[], Snapshot]) -> None:
        self._take_snapshot = take_snapshot

    def collect(self) -> Iterator[Metric]:
        for instrument, series in self._take_snapshot():
            name = instrument.prometheus_name
            labels = list(instrument.labels)
            if instrument.kind is Kind.COUNTER:
                # prometheus_client appends ``_total`` to the samples itself.
                counter = CounterMetricFamily(
                    name.removesuffix("_total"), instrument.help, labels=labels
                )
                for values, number in series:
                    assert not isinstance(number, HistogramValue)
                    counter.add_metric(list(values), number)
                yield counter
            elif instrument.kind is Kind.UP_DOWN_COUNTER:
                gauge = GaugeMetricFamily(name, instrument.help, labels=labels)
                for values, number in series:
                    assert not isinstance(number, HistogramValue)
                    gauge.add_metric(list(values), number)
                yield gauge
            else:
                histogram = HistogramMetricFamily(name, instrument.help, labels=labels)
                for values, value in series:
                    assert isinstance(value, HistogramValue)
                    histogram.add_metric(
                        list(values), _cumulative_buckets(value), value.sum
                    )
                yield histogram


def _cumulative_buckets(value: HistogramValue) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for label, count in zip(_BUCKET_LABELS, value.bucket_counts):
        running += count
        buckets.append((label, running))
    return buckets


def open_registry(take_snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry of its own (never prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(take_snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition, format version 0.0.4."""
    return generate_latest(registry)
