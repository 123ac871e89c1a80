"""Server-Sent Events: the encoder for our responses and an incremental decoder.

The decoder follows the WHATWG event-stream parsing rules: lines end in CRLF,
LF or a lone CR; a line starting with ``:`` is a comment; ``field: value``
drops one space after the colon; ``data`` lines accumulate, joined by LF; a
blank line dispatches the event. ``id`` and ``retry`` are accepted and
ignored, since nothing we read reconnects.

Theory of operation: bytes are appended to a bytearray and scanned for line
ends from where the previous scan stopped, so a long line arriving a byte at
a time is scanned once in total. A CR that ends a read may be the first half
of a CRLF; the line is ended at the CR and a LF opening the next read is
skipped.
"""

from __future__ import annotations

import re

import attrs

from ccag.errors import InternalError, SSEError

# Anthropic events are single JSON lines of a few KiB; the largest real ones
# (a web search result block) stay far below this. The cap stops a peer that
# never sends a line end from growing our buffer without bound.
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024

# The data of one event may span many lines; the same reasoning bounds it.
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@attrs.frozen
class SSEEvent:
    """One dispatched event.

    Attributes:
        event: the event name (``message`` when the stream gave none).
        data: the data lines joined by LF, as bytes.
    """

    event: str
    data: bytes


def encode_event(event: bytes, data: bytes) -> bytes:
    """One SSE event: ``event: <event>``, the data line(s), a blank line.

    Anthropic event JSON is one line, which is the fast path. Data with line
    breaks becomes one ``data:`` line per line, so the framing cannot break;
    a decoder joins them back with LF.

    Raises:
        InternalError: ``event`` contains a line break (a bug in the caller,
            which only passes validated event names).
    """
    if b"\n" in event or b"\r" in event:
        raise InternalError(f"SSE event name {event!r} contains a line break")
    if b"\n" not in data and b"\r" not in data:
        return b"event: " + event + b"\ndata: " + data + b"\n\n"
    lines = _LINE_END.split(data)
    return (
        b"event: "
        + event
        + b"\n"
        + b"".join(b"data: " + line + b"\n" for line in lines)
        + b"\n"
    )


class SSEDecoder:
    """Incremental SSE parser: feed bytes, get back the events they complete.

    Args:
        max_line_bytes: the longest line accepted.
        max_event_bytes: the most data one event may accumulate.

    Raises (from ``feed``):
        SSEError: a line or an event exceeds its limit. The decoder is then
            unusable and raises the same error on every later feed.
    """

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._max_line_bytes = max_line_bytes
        self._max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._scanned = 0
        self._skip_leading_lf = False
        self._at_stream_start = True
        self._error: SSEError | None = None

        # The event being assembled.
        self._event_name = b""
        self._data_lines: list[bytes] = []
        self._data_bytes = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Add received bytes; return the events they complete, in order.

        Events completed before a fault in the same feed are returned and the
        fault is raised by the next feed, so that what a caller receives does
        not depend on how the bytes were split.
        """
        if self._error is not None:
            raise self._error
        events: list[SSEEvent] = []
        if not data:
            return events

        if self._skip_leading_lf:
            self._skip_leading_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        self._buffer += data
        if self._at_stream_start:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return events
            self._at_stream_start = False
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]

        try:
            self._read_lines(events)
        except SSEError as exc:
            self._error = exc
            if not events:
                raise
        return events

    def close(self) -> None:
        """Declare the end of input; an unfinished event is dropped, as in browsers.

        Raises:
            SSEError: a fault found by an earlier feed is still pending.
        """
        if self._error is not None:
            raise self._error

    def _read_lines(self, events: list[SSEEvent]) -> None:
        buffer = self._buffer
        line_start = 0
        try:
            while True:
                line_end = _LINE_END.search(buffer, self._scanned)
                if line_end is None:
                    break
                if line_end.group() == b"\r" and line_end.end() == len(buffer):
                    self._skip_leading_lf = True
                self._handle_line(bytes(buffer[line_start : line_end.start()]), events)
                line_start = self._scanned = line_end.end()

            if len(buffer) - line_start > self._max_line_bytes:
                raise SSEError(
                    f"SSE line exceeds the limit of {self._max_line_bytes} bytes"
                )
        finally:
            del buffer[:line_start]
            self._scanned = len(buffer)

    def _handle_line(self, line: bytes, events: list[SSEEvent]) -> None:
        if len(line) > self._max_line_bytes:
            raise SSEError(
                f"SSE line exceeds the limit of {self._max_line_bytes} bytes"
            )
        if not line:
            self._dispatch(events)
            return
        if line[0] == 0x3A:  # ":" opens a comment, used for keep-alives
            return

        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data_bytes += len(value) + 1
            if self._data_bytes > self._max_event_bytes:
                raise SSEError(
                    f"SSE event data exceeds the limit of {self._max_event_bytes} bytes"
                )
            self._data_lines.append(value)
        elif field == b"event":
            self._event_name = value

    def _dispatch(self, events: list[SSEEvent]) -> None:
        # An event without any data line is dropped, along with its name.
        if self._data_lines:
            name = self._event_name.decode("utf-8", "replace") or "message"
            events.append(SSEEvent(event=name, data=b"\n".join(self._data_lines)))
        self._event_name = b""
        self._data_lines = []
        self._data_bytes = 0
