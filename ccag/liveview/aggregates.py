"""Per-second rollups of live events, for the charts and for slow viewers.

Theory of operation: a :class:`Rollups` holds one open :class:`SecondRollup`
that events are added to, and a bounded history of closed ones. The hub
closes the open second once a second (:meth:`Rollups.close`), stamping it
with the second that just ended, so an event is always counted exactly once
even when its own timestamp is a little off the tick. A closed second is a
plain dict: what a viewer receives as a ``second`` message and what charts
draw. Pure: the caller passes every time in.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from ccag.liveview.events import LiveEvent

# Seconds of history kept per scope: five minutes of charts on a new page.
HISTORY_SECONDS = 300

# Time-to-first-token and duration samples kept per second for percentiles.
# Past this a second keeps its latest samples only, which bounds the memory
# and sorting cost of a burst at the price of a slightly biased p99.
MAX_SAMPLES_PER_SECOND = 2000


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values, None when empty."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-fraction * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class SecondRollup:
    """Counts of the events of one second."""

    __slots__ = (
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration",
        "endpoints",
        "errors",
        "input_tokens",
        "models",
        "output_tokens",
        "requests",
        "streaming",
        "throttles",
        "tool_calls",
        "ttft",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.throttles = 0
        self.streaming = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.tool_calls = 0
        self.cost_usd = 0.0
        self.ttft: collections.deque[float] = collections.deque(maxlen=MAX_SAMPLES_PER_SECOND)
        self.duration: collections.deque[float] = collections.deque(
            maxlen=MAX_SAMPLES_PER_SECOND
        )
        # name -> [requests, errors, throttles, input tokens, output tokens]
        self.models: dict[str, list[int]] = {}
        self.endpoints: dict[str, list[int]] = {}

    def add(self, event: LiveEvent) -> None:
        is_error = event.is_error
        is_throttle = event.is_throttle
        self.requests += 1
        self.errors += is_error
        self.throttles += is_throttle
        self.streaming += event.streaming
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.cache_read_tokens += event.cache_read_tokens
        self.cache_write_tokens += event.cache_write_tokens
        self.tool_calls += event.tool_calls
        self.cost_usd += event.cost_usd
        if event.ttft_ms is not None:
            self.ttft.append(event.ttft_ms)
        self.duration.append(event.duration_ms)

        # A request that reached no Bedrock endpoint (refused, or failed
        # before routing) has no endpoint series; its route name is not one.
        tables = [(self.models, event.model)]
        if event.endpoint_id:
            tables.append((self.endpoints, event.endpoint_id))
        for table, name in tables:
            row = table.get(name)
            if row is None:
                row = table[name] = [0, 0, 0, 0, 0]
            row[0] += 1
            row[1] += is_error
            row[2] += is_throttle
            row[3] += event.input_tokens
            row[4] += event.output_tokens

    def summary(self, second: int, in_flight: int | None) -> dict[str, Any]:
        """The closed second as a viewer receives it."""
        ttft = sorted(self.ttft)
        duration = sorted(self.duration)

        def breakdown(table: dict[str, list[int]]) -> dict[str, dict[str, int]]:
            return {
                name: {
                    "requests": row[0], "errors": row[1], "throttles": row[2],
                    "input_tokens": row[3], "output_tokens": row[4],
                }
                for name, row in table.items()
            }

        return {
            "t": second,
            "requests": self.requests,
            "errors": self.errors,
            "throttles": self.throttles,
            "streaming": self.streaming,
            "in_flight": in_flight,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "tool_calls": self.tool_calls,
            "cost_usd": round(self.cost_usd, 6),
            "ttft_p50": _rounded(percentile(ttft, 0.50)),
            "ttft_p99": _rounded(percentile(ttft, 0.99)),
            "duration_p50": _rounded(percentile(duration, 0.50)),
            "duration_p99": _rounded(percentile(duration, 0.99)),
            "models": breakdown(self.models),
            "endpoints": breakdown(self.endpoints),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Rollups:
    """The open second and the recent closed ones, for one scope.

    Args:
        history_seconds: closed seconds kept.
    """

    def __init__(self, history_seconds: int = HISTORY_SECONDS) -> None:
        self._open = SecondRollup()
        self.history: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=history_seconds
        )

    def add(self, event: LiveEvent) -> None:
        self._open.add(event)

    def close(self, second: int, in_flight: int | None) -> dict[str, Any]:
        """Close the open second as ``second``; returns its summary."""
        summary = self._open.summary(second, in_flight)
        self._open = SecondRollup()
        self.history.append(summary)
        return summary

    def seed(self, events: Iterable[LiveEvent], before: int) -> None:
        """Rebuild history from past events (a scope created late).

        Events at or after ``before`` (the open second) go to the open second.
        """
        by_second: dict[int, SecondRollup] = {}
        for event in events:
            second = int(event.at)
            if second >= before:
                self._open.add(event)
                continue
            by_second.setdefault(second, SecondRollup()).add(event)
        for second in sorted(by_second):
            self.history.append(by_second[second].summary(second, None))
