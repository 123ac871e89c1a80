"""A fast decoder of HTTP/1.1 chunked bodies (RFC 9112 section 7.1).

Bedrock streams each event-stream frame as its own chunk, so a streamed answer
is hundreds of small chunks. h11 turns every chunk into an event object; this
decoder turns everything one socket read brought into one ``bytes``, which is
what the event-stream decoder downstream wants anyway. It is sans-IO: bytes
in, body bytes out, :class:`ChunkedBodyError` on anything malformed.

Chunk extensions and trailer fields are read and dropped: Bedrock sends none,
and nothing downstream could use them.
"""

from __future__ import annotations

import re

from ccag.bedrock.errors import UpstreamProtocolError

# A chunk-size line is a hex size plus optional extensions; 1 KiB is far past
# any honest one and stops a peer from making us buffer an endless line.
MAX_SIZE_LINE_BYTES = 1024

# Trailer section, all lines together; same reasoning.
MAX_TRAILER_BYTES = 64 * 1024

# 16 hex digits is 2**64; longer sizes are an attack on int(), not a body.
MAX_SIZE_DIGITS = 16

# Only hex digits: int(..., 16) alone would also take signs, "0x", "_" and spaces.
_SIZE_DIGITS = re.compile(b"[0-9A-Fa-f]{1,%d}" % MAX_SIZE_DIGITS)

_SIZE_LINE = 0
_DATA = 1
_DATA_END = 2
_TRAILERS = 3
_DONE = 4


def _one_whole_chunk(data: bytes) -> bytes | None:
    """The body of ``data`` if it is exactly one plain non-empty chunk, else None.

    The usual read of a stream from Bedrock: one event-stream frame framed as
    one chunk. Taking it with one slice is about three times cheaper than the
    general loop; anything else (several chunks, a split, an extension, the
    last chunk) returns None and goes the general way.
    """
    line_end = data.find(b"\r\n", 0, MAX_SIZE_DIGITS + 2)
    if line_end < 1 or _SIZE_DIGITS.fullmatch(data, 0, line_end) is None:
        return None
    start = line_end + 2
    stop = start + int(data[:line_end], 16)
    if stop == start or len(data) != stop + 2 or data[stop:] != b"\r\n":
        return None
    return data[start:stop]


class ChunkedBodyError(UpstreamProtocolError):
    """The chunked framing of a response body is broken."""


class ChunkedDecoder:
    """Feed raw bytes of a chunked body; get the body bytes back.

    Attributes:
        is_done: the last chunk and the trailer section have been read.
    """

    __slots__ = ("_pending", "_remaining", "_state", "_trailer_bytes")

    def __init__(self) -> None:
        self._state = _SIZE_LINE
        self._remaining = 0
        self._pending = bytearray()
        self._trailer_bytes = 0

    @property
    def is_done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """Decode what ``data`` completes; keep an incomplete line for later.

        Returns:
            The body bytes found, possibly ``b""``.

        Raises:
            ChunkedBodyError: the framing is broken, or bytes follow the end.
        """
        if self._state == _SIZE_LINE and not self._pending:
            body = _one_whole_chunk(data)
            if body is not None:
                return body
        if self._state == _DONE:
            if data:
                raise ChunkedBodyError("data after the end of a chunked body")
            return b""
        if self._pending:
            self._pending += data
            buffer: bytes = bytes(self._pending)
            self._pending = bytearray()
        else:
            buffer = data
        view = memoryview(buffer)
        end = len(buffer)
        position = 0
        pieces: list[memoryview] = []
        state = self._state
        remaining = self._remaining
        size_digits = _SIZE_DIGITS.fullmatch

        # The hot loop keeps its state in locals and handles the usual shapes
        # inline: "<hex>\r\n", data, "\r\n". Anything else (extensions,
        # trailers, lines split across reads, errors) goes the slow way.
        while position < end:
            if state == _DATA:
                taken = min(end - position, remaining)
                pieces.append(view[position : position + taken])
                position += taken
                remaining -= taken
                if remaining:
                    break
                if buffer[position : position + 2] == b"\r\n":
                    position += 2
                    state = _SIZE_LINE
                else:
                    state = _DATA_END
                continue

            if state == _SIZE_LINE:
                line_end = buffer.find(b"\r\n", position)
                if line_end >= 0 and size_digits(buffer, position, line_end) is not None:
                    remaining = int(buffer[position:line_end], 16)
                    position = line_end + 2
                    state = _DATA if remaining else _TRAILERS
                    continue

            self._state, self._remaining = state, remaining
            line_end = buffer.find(b"\n", position)
            if line_end < 0:
                self._keep_partial_line(view[position:end])
                position = end
                break
            self._take_line(buffer[position:line_end])
            position = line_end + 1
            state, remaining = self._state, self._remaining
            if state == _DONE and position < end:
                raise ChunkedBodyError("data after the end of a chunked body")

        self._state, self._remaining = state, remaining
        if state == _DONE and position < end:
            raise ChunkedBodyError("data after the end of a chunked body")
        return b"".join(pieces)

    def _keep_partial_line(self, partial: memoryview) -> None:
        limit = MAX_TRAILER_BYTES if self._state == _TRAILERS else MAX_SIZE_LINE_BYTES
        if len(partial) > limit:
            raise ChunkedBodyError("chunk framing line too long")
        self._pending += partial

    def _take_line(self, line: bytes) -> None:
        if not line.endswith(b"\r"):
            raise ChunkedBodyError("chunk framing line does not end in CRLF")
        line = line[:-1]

        if self._state == _DATA_END:
            if line:
                raise ChunkedBodyError("chunk data longer than its size")
            self._state = _SIZE_LINE
        elif self._state == _SIZE_LINE:
            self._start_chunk(line)
        else:
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > MAX_TRAILER_BYTES:
                raise ChunkedBodyError("chunked trailer section too long")
            if not line:
                self._state = _DONE

    def _start_chunk(self, line: bytes) -> None:
        if len(line) > MAX_SIZE_LINE_BYTES:
            raise ChunkedBodyError("chunk size line too long")
        digits = line.split(b";", 1)[0].rstrip(b" \t") if b";" in line else line
        if _SIZE_DIGITS.fullmatch(digits) is None:
            raise ChunkedBodyError(f"bad chunk size {line[:40]!r}")
        size = int(digits, 16)
        if size == 0:
            self._state = _TRAILERS
        else:
            self._remaining = size
            self._state = _DATA
