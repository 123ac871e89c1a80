"""Telemetry cost per request on the hot path.

Runs the calls one ``/v1/messages`` request makes (request_started,
request_finished, usage, one tool call) against:

- a no-op object with the same methods (the floor: Python call overhead),
- ccag's Telemetry with Prometheus only,
- ccag's Telemetry with OTLP pointed at a closed loopback port (the push
  fails in the background; recording must cost the same),
- for comparison, the OpenTelemetry SDK's synchronous instruments with two
  readers, which is what recording through a MeterProvider would cost.

Usage: python perf/bench_telemetry.py [--requests N]
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

import trio

from ccag.telemetry import Telemetry

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


class SdkTelemetry:
    """The same four calls through OpenTelemetry SDK synchronous instruments."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        provider = MeterProvider(metric_readers=[InMemoryMetricReader(), InMemoryMetricReader()])
        meter = provider.get_meter("bench")
        self.in_flight = meter.create_up_down_counter("in_flight")
        self.requests = meter.create_counter("requests")
        self.duration = meter.create_histogram("duration")
        self.ttft = meter.create_histogram("ttft")
        self.tokens = [meter.create_counter(f"tokens_{i}") for i in range(4)]
        self.tools = meter.create_counter("tools")

    def request_started(self) -> None:
        self.in_flight.add(1)

    def request_finished(self, model: str, streaming: bool, status: int, duration_ms: float, ttft_ms: float | None) -> None:
        attributes = {"model": model, "streaming": "true" if streaming else "false", "status": str(status)}
        self.in_flight.add(-1)
        self.requests.add(1, attributes)
        self.duration.record(duration_ms, attributes)
        if ttft_ms is not None:
            self.ttft.record(ttft_ms, {"model": model, "streaming": attributes["streaming"]})

    def usage(self, model: str, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> None:
        attributes = {"model": model}
        for counter, value in zip(self.tokens, (input_tokens, output_tokens, cache_read, cache_write)):
            counter.add(value, attributes)

    def tool_calls(self, names: list[str]) -> None:
        for name in names:
            self.tools.add(1, {"tool": name, "type": "builtin"})


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()

    noop = min(per_request_us(NoOpTelemetry(), args.requests) for _ in range(3))
    ours = min(per_request_us(Telemetry({}, MODELS, ["default"]), args.requests) for _ in range(3))
    failing, _ = trio.run(bench_with_failing_otlp, args.requests)
    sdk = per_request_us(SdkTelemetry(), args.requests // 10)

    print(f"no-op telemetry:                     {noop:6.2f} us/request")
    print(f"ccag telemetry (Prometheus):         {ours:6.2f} us/request ({ours - noop:.2f} us over no-op)")
    print(f"ccag telemetry (+ OTLP, port closed): {failing:6.2f} us/request ({failing - noop:.2f} us over no-op)")
    print(f"OTel SDK sync instruments, 2 readers: {sdk:6.2f} us/request (for comparison)")


if __name__ == "__main__":
    main()
