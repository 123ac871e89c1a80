"""Bedrock's streamed reply, turned into Anthropic SSE as it arrives.

Bedrock's InvokeModelWithResponseStream answers with event-stream frames;
each ``chunk`` frame's payload is ``{"bytes": "<base64>", "p": "<padding>"}``
and the base64 decodes to the exact JSON of one Anthropic event. Those bytes
go out unchanged as the SSE ``data:`` line, named by the event's ``type``,
which is sliced from the JSON's fixed opening rather than parsed. Only three
kinds of event are parsed and re-encoded: ``message_start`` (the model name
becomes the one the client asked for), ``error`` (it ends the stream), and
any event carrying Bedrock's own ``amazon-bedrock-*`` keys (dropped;
``message_stop`` has one). An exception frame, or bytes we cannot read,
becomes one SSE ``error`` event and the end of the stream; nothing here ever
invents a ``message_stop``.
"""

from __future__ import annotations

import binascii
import json
import re
import struct
import zlib
from typing import Any

import attrs

from ccag.anthropic.errors import (
    UpstreamApiError,
    error_from_error_event,
    error_from_exception_frame,
    malformed_body_error,
    malformed_stream_error,
    truncated_stream_error,
)
from ccag.anthropic.observe import ResponseObserver
from ccag.anthropic.wirejson import dump_json
from ccag.errors import ApiError, EventStreamError, ProtocolError
from ccag.eventstream import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_HEADERS_BYTES,
    EventStreamDecoder,
    Frame,
    decode_headers,
)
from ccag.sse import encode_event

# The compact opening every Bedrock chunk payload and Anthropic event has;
# anything else takes the slower, general path through json.loads.
_CHUNK_OPENING = b'{"bytes":"'
_EVENT_OPENING = b'{"type":"'

# Bedrock adds keys with this prefix (invocation metrics) to some events.
BEDROCK_KEY_PREFIX = "amazon-bedrock-"
_BEDROCK_KEY_MARKER = b'"amazon-bedrock-'

# Anthropic event names are short snake_case words; a name outside this shape
# could break the SSE framing or a client's dispatch, so it is refused.
_EVENT_NAME = re.compile(rb"[a-z][a-z0-9_]{0,63}")

# The event-stream prelude (total length, headers length, prelude CRC) and the
# sizes around it; see ccag.eventstream for the format.
_PRELUDE = struct.Struct(">III")
_CRC = struct.Struct(">I")
_PRELUDE_BYTES = 12
_MIN_FRAME_BYTES = 16

_KNOWN_EVENT_NAMES = frozenset(
    {
        b"message_start",
        b"message_delta",
        b"message_stop",
        b"content_block_start",
        b"content_block_delta",
        b"content_block_stop",
        b"ping",
        b"error",
    }
)


@attrs.frozen
class TranslatedChunk:
    """What one ``feed`` produced.

    Attributes:
        sse: the SSE bytes for the client, all frames of the read together,
            so that they go out in one write (may be empty).
        error: the error that ended the stream in this read; its SSE event is
            already the last thing in ``sse``.
        finished: the stream is over (``message_stop`` or an error); later
            input is ignored.
    """

    sse: bytes
    error: ApiError | None = None
    finished: bool = False


_NOTHING = TranslatedChunk(b"")
_NOTHING_FINISHED = TranslatedChunk(b"", None, True)


class _StreamFault(Exception):
    """Internal: the stream ends with ``error``."""

    def __init__(self, error: UpstreamApiError) -> None:
        super().__init__(error.message)
        self.error = error


class BedrockStreamTranslator:
    """Turns Bedrock event-stream bytes into Anthropic SSE bytes.

    Args:
        requested_model: the model name the client sent; it replaces
            Bedrock's model id in ``message_start``.
        observer: sees every forwarded event (usage, tools, progress).
        max_frame_bytes: the largest event-stream frame accepted.
        fast_path: translate whole ``chunk`` frames without building a
            :class:`~ccag.eventstream.Frame` (see ``_translate_whole_frames``);
            False sends every byte through the general decoder, which tests
            use to check that both give the same output.
    """

    def __init__(
        self,
        requested_model: str,
        observer: ResponseObserver,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        *,
        fast_path: bool = True,
    ) -> None:
        self._requested_model = requested_model
        self._observer = observer
        self._decoder = EventStreamDecoder(max_frame_bytes)
        self._max_frame_bytes = max(max_frame_bytes, _MIN_FRAME_BYTES)
        self._fast_path = fast_path

        # The raw header block of the chunk frames seen so far: Bedrock sends
        # the same one on every chunk, and a frame carrying exactly these
        # bytes needs no header parsing.
        self._chunk_headers: bytes | None = None
        self._finished = False
        self._saw_message_stop = False
        self._error: ApiError | None = None

    @property
    def finished(self) -> bool:
        """The stream ended, normally or with an error."""
        return self._finished

    @property
    def error(self) -> ApiError | None:
        """The error that ended the stream, if one did."""
        return self._error

    def feed(self, raw: bytes) -> TranslatedChunk:
        """Translate the bytes of one read from Bedrock."""
        if self._finished:
            return _NOTHING_FINISHED

        out: list[bytes] = []
        if self._fast_path and not self._decoder.has_partial_frame:
            raw = bytes(raw)
            try:
                taken = self._translate_whole_frames(raw, out)
            except _StreamFault as fault:
                return self._end_with(b"".join(out), fault.error)
            if self._saw_message_stop:
                self._finished = True
                return TranslatedChunk(b"".join(out), None, True)
            if taken == len(raw):
                return TranslatedChunk(b"".join(out)) if out else _NOTHING
            raw = raw[taken:]

        try:
            frames = self._decoder.feed(raw)
        except EventStreamError:
            if out:
                # As the decoder does itself: what was decoded goes out, and
                # the fault, now pending in the decoder, ends the stream at
                # the next feed or at close.
                return TranslatedChunk(b"".join(out))
            return self._end_with(b"", malformed_stream_error())

        for frame in frames:
            try:
                sse = self._translate_frame(frame)
            except _StreamFault as fault:
                return self._end_with(b"".join(out), fault.error)
            if sse:
                out.append(sse)
            if self._saw_message_stop:
                self._finished = True
                return TranslatedChunk(b"".join(out), None, True)
        return TranslatedChunk(b"".join(out)) if out else _NOTHING

    def close(self) -> ApiError | None:
        """Declare Bedrock's stream over; the error to send, if any.

        Returns:
            None if the stream already finished (normally, or with an error
            that was sent); otherwise the error for a stream that stopped
            before ``message_stop``, whose ``sse_event()`` the caller sends.
        """
        if self._finished:
            return None
        self._finished = True
        try:
            self._decoder.close()
        except EventStreamError:
            self._error = malformed_stream_error()
        else:
            self._error = truncated_stream_error()
        return self._error

    def _end_with(self, sse: bytes, error: ApiError) -> TranslatedChunk:
        self._finished = True
        self._error = error
        return TranslatedChunk(sse + error.sse_event(), error, True)

    def _translate_whole_frames(self, raw: bytes, out: list[bytes]) -> int:
        """Translate the leading whole chunk frames of ``raw`` into ``out``.

        The fast path for a read that starts on a frame boundary: the prelude
        and message CRCs are checked as the general decoder checks them, but
        a frame whose header block is the known chunk block goes straight to
        its payload. At the first frame that is anything else (another
        header block, a bad CRC or length, a partial frame) it stops and
        returns the offset reached; the general decoder takes the rest, so
        unusual input is read, or refused, exactly as before.

        Returns:
            How many bytes of ``raw`` were consumed.
        """
        end = len(raw)
        offset = 0
        max_frame_bytes = self._max_frame_bytes
        while end - offset >= _MIN_FRAME_BYTES and not self._saw_message_stop:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(raw, offset)
            frame_end = offset + total
            if (
                total < _MIN_FRAME_BYTES
                or total > max_frame_bytes
                or frame_end > end
                or headers_length > total - _MIN_FRAME_BYTES
                or zlib.crc32(raw[offset : offset + 8]) != prelude_crc
            ):
                break
            crc_at = frame_end - 4
            # The message CRC covers the prelude too; its CRC is the seed.
            if (
                zlib.crc32(raw[offset + 8 : crc_at], prelude_crc)
                != _CRC.unpack_from(raw, crc_at)[0]
            ):
                break

            headers_at = offset + _PRELUDE_BYTES
            payload_at = headers_at + headers_length
            known = self._chunk_headers
            is_known = (
                known is not None
                and headers_length == len(known)
                and raw.startswith(known, headers_at)
            )
            if not is_known and not self._learn_chunk_headers(
                raw[headers_at:payload_at]
            ):
                break

            try:
                sse = self._translate_event(_chunk_event(raw[payload_at:crc_at]))
            except (ValueError, ProtocolError, RecursionError):
                raise _StreamFault(malformed_stream_error()) from None
            out.append(sse)
            offset = frame_end
        return offset

    def _learn_chunk_headers(self, raw_headers: bytes) -> bool:
        """Remember ``raw_headers`` if they are a chunk event's; True if so."""
        if len(raw_headers) > MAX_HEADERS_BYTES:
            return False
        try:
            headers = decode_headers(raw_headers)
        except EventStreamError:
            return False
        if (
            headers.get(":message-type") != "event"
            or headers.get(":event-type") != "chunk"
        ):
            return False
        self._chunk_headers = raw_headers
        return True

    def _translate_frame(self, frame: Frame) -> bytes:
        # Plain dict lookups: this runs once per event of every stream.
        message_type = frame.headers.get(":message-type")
        if message_type == "event":
            if frame.headers.get(":event-type") != "chunk":
                return b""
            try:
                return self._translate_event(_chunk_event(frame.payload))
            except (ValueError, ProtocolError, RecursionError):
                raise _StreamFault(malformed_stream_error()) from None
        if message_type == "exception":
            raise _StreamFault(
                error_from_exception_frame(frame.exception_type or "", frame.payload)
            )
        if message_type == "error":
            # The event-stream protocol's own error frame names its cause in
            # headers rather than in the payload.
            code = frame.headers.get(":error-code")
            text = frame.headers.get(":error-message")
            payload = json.dumps({"message": text if isinstance(text, str) else ""})
            raise _StreamFault(
                error_from_exception_frame(
                    code if isinstance(code, str) else "", payload.encode()
                )
            )
        return b""

    def _translate_event(self, event: bytes) -> bytes:
        name, parsed = _event_name(event)

        if name == b"error":
            parsed = parsed if parsed is not None else _parse_object(event)
            self._observer.observe_event_object(name, parsed)
            raise _StreamFault(error_from_error_event(parsed))

        if name == b"message_start" or _BEDROCK_KEY_MARKER in event:
            parsed = parsed if parsed is not None else _parse_object(event)
            if name == b"message_start":
                message = parsed.get("message")
                if not isinstance(message, dict):
                    raise ProtocolError("message_start carries no message")
                message["model"] = self._requested_model
            if _drop_bedrock_keys(parsed) or name == b"message_start":
                event = dump_json(parsed)

        if name == b"message_stop":
            self._saw_message_stop = True
        if parsed is None:
            self._observer.observe_event(name, event)
        else:
            self._observer.observe_event_object(name, parsed)
        return encode_event(name, event)


def translate_message_body(
    body: bytes, requested_model: str, observer: ResponseObserver
) -> bytes:
    """A non-streamed Bedrock reply, as the client's Anthropic message.

    Sets ``model`` to the name the client asked for, drops Bedrock's own keys
    and lets ``observer`` see the message.

    Raises:
        ApiError: 502 ``api_error`` if the body is not a JSON object.
    """
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise malformed_body_error() from None
    if not isinstance(message, dict):
        raise malformed_body_error()

    message["model"] = requested_model
    _drop_bedrock_keys(message)
    observer.observe_message(message)
    return dump_json(message)


def _chunk_event(payload: bytes) -> bytes:
    """The Anthropic event JSON inside a chunk frame's payload."""
    if payload.startswith(_CHUNK_OPENING) and payload.endswith(b"}"):
        start = len(_CHUNK_OPENING)
        end = payload.find(b'"', start)
        if end > 0 and payload[end + 1 : end + 2] in (b",", b"}"):
            try:
                return binascii.a2b_base64(payload[start:end], strict_mode=True)
            except binascii.Error:
                pass  # e.g. an escaped "\/": let the JSON parser unescape it

    fields = _parse_object(payload)
    encoded = fields.get("bytes")
    if not isinstance(encoded, str) or not encoded.isascii():
        raise ProtocolError("a Bedrock chunk carries no base64 bytes")
    return binascii.a2b_base64(encoded.encode(), strict_mode=True)


def _event_name(event: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """The event's ``type``, and the parsed event if parsing was needed."""
    if event.startswith(_EVENT_OPENING):
        start = len(_EVENT_OPENING)
        end = event.find(b'"', start)
        name = event[start:end]
        if end > start and (name in _KNOWN_EVENT_NAMES or _EVENT_NAME.fullmatch(name)):
            return name, None

    parsed = _parse_object(event)
    name_text = parsed.get("type")
    if not isinstance(name_text, str) or not name_text.isascii():
        raise ProtocolError("an Anthropic event has no type")
    name = name_text.encode()
    if _EVENT_NAME.fullmatch(name) is None:
        raise ProtocolError("an Anthropic event type is not a plain name")
    return name, parsed


def _parse_object(data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("an Anthropic event is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ProtocolError("an Anthropic event is not a JSON object")
    return parsed


def _drop_bedrock_keys(event: dict[str, Any]) -> bool:
    """Remove Bedrock's top-level keys; True if there were any."""
    bedrock_keys = [key for key in event if key.startswith(BEDROCK_KEY_PREFIX)]
    for key in bedrock_keys:
        del event[key]
    return bool(bedrock_keys)
