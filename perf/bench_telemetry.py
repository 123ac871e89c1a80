"""Telemetry cost per request on the hot path.

Runs the calls one ``/v1/messages`` request makes (request_started,
request_finished, usage, one tool call) against:

- a no-op object with the same methods (the floor: Python call overhead),
- ccag's Recorder alone: the cells with no reader, which is the whole
  request path of the design before the MeterProvider,
- ccag's Telemetry (the SDK MeterProvider) with the Prometheus reader only,
- ccag's Telemetry with the OTLP reader too, pointed at a closed loopback
  port (its thread pushes and fails every 20 ms; recording must cost the
  same),
- for comparison, the two histograms recorded through the SDK's synchronous
  ``Histogram.record`` with two readers and attribute dicts cached per label
  set (the rest through cells), which is why ccag keeps them in cells,
- and the cost off the request path: one Prometheus scrape (collect and
  render) of the series the run left.

Usage: python perf/bench_telemetry.py [--requests N]
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

import trio

from ccag.telemetry import DURATION_BUCKETS_MS, Telemetry
from ccag.telemetry.recorder import Recorder

MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]


class NoOpTelemetry:
    def request_started(self) -> None:
        pass

    def request_finished(self, model: str, streaming: bool, status: int, duration_ms: float, ttft_ms: float | None) -> None:
        pass

    def usage(self, model: str, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> None:
        pass

    def tool_calls(self, names: list[str]) -> None:
        pass


class SdkHistogramTelemetry(Recorder):
    """The cells, plus the two histograms recorded through the SDK's
    synchronous Histogram.record (a View for the buckets, two readers,
    attribute dicts built once per label set): its cost over the cells is
    what recording the histograms through the SDK would add."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import (
            AlwaysOffExemplarFilter,
            Histogram,
            MeterProvider,
        )
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.metrics.view import (
            ExplicitBucketHistogramAggregation,
            View,
        )

        super().__init__(MODELS, ["default"])
        self.provider = MeterProvider(
            metric_readers=[InMemoryMetricReader(), InMemoryMetricReader()],
            exemplar_filter=AlwaysOffExemplarFilter(),
            shutdown_on_exit=False,
            views=[View(instrument_type=Histogram, aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_MS))],
        )
        meter = self.provider.get_meter("bench")
        self.duration = meter.create_histogram("ccag.request.duration_ms")
        self.ttft = meter.create_histogram("ccag.request.ttft_ms")
        self.duration_attributes: dict[tuple[str, bool, int], dict[str, str]] = {}
        self.ttft_attributes: dict[tuple[str, bool], dict[str, str]] = {}

    def request_finished(self, model: str, streaming: bool, status: int, duration_ms: float, ttft_ms: float | None) -> None:
        super().request_finished(model, streaming, status, duration_ms, ttft_ms)
        key = (model, streaming, status)
        attributes = self.duration_attributes.get(key)
        if attributes is None:
            attributes = self.duration_attributes[key] = {
                "model": model, "streaming": "true" if streaming else "false", "status": str(status)
            }
        self.duration.record(duration_ms, attributes)
        if ttft_ms is not None:
            ttft_attributes = self.ttft_attributes.get(key[:2])
            if ttft_attributes is None:
                ttft_attributes = self.ttft_attributes[key[:2]] = {
                    "model": model, "streaming": attributes["streaming"]
                }
            self.ttft.record(ttft_ms, ttft_attributes)


def per_request_us(telemetry: Any, requests: int) -> float:
    tools = ["Bash"]
    started = time.perf_counter()
    for i in range(requests):
        model = MODELS[i % 3]
        telemetry.request_started()
        telemetry.request_finished(model, True, 200, 1234.5 + i % 7, 321.0)
        telemetry.usage(model, 1200, 350, 9000, 0)
        telemetry.tool_calls(tools)
    return (time.perf_counter() - started) / requests * 1e6


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def bench_with_failing_otlp(requests: int) -> tuple[float, int]:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_METRIC_EXPORT_INTERVAL": "20",
    }
    telemetry = Telemetry(environ, MODELS, ["default"])
    pushes = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(telemetry.run_otlp_export)
        # Record in slices so the export loop (and its failing pushes in a
        # worker thread) runs between them, as it would between requests.
        total = 0.0
        slices = 20
        for _ in range(slices):
            total += per_request_us(telemetry, requests // slices)
            await trio.sleep(0.025)
            pushes += 1
        nursery.cancel_scope.cancel()
    await telemetry.aclose()
    return total / slices, pushes


def scrape_ms(telemetry: Telemetry) -> tuple[float, int]:
    started = time.perf_counter()
    body, _ = telemetry.render_prometheus()
    elapsed_ms = (time.perf_counter() - started) * 1e3
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return elapsed_ms, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()

    noop = min(per_request_us(NoOpTelemetry(), args.requests) for _ in range(3))
    cells = min(per_request_us(Recorder(MODELS, ["default"]), args.requests) for _ in range(3))
    prometheus_only = Telemetry({}, MODELS, ["default"])
    ours = min(per_request_us(prometheus_only, args.requests) for _ in range(3))
    failing, _ = trio.run(bench_with_failing_otlp, args.requests)
    sdk_histograms = SdkHistogramTelemetry()
    sdk = min(per_request_us(sdk_histograms, args.requests // 10) for _ in range(3))
    sdk_histograms.provider.shutdown()
    scrape, samples = min(scrape_ms(prometheus_only) for _ in range(5))

    print(f"no-op telemetry:                          {noop:6.2f} us/request")
    print(f"cells only (Recorder, no readers):        {cells:6.2f} us/request ({cells - noop:.2f} us over no-op)")
    print(f"MeterProvider, Prometheus reader:         {ours:6.2f} us/request ({ours - noop:.2f} us over no-op)")
    print(f"MeterProvider, + OTLP reader (port shut): {failing:6.2f} us/request ({failing - noop:.2f} us over no-op)")
    print(f"cells + histograms via SDK .record:       {sdk:6.2f} us/request ({sdk - cells:.2f} us over cells)")
    print(f"one scrape (collect + render), {samples} samples: {scrape:.2f} ms")


if __name__ == "__main__":
    main()
