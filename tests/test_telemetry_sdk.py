"""ccag.telemetry is built on one OpenTelemetry SDK MeterProvider with two readers."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from opentelemetry.sdk.metrics import (
    MeterProvider,
    ObservableCounter,
    ObservableUpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)

from ccag.telemetry import Telemetry
from ccag.telemetry.recorder import HistogramCell
from tests.otlp_receiver import OtlpReceiver

MODELS = ["claude-sonnet-4-5", "claude-opus-4-1"]
ENDPOINTS = ["us-east-1"]
SDK_INSTRUMENTS = {
    "ccag.requests.total", "ccag.requests.in_flight", "ccag.tokens.input",
    "ccag.tokens.output", "ccag.tokens.cache_read", "ccag.tokens.cache_write",
    "ccag.tool_calls.total", "ccag.web_searches.total", "ccag.errors.total",
    "ccag.bedrock.throttles.total", "ccag.rate_limits.total", "ccag.auth_failures.total",
    "ccag.spend_flush_errors.total", "ccag.spend_records_quarantined.total",
}
HISTOGRAMS = {"ccag.request.duration_ms", "ccag.request.ttft_ms"}


def flatten(data: MetricsData | None) -> dict[tuple[str, frozenset[tuple[str, str]]], Any]:
    """An SDK collection in OtlpReceiver.latest_series() shape."""
    assert data is not None
    series: dict[tuple[str, frozenset[tuple[str, str]]], Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "ccag"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    labels = frozenset((point.attributes or {}).items())
                    if isinstance(point, HistogramDataPoint):
                        value: Any = (
                            tuple(point.bucket_counts), point.sum, point.count,
                            tuple(point.explicit_bounds),
                        )
                    else:
                        value = point.value
                    series[(metric.name, labels)] = value
    return series


def record_once(telemetry: Telemetry) -> None:
    telemetry.request_started()
    telemetry.request_finished("claude-sonnet-4-5", True, 200, 812.5, 95.0)
    telemetry.usage("claude-sonnet-4-5", 120, 30, 4000, 0)
    telemetry.tool_calls(["Bash"])
    telemetry.web_search()
    telemetry.upstream_error("throttled", "us-east-1")
    telemetry.throttle("claude-sonnet-4-5", "us-east-1")
    telemetry.rate_limited()
    telemetry.auth_failure("missing_key")
    telemetry.spend_flush_error()
    telemetry.spend_quarantined(2)


async def test_telemetry_both_readers_belong_to_one_meter_provider() -> None:
    with OtlpReceiver() as receiver:
        # An interval far longer than the test: only the provider can push.
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "3600000"}
        telemetry = Telemetry(environ, MODELS, ENDPOINTS)
        try:
            assert isinstance(telemetry.meter_provider, MeterProvider)
            assert isinstance(telemetry.prometheus_reader, InMemoryMetricReader)
            assert isinstance(telemetry.otlp_reader, PeriodicExportingMetricReader)
            record_once(telemetry)

            # Flushing the provider makes every reader it owns collect: the
            # OTLP one pushes.
            with trio.fail_after(10):
                assert await trio.to_thread.run_sync(telemetry.meter_provider.force_flush)
                await receiver.wait_for_export(1)
            from_prometheus_reader = flatten(telemetry.prometheus_reader.get_metrics_data())
        finally:
            await telemetry.aclose()

        assert receiver.export_count() == 2  # the flush, then the shutdown's last push
        assert receiver.latest_series() == from_prometheus_reader
        assert {name for name, _ in from_prometheus_reader} == SDK_INSTRUMENTS | HISTOGRAMS
        sonnet = frozenset({("model", "claude-sonnet-4-5")})
        assert from_prometheus_reader[("ccag.tokens.cache_read", sonnet)] == 4000
        assert from_prometheus_reader[("ccag.requests.in_flight", frozenset())] == 0
        ttft = from_prometheus_reader[("ccag.request.ttft_ms", sonnet | {("streaming", "true")})]
        assert ttft[1:3] == (95.0, 1)


def test_telemetry_sdk_instruments_are_observable_instruments_of_the_provider() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS)
    meter = telemetry.meter_provider.get_meter("ccag")

    # Asking the provider's meter for an instrument it already has (same
    # name, unit and description) hands back that instrument.
    requests = meter.create_observable_counter(
        "ccag.requests.total", unit="{request}",
        description="Every /v1/messages request, rejected ones included",
    )
    in_flight = meter.create_observable_up_down_counter(
        "ccag.requests.in_flight", unit="{request}",
        description="Requests between arrival and their last response byte",
    )
    telemetry.request_started()
    collected = flatten(telemetry.prometheus_reader.get_metrics_data())

    assert isinstance(requests, ObservableCounter)
    assert isinstance(in_flight, ObservableUpDownCounter)
    # Registering them again added no second callback: one series, value 1.
    assert collected[("ccag.requests.in_flight", frozenset())] == 1


def test_telemetry_thousands_of_tool_names_are_not_folded_by_the_sdk() -> None:
    # The SDK folds a stream past 2,000 attribute sets into
    # otel.metric.overflow unless the reader allows more.
    telemetry = Telemetry({}, MODELS, ENDPOINTS, max_tool_names=3000)
    telemetry.tool_calls([f"tool_{i}" for i in range(2500)])

    text = telemetry.render_prometheus()[0].decode()

    assert "overflow" not in text
    assert text.count("ccag_tool_calls_total{") == 2500


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_telemetry_histogram_read_from_another_thread_is_never_torn(
    frequent_thread_switches: None,
) -> None:
    cell = HistogramCell()
    done = threading.Event()
    torn = []

    def read_until_done() -> None:
        while not done.is_set():
            value = cell.value()
            # Every observation is 2.0: a whole read has sum == 2 * count.
            if value.sum != 2.0 * value.count:
                torn.append(value)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for _ in range(200_000):
            cell.observe(2.0)
    finally:
        done.set()
        reader.join(10)

    assert cell.value().count == 200_000
    assert torn == []
