"""OTLP push to a real gRPC receiver on loopback: same instruments, same values."""

from __future__ import annotations

import logging
import socket
import time

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ccag.telemetry import Telemetry
from tests.otlp_receiver import OtlpReceiver

MODELS = ["claude-sonnet-4-5", "claude-opus-4-1"]
ENDPOINTS = ["us-east-1"]
OTLP_LOGGER = "ccag.telemetry.otlp"


def environ_for(endpoint: str, interval_ms: int = 100) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=team-a",
        "OTEL_SERVICE_NAME": "ccag-test",
    }


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record_traffic(telemetry: Telemetry) -> None:
    for i in range(3):
        telemetry.request_started()
        telemetry.request_finished("claude-sonnet-4-5", True, 200, 700.0 + i, 90.0)
        telemetry.usage("claude-sonnet-4-5", 10, 5, 100, 1)
    telemetry.request_started()
    telemetry.request_started()
    telemetry.request_finished("mystery-model", False, 529, 12.5, None)
    telemetry.tool_calls(["Bash", "mcp__fs__read", "Bash"])
    telemetry.web_search(2)
    telemetry.upstream_error("model_not_ready", "us-east-1")
    telemetry.throttle("claude-opus-4-1", "us-east-1")
    telemetry.rate_limited()
    telemetry.auth_failure("not_admin")
    telemetry.spend_flush_error()
    telemetry.spend_quarantined(3)


def prometheus_series(telemetry: Telemetry) -> dict[tuple[str, frozenset[tuple[str, str]]], object]:
    """The exposition reshaped like OtlpReceiver.latest_series()."""
    body, _ = telemetry.render_prometheus()
    series: dict[tuple[str, frozenset[tuple[str, str]]], object] = {}
    for family in text_string_to_metric_families(body.decode()):
        by_labels: dict[frozenset[tuple[str, str]], dict[str, object]] = {}
        for sample in family.samples:
            labels = dict(sample.labels)
            le = labels.pop("le", None)
            entry = by_labels.setdefault(frozenset(labels.items()), {"buckets": []})
            if family.type == "histogram":
                if sample.name.endswith("_bucket"):
                    entry["buckets"].append((le, sample.value))  # type: ignore[union-attr]
                else:
                    entry[sample.name.rsplit("_", 1)[1]] = sample.value
            else:
                entry["value"] = sample.value
        # OTLP names are METRICS.md's dotted names.
        name = family.name.replace("_", ".")
        for labels, entry in by_labels.items():
            if family.type == "histogram":
                cumulative = [count for _, count in entry["buckets"]]  # type: ignore[union-attr]
                per_bucket = tuple(
                    int(count - previous) for count, previous in zip(cumulative, [0.0] + cumulative)
                )
                bounds = tuple(float(le) for le, _ in entry["buckets"][:-1])  # type: ignore[index]
                series[(name, labels)] = (per_bucket, entry["sum"], int(entry["count"]), bounds)  # type: ignore[call-overload]
            else:
                series[(name, labels)] = entry["value"]
    return series


# prometheus_client's parser strips _total from counter families, and the
# dotted OTLP names cannot be recovered from underscores, so map explicitly.
PROMETHEUS_TO_OTLP = {
    "ccag.requests": "ccag.requests.total",
    "ccag.request.duration.ms": "ccag.request.duration_ms",
    "ccag.request.ttft.ms": "ccag.request.ttft_ms",
    "ccag.requests.in.flight": "ccag.requests.in_flight",
    "ccag.tokens.input": "ccag.tokens.input",
    "ccag.tokens.output": "ccag.tokens.output",
    "ccag.tokens.cache.read": "ccag.tokens.cache_read",
    "ccag.tokens.cache.write": "ccag.tokens.cache_write",
    "ccag.tool.calls": "ccag.tool_calls.total",
    "ccag.web.searches": "ccag.web_searches.total",
    "ccag.errors": "ccag.errors.total",
    "ccag.bedrock.throttles": "ccag.bedrock.throttles.total",
    "ccag.rate.limits": "ccag.rate_limits.total",
    "ccag.auth.failures": "ccag.auth_failures.total",
    "ccag.spend.flush.errors": "ccag.spend_flush_errors.total",
    "ccag.spend.records.quarantined": "ccag.spend_records_quarantined.total",
}


async def test_otlp_push_carries_the_same_values_as_prometheus() -> None:
    with OtlpReceiver() as receiver:
        telemetry = Telemetry(environ_for(receiver.endpoint), MODELS, ENDPOINTS)
        record_traffic(telemetry)
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                await nursery.start(telemetry.run_otlp_export)
                await receiver.wait_for_export(count=2)
                nursery.cancel_scope.cancel()
            await telemetry.aclose()

        from_prometheus = {
            (PROMETHEUS_TO_OTLP[name], labels): value
            for (name, labels), value in prometheus_series(telemetry).items()
        }
        assert receiver.latest_series() == from_prometheus
        assert len(from_prometheus) == 19
        assert receiver.latest_metric_kinds() == {
            name: ("histogram", None) if name.endswith("_ms")
            else ("sum", name != "ccag.requests.in_flight")
            for name in PROMETHEUS_TO_OTLP.values()
        }
        assert receiver.latest_resource()["service.name"] == "ccag-test"
        assert ("x-tenant", "team-a") in receiver.metadata[-1]


async def test_otlp_aclose_pushes_the_final_values() -> None:
    with OtlpReceiver() as receiver:
        # An interval far longer than the test: only aclose can push.
        telemetry = Telemetry(environ_for(receiver.endpoint, 3_600_000), MODELS, ENDPOINTS)
        telemetry.rate_limited()
        with trio.fail_after(10):
            await telemetry.aclose()

        assert receiver.export_count() == 1
        key = ("ccag.rate_limits.total", frozenset())
        assert receiver.latest_series()[key] == 1


async def test_otlp_collector_down_is_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = closed_loopback_port()
    telemetry = Telemetry(environ_for(f"http://127.0.0.1:{port}", 50), MODELS, ENDPOINTS)
    try:
        with trio.fail_after(20):
            # Episode 1: the collector is down for several exports.
            for _ in range(4):
                assert await telemetry.export_otlp() is False
            # It comes up: one recovery line.
            with OtlpReceiver(port) as receiver:
                while not await telemetry.export_otlp():
                    await trio.sleep(0.1)
                assert receiver.export_count() >= 1
            # Episode 2: down again, one more warning.
            for _ in range(3):
                assert await telemetry.export_otlp() is False
    finally:
        await telemetry.aclose()

    ours = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == OTLP_LOGGER]
    assert [level for level, _ in ours] == ["WARNING", "INFO", "WARNING"]
    assert f"127.0.0.1:{port}" in ours[0][1]
    # The SDK exporter's own per-attempt lines are silenced.
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING]


async def test_otlp_collector_down_costs_recording_nothing() -> None:
    port = closed_loopback_port()
    telemetry = Telemetry(environ_for(f"http://127.0.0.1:{port}", 20), MODELS, ENDPOINTS)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(telemetry.run_otlp_export)
            worst = 0.0
            for _ in range(20):
                started = time.perf_counter()
                for _ in range(1000):
                    telemetry.request_started()
                    telemetry.request_finished("claude-sonnet-4-5", True, 200, 100.0, 10.0)
                elapsed = time.perf_counter() - started
                worst = max(worst, elapsed)
                await trio.sleep(0.03)
            nursery.cancel_scope.cancel()
        await telemetry.aclose()

    # 1,000 recordings take about a millisecond; a blocking export would
    # show as a slice of tens of milliseconds or more.
    assert worst < 0.05
