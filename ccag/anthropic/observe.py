"""What a response tells us for metrics and spend, read as it passes.

The observer sees every Anthropic event of a streamed reply (or the whole
message of a non-streamed one) and keeps token usage, the tools the model
called, the stop reason and whether content has begun. It parses JSON only for
the few event types that carry any of that; text, thinking and tool-input
deltas, which are nearly all of a stream, are counted by their name alone.
Streaming and non-streaming runs of the same reply end with the same numbers.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ccag.errors import ProtocolError

# Content block types whose ``name`` is a tool the model called.
TOOL_CALL_BLOCK_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})

# Every tool-call block type ends in this; a content_block_start without it
# cannot start a tool call and is not parsed.
_TOOL_CALL_MARKER = b'tool_use"'

# Events after which content is on its way to the client.
_CONTENT_EVENTS = frozenset({b"content_block_start", b"content_block_delta"})


@attrs.define
class Usage:
    """Token counts of one reply.

    Attributes:
        input_tokens: uncached input tokens.
        output_tokens: generated tokens.
        cache_read_tokens: input tokens read from the prompt cache.
        cache_write_tokens: input tokens written to the prompt cache.
        cache_write_1h_tokens: the part of ``cache_write_tokens`` written with
            the 1-hour TTL (usage's ``cache_creation`` breakdown); the rest
            used the default 5-minute TTL.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0


# Anthropic usage field -> our Usage attribute.
_USAGE_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)


class ResponseObserver:
    """Collects usage, tool calls and progress of one reply.

    Attributes:
        usage: the token counts so far (final once the reply ends).
        tool_calls: names of the tools the model called, in order.
        stop_reason: why the model stopped, once known.
        saw_message_stop: the reply ended normally.
        content_started: content has begun (for time to first token).
        error_type: the Anthropic error type of an ``error`` event, if any.
        error_message: its message.
    """

    def __init__(self) -> None:
        self.usage = Usage()
        self.tool_calls: list[str] = []
        self.stop_reason: str | None = None
        self.saw_message_stop = False
        self.content_started = False
        self.error_type: str | None = None
        self.error_message: str | None = None

    def observe_event(self, event_type: bytes, data: bytes) -> None:
        """Look at one streamed event, parsing it only if it matters.

        Args:
            event_type: the SSE event name, such as ``b"message_delta"``.
            data: the event's JSON, as sent.

        Raises:
            ProtocolError: an event we need to read is not a JSON object.
        """
        if event_type in _CONTENT_EVENTS:
            self.content_started = True
            if event_type == b"content_block_delta" or _TOOL_CALL_MARKER not in data:
                return
        elif event_type == b"message_stop":
            self.saw_message_stop = True
            return
        elif event_type not in (b"message_start", b"message_delta", b"error"):
            return
        self.observe_event_object(event_type, _parse_object(data))

    def observe_event_object(self, event_type: bytes, event: dict[str, Any]) -> None:
        """Look at one streamed event that the caller has already parsed."""
        if event_type == b"message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self._take_usage(message.get("usage"))
        elif event_type == b"message_delta":
            self._take_usage(event.get("usage"))
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
        elif event_type == b"content_block_start":
            self.content_started = True
            self._take_tool_call(event.get("content_block"))
        elif event_type == b"content_block_delta":
            self.content_started = True
        elif event_type == b"message_stop":
            self.saw_message_stop = True
        elif event_type == b"error":
            error = event.get("error")
            if isinstance(error, dict):
                self.error_type = _text_or_none(error.get("type"))
                self.error_message = _text_or_none(error.get("message"))

    def observe_message(self, message: dict[str, Any]) -> None:
        """Look at a whole non-streamed message, as the stream would have."""
        self._take_usage(message.get("usage"))
        content = message.get("content")
        if isinstance(content, list):
            if content:
                self.content_started = True
            for block in content:
                self._take_tool_call(block)
        if isinstance(message.get("stop_reason"), str):
            self.stop_reason = message["stop_reason"]
        self.saw_message_stop = True

    def _take_usage(self, usage: object) -> None:
        # Later numbers replace earlier ones: Anthropic's streamed counts are
        # cumulative, and message_delta repeats input numbers when it has them.
        if not isinstance(usage, dict):
            return
        for field, attribute in _USAGE_FIELDS:
            value = usage.get(field)
            if type(value) is int and value >= 0:
                setattr(self.usage, attribute, value)

        # The cache writes split by TTL; without it every write used the
        # default 5-minute TTL (or an earlier event's split stands).
        breakdown = usage.get("cache_creation")
        if isinstance(breakdown, dict):
            value = breakdown.get("ephemeral_1h_input_tokens")
            if type(value) is int and value >= 0:
                self.usage.cache_write_1h_tokens = value

    def _take_tool_call(self, block: object) -> None:
        if (
            not isinstance(block, dict)
            or block.get("type") not in TOOL_CALL_BLOCK_TYPES
        ):
            return
        name = block.get("name")
        if isinstance(name, str):
            self.tool_calls.append(name)


def _parse_object(data: bytes) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("an Anthropic event is not valid JSON") from None
    if not isinstance(event, dict):
        raise ProtocolError("an Anthropic event is not a JSON object")
    return event


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
