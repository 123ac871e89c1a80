"""AWS event-stream framing (application/vnd.amazon.eventstream).

A frame is, big-endian: total length (u32), headers length (u32), CRC32 of
those 8 bytes (u32), the headers, the payload, CRC32 of everything before it
(u32). A header is a u8 name length, the name, a u8 type and a typed value.
Bedrock only sends strings (type 7: u16 length, UTF-8), but the decoder
accepts every type the format defines so that a new header cannot break a
stream.

Theory of operation of the decoder: received bytes are appended to one
bytearray and a read offset walks over it, so a frame that arrives in many
small reads is copied once, not once per read. Whole frames are cut out as
soon as they are complete; the consumed prefix is dropped when the buffer is
empty or when it has grown large, which keeps both memory and copying linear.
The prelude is checked (CRC, lengths) as soon as its 12 bytes are in, so a
hostile length is refused before we buffer anything on its behalf.
"""

from __future__ import annotations

import struct
import uuid
import zlib

import attrs

from ccag.errors import EventStreamError

_PRELUDE = struct.Struct(">II")
_PRELUDE_WITH_CRC = struct.Struct(">III")
_CRC = struct.Struct(">I")
_U16 = struct.Struct(">H")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_STRING_TYPE = 7

# Prelude (12) plus the message CRC (4): the smallest possible frame.
_PRELUDE_BYTES = 12
_MIN_FRAME_BYTES = _PRELUDE_BYTES + 4

# The event-stream format caps a message at 16 MiB and its headers at
# 128 KiB. Bedrock frames carry one Anthropic event each (a few KiB), so the
# cap only matters against a corrupt or hostile length field, which would
# otherwise make us buffer up to 4 GiB waiting for a frame that never ends.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_HEADERS_BYTES = 128 * 1024

# Drop the consumed prefix of the buffer once it is this large even if a
# partial frame follows; below it, compaction waits for the buffer to drain.
_COMPACT_AFTER_BYTES = 64 * 1024

# Header value types of the format.
_BOOL_TRUE = 0
_BOOL_FALSE = 1
_BYTE = 2
_SHORT = 3
_INTEGER = 4
_LONG = 5
_BYTES = 6
_STRING = 7
_TIMESTAMP = 8
_UUID = 9

HeaderValue = bool | int | bytes | str | uuid.UUID


@attrs.frozen
class Frame:
    """One decoded event-stream message.

    Attributes:
        headers: header name to value. Strings are ``str``, byte arrays
            ``bytes``, integers ``int``, booleans ``bool``, timestamps ``int``
            milliseconds since the epoch, UUIDs ``uuid.UUID``.
        payload: the payload bytes, unparsed.
    """

    headers: dict[str, HeaderValue]
    payload: bytes

    @property
    def message_type(self) -> str | None:
        """``event``, ``exception`` or ``error``; None if absent or not text."""
        return self._string_header(":message-type")

    @property
    def event_type(self) -> str | None:
        """The ``:event-type`` of an event frame, such as ``chunk``."""
        return self._string_header(":event-type")

    @property
    def exception_type(self) -> str | None:
        """The ``:exception-type`` of an exception frame."""
        return self._string_header(":exception-type")

    def _string_header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


def encode_headers(headers: dict[str, str]) -> bytes:
    parts = []
    for name, value in headers.items():
        raw_name = name.encode()
        raw_value = value.encode()
        parts.append(
            bytes((len(raw_name),))
            + raw_name
            + bytes((_STRING_TYPE,))
            + struct.pack(">H", len(raw_value))
            + raw_value
        )
    return b"".join(parts)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One complete frame carrying ``headers`` (all strings) and ``payload``."""
    raw_headers = encode_headers(headers)
    total = _PRELUDE.size + 4 + len(raw_headers) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return head + struct.pack(">I", zlib.crc32(head))


class EventStreamDecoder:
    """Incremental decoder: feed received bytes, get back complete frames.

    Args:
        max_frame_bytes: the largest frame accepted; a prelude announcing a
            bigger one is an error before any of it is buffered.

    A fault (bad CRC, bad length, bad header) ends the stream for good: the
    frames decoded before it in the same ``feed`` are still returned, and the
    error is raised by the next ``feed`` or by ``close``, so that the frames a
    caller receives do not depend on how the bytes were split into reads.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max_frame_bytes = max(max_frame_bytes, _MIN_FRAME_BYTES)
        self._buffer = bytearray()
        self._offset = 0
        self._error: EventStreamError | None = None

        # Bedrock repeats the same header block on every chunk frame; reusing
        # the previous parse skips the header walk on the hot path.
        self._last_raw_headers = b""
        self._last_headers: dict[str, HeaderValue] = {}

    @property
    def has_partial_frame(self) -> bool:
        """True if bytes of an unfinished frame are buffered."""
        return len(self._buffer) > self._offset

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete, in order.

        Raises:
            EventStreamError: the stream is malformed (now or in an earlier
                feed whose good frames were returned first).
        """
        if self._error is not None:
            raise self._error
        if data:
            self._buffer += data

        frames: list[Frame] = []
        try:
            self._decode_into(frames)
        except EventStreamError as exc:
            self._error = exc
            if not frames:
                raise
        return frames

    def close(self) -> None:
        """Declare the end of input.

        Raises:
            EventStreamError: a fault is pending, or the input stopped in the
                middle of a frame.
        """
        if self._error is not None:
            raise self._error
        if self.has_partial_frame:
            self._error = EventStreamError(
                "event stream ended in the middle of a frame"
            )
            raise self._error

    def _decode_into(self, frames: list[Frame]) -> None:
        buffer = self._buffer
        end = len(buffer)
        offset = self._offset
        try:
            with memoryview(buffer) as view:
                while end - offset >= _PRELUDE_BYTES:
                    total = self._check_prelude(view, offset)
                    if end - offset < total:
                        break
                    frames.append(self._decode_frame(view, offset, total))
                    offset += total
        finally:
            self._offset = offset
            self._compact()

    def _check_prelude(self, view: memoryview, offset: int) -> int:
        total, headers_length, prelude_crc = _PRELUDE_WITH_CRC.unpack_from(view, offset)
        if zlib.crc32(view[offset : offset + 8]) != prelude_crc:
            raise EventStreamError("event stream prelude CRC mismatch")
        if total < _MIN_FRAME_BYTES:
            raise EventStreamError(f"event stream frame length {total} is too small")
        if total > self._max_frame_bytes:
            raise EventStreamError(
                f"event stream frame length {total} exceeds the limit of "
                f"{self._max_frame_bytes} bytes"
            )
        if headers_length > total - _MIN_FRAME_BYTES:
            raise EventStreamError(
                f"event stream headers length {headers_length} does not fit "
                f"in a frame of {total} bytes"
            )
        if headers_length > MAX_HEADERS_BYTES:
            raise EventStreamError(
                f"event stream headers length {headers_length} exceeds the "
                f"limit of {MAX_HEADERS_BYTES} bytes"
            )
        frame_length: int = total
        return frame_length

    def _decode_frame(self, view: memoryview, offset: int, total: int) -> Frame:
        crc_at = offset + total - 4
        (message_crc,) = _CRC.unpack_from(view, crc_at)
        if zlib.crc32(view[offset:crc_at]) != message_crc:
            raise EventStreamError("event stream message CRC mismatch")

        (headers_length,) = _CRC.unpack_from(view, offset + 4)
        headers_at = offset + _PRELUDE_BYTES
        payload_at = headers_at + headers_length
        raw_headers = bytes(view[headers_at:payload_at])
        if raw_headers == self._last_raw_headers:
            headers = dict(self._last_headers)
        else:
            headers = decode_headers(raw_headers)
            self._last_raw_headers = raw_headers
            self._last_headers = dict(headers)

        return Frame(headers=headers, payload=bytes(view[payload_at:crc_at]))

    def _compact(self) -> None:
        if self._offset == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        elif self._offset >= _COMPACT_AFTER_BYTES:
            del self._buffer[: self._offset]
            self._offset = 0


def decode_headers(raw: bytes) -> dict[str, HeaderValue]:
    """Parse a frame's header block.

    Raises:
        EventStreamError: a header runs past the block, has an unknown value
            type, is not valid UTF-8 where text is required, or repeats.
    """
    headers: dict[str, HeaderValue] = {}
    position = 0
    end = len(raw)
    while position < end:
        name_end = position + 1 + raw[position]
        if name_end + 1 > end:
            raise EventStreamError("event stream header name runs past the headers")
        name = _decode_text(raw[position + 1 : name_end], "header name")
        if name in headers:
            raise EventStreamError(f"event stream header {name!r} repeats")
        value, position = _decode_value(raw, raw[name_end], name_end + 1)
        headers[name] = value
    return headers


def _decode_value(raw: bytes, value_type: int, at: int) -> tuple[HeaderValue, int]:
    """The header value of ``value_type`` starting at ``at``, and its end."""
    if value_type == _STRING or value_type == _BYTES:
        value_at = at + 2
        if value_at > len(raw):
            raise EventStreamError("event stream header value runs past the headers")
        value_end = value_at + _U16.unpack_from(raw, at)[0]
        if value_end > len(raw):
            raise EventStreamError("event stream header value runs past the headers")
        if value_type == _BYTES:
            return raw[value_at:value_end], value_end
        return _decode_text(raw[value_at:value_end], "header value"), value_end

    if value_type == _BOOL_TRUE:
        return True, at
    if value_type == _BOOL_FALSE:
        return False, at

    size = _FIXED_SIZES.get(value_type)
    if size is None:
        raise EventStreamError(f"event stream header type {value_type} is unknown")
    value_end = at + size
    if value_end > len(raw):
        raise EventStreamError("event stream header value runs past the headers")
    if value_type == _BYTE:
        return raw[at] - 256 if raw[at] > 127 else raw[at], value_end
    if value_type == _SHORT:
        return _INT16.unpack_from(raw, at)[0], value_end
    if value_type == _INTEGER:
        return _INT32.unpack_from(raw, at)[0], value_end
    if value_type == _UUID:
        return uuid.UUID(bytes=raw[at:value_end]), value_end
    return _INT64.unpack_from(raw, at)[0], value_end


_FIXED_SIZES = {_BYTE: 1, _SHORT: 2, _INTEGER: 4, _LONG: 8, _TIMESTAMP: 8, _UUID: 16}


def _decode_text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EventStreamError(f"event stream {what} is not valid UTF-8") from None
