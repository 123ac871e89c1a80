"""A real OTLP/gRPC metrics receiver on loopback, for tests.

Built from the generated ``opentelemetry-proto`` service and ``grpcio``; it
keeps every export request it receives, with its gRPC metadata, and can
flatten the latest values into the same shape as a parsed Prometheus
exposition so the two channels can be compared series by series.

Usage::

    with OtlpReceiver() as receiver:
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, ...}
        ...
        await receiver.wait_for_export(count=1)
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any, Self

import grpc
import trio
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


class _Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        metadata = tuple((item.key, item.value) for item in context.invocation_metadata())
        with self._receiver.lock:
            self._receiver.requests.append(request)
            self._receiver.metadata.append(metadata)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    """An OTLP metrics collector on 127.0.0.1.

    Args:
        port: the port to listen on; 0 picks a free one.
    """

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.requests: list[Any] = []
        self.metadata: list[tuple[tuple[str, str], ...]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Servicer(self), self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on 127.0.0.1:{port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(grace=None).wait(5)

    def export_count(self) -> int:
        with self.lock:
            return len(self.requests)

    async def wait_for_export(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` export requests have arrived."""
        with trio.fail_after(timeout):
            while self.export_count() < count:
                await trio.sleep(0.02)

    def latest(self) -> Any:
        with self.lock:
            return self.requests[-1]

    def latest_series(self) -> dict[SeriesKey, Any]:
        """The latest export flattened to ``(metric name, labels) -> value``.

        Counters and up-down counters give a number; histograms give
        ``(bucket_counts tuple, sum, count, explicit_bounds tuple)``.
        """
        series: dict[SeriesKey, Any] = {}
        for resource_metrics in self.latest().resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        labels = frozenset(
                            (attribute.key, attribute.value.string_value)
                            for attribute in point.attributes
                        )
                        if kind == "histogram":
                            value: Any = (
                                tuple(point.bucket_counts),
                                point.sum,
                                point.count,
                                tuple(point.explicit_bounds),
                            )
                        elif point.WhichOneof("value") == "as_int":
                            value = point.as_int
                        else:
                            value = point.as_double
                        series[(metric.name, labels)] = value
        return series

    def latest_metric_kinds(self) -> dict[str, tuple[str, bool | None]]:
        """Metric name -> (data kind, is_monotonic for sums) in the latest export."""
        kinds: dict[str, tuple[str, bool | None]] = {}
        for resource_metrics in self.latest().resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    monotonic = metric.sum.is_monotonic if kind == "sum" else None
                    kinds[metric.name] = (kind, monotonic)
        return kinds

    def latest_resource(self) -> dict[str, str]:
        resource = self.latest().resource_metrics[0].resource
        return {attribute.key: attribute.value.string_value for attribute in resource.attributes}
