"""The sixteen instruments of ccag and the bounded sets their labels take.

This table is the code side of ``METRICS.md``: names, kinds, labels, help
texts and histogram boundaries are declared here once, and both channels
(Prometheus and OTLP) render from it. Label values are bounded so that no
client can grow the number of series: every value outside a known set is
counted as :data:`OTHER`.
"""

from __future__ import annotations

import enum

import attrs

OTHER = "other"
"""The label value for anything outside a bounded set."""

DURATION_BUCKETS_MS: tuple[float, ...] = (
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0, 30000.0, 60000.0, 120000.0, 300000.0, 600000.0,
)
"""Upper bounds of the duration and TTFT buckets: LLM requests run from a few
milliseconds (rejections) to ten minutes (long streams)."""

ERROR_TYPES: frozenset[str] = frozenset({
    "throttled",
    "validation",
    "access_denied",
    "not_found",
    "model_not_ready",
    "timeout",
    "server_error",
    "stream_error",
    "connect_error",
    "bad_response",
})
"""Values of ``error_type`` on ``ccag.errors.total`` (besides ``other``).
The ``metric`` entries of ``ccag/data/bedrock.json`` are all among them."""

AUTH_FAILURE_REASONS: frozenset[str] = frozenset({
    "missing_key",
    "invalid_key",
    "revoked_key",
    "expired_key",
    "not_admin",
    "login_failed",
    "invalid_session",
    "expired_session",
})
"""Values of ``reason`` on ``ccag.auth_failures.total`` (besides ``other``);
the reasons :mod:`ccag.auth.errors` gives its refusals (a test keeps the two
equal)."""

DEFAULT_MAX_TOOL_NAMES = 500
"""Distinct tool names tracked before new ones count as ``other``: Claude
Code sessions use a few dozen built-in and MCP tools; 500 leaves room for
many MCP servers while capping what a client inventing names can add."""

MAX_TOOL_NAME_LENGTH = 256
"""Longer tool names count as ``other``: MCP names (``mcp__server__tool``)
stay well under this, and a label value should not carry kilobytes."""

MCP_TOOL_PREFIX = "mcp__"

STATUS_RANGE = range(100, 600)
"""HTTP statuses kept as digits; anything else is ``other``."""


class Kind(enum.Enum):
    COUNTER = "counter"
    UP_DOWN_COUNTER = "up_down_counter"
    HISTOGRAM = "histogram"


@attrs.frozen
class Instrument:
    """One instrument as operators see it.

    Attributes:
        name: the OpenTelemetry name, such as ``ccag.requests.total``.
        kind: counter, up-down counter or histogram.
        labels: the label names, in exposition order.
        help: the ``# HELP`` text and the OTLP description.
        unit: the OTLP unit (UCUM); Prometheus names do not carry it.
    """

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    unit: str = ""

    @property
    def prometheus_name(self) -> str:
        """The family name on ``/metrics``: dots become underscores and
        counters end in ``_total`` exactly once."""
        base = self.name.replace(".", "_")
        if self.kind is Kind.COUNTER and not base.endswith("_total"):
            base += "_total"
        return base


REQUESTS = Instrument(
    "ccag.requests.total", Kind.COUNTER, ("model", "streaming", "status"),
    "Every /v1/messages request, rejected ones included", "{request}",
)
DURATION = Instrument(
    "ccag.request.duration_ms", Kind.HISTOGRAM, ("model", "streaming", "status"),
    "Milliseconds from the first request byte to the last response byte", "ms",
)
TTFT = Instrument(
    "ccag.request.ttft_ms", Kind.HISTOGRAM, ("model", "streaming"),
    "Milliseconds from the first request byte to the first content byte sent", "ms",
)
IN_FLIGHT = Instrument(
    "ccag.requests.in_flight", Kind.UP_DOWN_COUNTER, (),
    "Requests between arrival and their last response byte", "{request}",
)
TOKENS_INPUT = Instrument(
    "ccag.tokens.input", Kind.COUNTER, ("model",), "Input tokens processed", "{token}",
)
TOKENS_OUTPUT = Instrument(
    "ccag.tokens.output", Kind.COUNTER, ("model",), "Output tokens generated", "{token}",
)
TOKENS_CACHE_READ = Instrument(
    "ccag.tokens.cache_read", Kind.COUNTER, ("model",), "Cache-read input tokens",
    "{token}",
)
TOKENS_CACHE_WRITE = Instrument(
    "ccag.tokens.cache_write", Kind.COUNTER, ("model",),
    "Cache-write (creation) input tokens", "{token}",
)
TOOL_CALLS = Instrument(
    "ccag.tool_calls.total", Kind.COUNTER, ("tool", "type"),
    "Tool calls the model made (tool_use blocks in responses)", "{call}",
)
WEB_SEARCHES = Instrument(
    "ccag.web_searches.total", Kind.COUNTER, (),
    "Web searches the gateway executed by interception", "{search}",
)
ERRORS = Instrument(
    "ccag.errors.total", Kind.COUNTER, ("error_type", "endpoint_id"),
    "Bedrock and upstream errors", "{error}",
)
THROTTLES = Instrument(
    "ccag.bedrock.throttles.total", Kind.COUNTER, ("model", "endpoint_id"),
    "Bedrock throttling events", "{event}",
)
RATE_LIMITS = Instrument(
    "ccag.rate_limits.total", Kind.COUNTER, (),
    "Requests the gateway's own rate limiter rejected", "{request}",
)
AUTH_FAILURES = Instrument(
    "ccag.auth_failures.total", Kind.COUNTER, ("reason",), "Authentication failures",
    "{failure}",
)
SPEND_FLUSH_ERRORS = Instrument(
    "ccag.spend_flush_errors.total", Kind.COUNTER, (),
    "Spend tracker flushes that failed", "{flush}",
)
SPEND_QUARANTINED = Instrument(
    "ccag.spend_records_quarantined.total", Kind.COUNTER, (),
    "Spend records set aside because the store rejected them individually",
    "{record}",
)

INSTRUMENTS: tuple[Instrument, ...] = (
    REQUESTS, DURATION, TTFT, IN_FLIGHT,
    TOKENS_INPUT, TOKENS_OUTPUT, TOKENS_CACHE_READ, TOKENS_CACHE_WRITE,
    TOOL_CALLS, WEB_SEARCHES, ERRORS, THROTTLES, RATE_LIMITS, AUTH_FAILURES,
    SPEND_FLUSH_ERRORS, SPEND_QUARANTINED,
)


# Endpoints an admin may add while the gateway runs that still get a label of
# their own (their room in the series cap is reserved at start); later ones
# are counted as ``other``.
MAX_RUNTIME_ENDPOINTS = 16


def series_cap(model_count: int, endpoint_count: int, max_tool_names: int) -> int:
    """The most series ccag can ever expose, histogram buckets not counted.

    Args:
        model_count: canonical model names known (``other`` is added here).
        endpoint_count: configured endpoint ids (``other`` and the room for
            endpoints added at runtime are added here).
        max_tool_names: the tool-name limit.
    """
    models = model_count + 1
    endpoints = endpoint_count + MAX_RUNTIME_ENDPOINTS + 1
    statuses = len(STATUS_RANGE) + 1
    request_series = models * 2 * statuses
    per_instrument = {
        REQUESTS: request_series,
        DURATION: request_series,
        TTFT: models * 2,
        IN_FLIGHT: 1,
        TOKENS_INPUT: models,
        TOKENS_OUTPUT: models,
        TOKENS_CACHE_READ: models,
        TOKENS_CACHE_WRITE: models,
        # Each tracked name has one type; ``other`` can be either.
        TOOL_CALLS: max_tool_names + 2,
        WEB_SEARCHES: 1,
        ERRORS: (len(ERROR_TYPES) + 1) * endpoints,
        THROTTLES: models * endpoints,
        RATE_LIMITS: 1,
        AUTH_FAILURES: len(AUTH_FAILURE_REASONS) + 1,
        SPEND_FLUSH_ERRORS: 1,
        SPEND_QUARANTINED: 1,
    }
    return sum(per_instrument.values())
