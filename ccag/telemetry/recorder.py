"""Counting on the request path, cheaply, and reading the counts back.

Theory of operation: every series is a plain Python cell (an int, or a
:class:`HistogramCell`) found through a dict keyed by its already-bounded
label values, so recording is a dict lookup and an addition; label strings
and tuples are built once, when a series is first seen. Nothing here locks:
ccag records from the Trio thread only.

The readers (:meth:`Recorder.read`, :meth:`Recorder.snapshot`) may run on
another thread: the OpenTelemetry SDK's periodic OTLP reader collects on its
own. They copy each dict in one C-level step (retried in the rare case a
concurrent insert still interrupts it) and read a histogram until two reads
agree, so a reader never sees a half-recorded value; two instruments read
a moment apart may differ by the requests recorded in between.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import attrs

from ccag.telemetry import instruments as ins
from ccag.telemetry.instruments import OTHER, Instrument

Labels = tuple[str, ...]
_K = TypeVar("_K")
_V = TypeVar("_V")


@attrs.frozen
class HistogramValue:
    """A histogram series at one moment.

    Attributes:
        bucket_counts: per bucket (not cumulative), one more than the bounds;
            the last counts values above the highest bound.
        sum: sum of the recorded values.
        min: smallest recorded value.
        max: largest recorded value.
    """

    bucket_counts: tuple[int, ...]
    sum: float
    min: float
    max: float

    @property
    def count(self) -> int:
        return sum(self.bucket_counts)


SeriesValue = int | float | HistogramValue
Series = list[tuple[Labels, SeriesValue]]
Snapshot = list[tuple[Instrument, Series]]


class HistogramCell:
    """One histogram series with the :data:`DURATION_BUCKETS_MS` bounds.

    One thread observes; any thread may take :meth:`value`. ``version`` is
    odd while an observation is half written (a sequence lock), so a reader
    on another thread can tell a torn read from a whole one.
    """

    __slots__ = ("buckets", "max", "min", "sum", "version")

    def __init__(self) -> None:
        self.buckets = [0] * (len(ins.DURATION_BUCKETS_MS) + 1)
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.version = 0

    def observe(self, value: float) -> None:
        self.version += 1

        # bisect_left puts a value equal to a bound in that bound's bucket,
        # matching Prometheus ``le`` and OTLP's upper-inclusive buckets.
        self.buckets[bisect_left(ins.DURATION_BUCKETS_MS, value)] += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

        self.version += 1

    def value(self) -> HistogramValue:
        while True:
            before = self.version
            value = HistogramValue(tuple(self.buckets), self.sum, self.min, self.max)
            if before == self.version and not before & 1:
                return value
            # The observing thread was switched out mid-observation: let it
            # finish before reading again.
            time.sleep(0)


class _RequestCell:
    __slots__ = ("count", "duration", "labels")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.count = 0
        self.duration = HistogramCell()


class _TokenCell:
    __slots__ = ("cache_read", "cache_write", "input", "output")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_read = 0
        self.cache_write = 0


def _items(series: Mapping[_K, _V]) -> list[tuple[_K, _V]]:
    """A copy of ``series.items()``, safe while the Trio thread inserts.

    The copy is one C-level step, which a thread switch cannot split; a
    garbage collection inside it can still run Python code and let the
    other thread in, which CPython reports as a RuntimeError: copy again.
    """
    while True:
        try:
            return list(series.items())
        except RuntimeError:
            continue


def _streaming_label(streaming: bool) -> str:
    return "true" if streaming else "false"


class Recorder:
    """The values of all sixteen instruments, and the calls that move them.

    Args:
        canonical_models: model names kept as ``model`` label values; any
            other name is counted as ``other``.
        endpoint_ids: configured Bedrock endpoint ids; others are ``other``
            unless added later with :meth:`allow_endpoints`.
        max_tool_names: distinct tool names kept before new ones are
            ``other``.

    Label bounding: ``model`` is a canonical name or ``other``; ``status``
    the digits of an int in 100..599, else ``other``; ``error_type`` one of
    :data:`~ccag.telemetry.instruments.ERROR_TYPES`, ``reason`` one of
    :data:`~ccag.telemetry.instruments.AUTH_FAILURE_REASONS`, ``endpoint_id``
    a configured id, each else ``other``; ``tool`` one of the first
    ``max_tool_names`` names seen (at most
    :data:`~ccag.telemetry.instruments.MAX_TOOL_NAME_LENGTH` long), else
    ``other``.
    """

    def __init__(
        self,
        canonical_models: Iterable[str],
        endpoint_ids: Iterable[str],
        max_tool_names: int = ins.DEFAULT_MAX_TOOL_NAMES,
    ) -> None:
        self._model_labels = {name: name for name in canonical_models}
        self._endpoint_labels = {eid: eid for eid in endpoint_ids}
        self._runtime_endpoints = 0
        self._max_tool_names = max_tool_names

        self._requests: dict[tuple[str, bool, int], _RequestCell] = {}
        self._ttft: dict[tuple[str, bool], HistogramCell] = {}
        self._tokens: dict[str, _TokenCell] = {}
        self._tool_keys: dict[str, Labels] = {}
        self._tool_calls: dict[Labels, int] = {}
        self._errors: dict[Labels, int] = {}
        self._throttles: dict[Labels, int] = {}
        self._auth_failures: dict[Labels, int] = {}
        self._in_flight = 0
        self._web_searches = 0
        self._rate_limits = 0
        self._spend_flush_errors = 0
        self._spend_quarantined = 0
        self._series_readers = self._series_readers_table()

    # ---- the request path

    def request_started(self) -> None:
        """A ``/v1/messages`` request arrived (its first byte)."""
        self._in_flight += 1

    def request_finished(
        self,
        model: str,
        streaming: bool,
        status: int,
        duration_ms: float,
        ttft_ms: float | None,
    ) -> None:
        """A request sent its last byte (or its client went away: 499).

        Args:
            model: the model the client asked for, as sent.
            streaming: whether the client asked for a stream.
            status: the status the client saw (a stream that ended in an
                error counts as that error's status).
            duration_ms: first request byte to last response byte.
            ttft_ms: first request byte to first content byte, or ``None``
                when no content was sent.
        """
        self._in_flight -= 1
        model_label = self._model_labels.get(model, OTHER)
        if status.__class__ is not int or not 100 <= status <= 599:
            status = 0

        key = (model_label, streaming, status)
        cell = self._requests.get(key)
        if cell is None:
            label = str(status) if status else OTHER
            cell = _RequestCell((model_label, _streaming_label(streaming), label))
            self._requests[key] = cell
        cell.count += 1
        cell.duration.observe(duration_ms)

        if ttft_ms is not None:
            ttft_key = (model_label, streaming)
            ttft = self._ttft.get(ttft_key)
            if ttft is None:
                ttft = self._ttft[ttft_key] = HistogramCell()
            ttft.observe(ttft_ms)

    def usage(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write: int,
    ) -> None:
        """Add the tokens of one model call (once per call, final values)."""
        cell = self._tokens.get(model)
        if cell is None:
            cell = self._token_cell(model)
        cell.input += input_tokens
        cell.output += output_tokens
        cell.cache_read += cache_read
        cell.cache_write += cache_write

    def tool_calls(self, names: Iterable[str]) -> None:
        """Count the ``tool_use`` blocks of one response, by tool name."""
        counts = self._tool_calls
        for name in names:
            key = self._tool_keys.get(name)
            if key is None:
                key = self._tool_key(name)
            counts[key] = counts.get(key, 0) + 1

    # ---- rarer events

    def web_search(self, n: int = 1) -> None:
        """The gateway ran ``n`` web searches by interception."""
        self._web_searches += n

    def allow_endpoints(self, endpoint_ids: Iterable[str]) -> None:
        """Label endpoints added while running (admin API, store reload).

        Up to :data:`~ccag.telemetry.instruments.MAX_RUNTIME_ENDPOINTS` new
        ids get their own label, counted into the series cap from the start;
        beyond that they stay ``other``. A removed endpoint keeps its label:
        its series already exist.
        """
        for endpoint_id in endpoint_ids:
            if endpoint_id in self._endpoint_labels:
                continue
            if self._runtime_endpoints >= ins.MAX_RUNTIME_ENDPOINTS:
                return
            self._endpoint_labels[endpoint_id] = endpoint_id
            self._runtime_endpoints += 1

    def upstream_error(self, error_type: str, endpoint_id: str) -> None:
        """Bedrock (or the way to it) failed with ``error_type``."""
        if error_type not in ins.ERROR_TYPES:
            error_type = OTHER
        key = (error_type, self._endpoint_labels.get(endpoint_id, OTHER))
        self._errors[key] = self._errors.get(key, 0) + 1

    def throttle(self, model: str, endpoint_id: str) -> None:
        """Bedrock throttled a call for ``model`` at ``endpoint_id``."""
        key = (
            self._model_labels.get(model, OTHER),
            self._endpoint_labels.get(endpoint_id, OTHER),
        )
        self._throttles[key] = self._throttles.get(key, 0) + 1

    def rate_limited(self) -> None:
        """The gateway's own rate limiter rejected a request."""
        self._rate_limits += 1

    def auth_failure(self, reason: str) -> None:
        """Authentication or authorisation failed for ``reason``."""
        key = (reason if reason in ins.AUTH_FAILURE_REASONS else OTHER,)
        self._auth_failures[key] = self._auth_failures.get(key, 0) + 1

    def spend_flush_error(self) -> None:
        """A spend tracker flush failed."""
        self._spend_flush_errors += 1

    def spend_quarantined(self, n: int) -> None:
        """``n`` spend records were set aside."""
        self._spend_quarantined += n

    # ---- reading

    def read(self, instrument: Instrument) -> Series:
        """The series of one instrument now, from any thread.

        Label-less instruments always have their one series (0 until they
        move); labelled ones list the series seen so far.
        """
        return self._series_readers[instrument]()

    def snapshot(self) -> Snapshot:
        """Every instrument with its series, in :data:`INSTRUMENTS` order."""
        return [(instrument, self.read(instrument)) for instrument in ins.INSTRUMENTS]

    def _series_readers_table(self) -> dict[Instrument, Callable[[], Series]]:
        def requests() -> list[_RequestCell]:
            return [cell for _, cell in _items(self._requests)]

        def tokens() -> list[tuple[Labels, _TokenCell]]:
            return [((model,), cell) for model, cell in _items(self._tokens)]

        def ttft() -> Series:
            return [
                ((model, _streaming_label(streaming)), cell.value())
                for (model, streaming), cell in _items(self._ttft)
            ]

        return {
            ins.REQUESTS: lambda: [(cell.labels, cell.count) for cell in requests()],
            ins.DURATION: lambda: [(cell.labels, cell.duration.value()) for cell in requests()],
            ins.TTFT: ttft,
            ins.IN_FLIGHT: lambda: [((), self._in_flight)],
            ins.TOKENS_INPUT: lambda: [(labels, cell.input) for labels, cell in tokens()],
            ins.TOKENS_OUTPUT: lambda: [(labels, cell.output) for labels, cell in tokens()],
            ins.TOKENS_CACHE_READ: lambda: [
                (labels, cell.cache_read) for labels, cell in tokens()
            ],
            ins.TOKENS_CACHE_WRITE: lambda: [
                (labels, cell.cache_write) for labels, cell in tokens()
            ],
            ins.TOOL_CALLS: lambda: _items(self._tool_calls),
            ins.WEB_SEARCHES: lambda: [((), self._web_searches)],
            ins.ERRORS: lambda: _items(self._errors),
            ins.THROTTLES: lambda: _items(self._throttles),
            ins.RATE_LIMITS: lambda: [((), self._rate_limits)],
            ins.AUTH_FAILURES: lambda: _items(self._auth_failures),
            ins.SPEND_FLUSH_ERRORS: lambda: [((), self._spend_flush_errors)],
            ins.SPEND_QUARANTINED: lambda: [((), self._spend_quarantined)],
        }

    # ---- first sight of a series

    def _token_cell(self, model: str) -> _TokenCell:
        label = self._model_labels.get(model, OTHER)
        cell = self._tokens.get(label)
        if cell is None:
            cell = self._tokens[label] = _TokenCell()
        return cell

    def _tool_key(self, name: str) -> Labels:
        kind = "mcp" if name.startswith(ins.MCP_TOOL_PREFIX) else "builtin"
        if len(self._tool_keys) >= self._max_tool_names or len(name) > ins.MAX_TOOL_NAME_LENGTH:
            # Not remembered: the cache stays as bounded as the labels.
            return (OTHER, kind)
        key = self._tool_keys[name] = (name, kind)
        return key
