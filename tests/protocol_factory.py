"""Builders for exact event-stream and Bedrock chunk bytes, for protocol tests."""

from __future__ import annotations

import base64
import json
import pathlib
import struct
import zlib
from collections.abc import Sequence
from typing import Any

CHUNK_HEADERS = {
    ":event-type": "chunk",
    ":content-type": "application/json",
    ":message-type": "event",
}


def split_at_sizes(data: bytes, sizes: Sequence[int] | None = None) -> list[bytes]:
    """``data`` cut into pieces of ``sizes`` bytes, then the rest (maybe empty).

    Without ``sizes``, one piece: the whole of ``data``. A parser fed the
    pieces in order must give what it gives for the whole.
    """
    if sizes is None:
        return [data]
    pieces = []
    start = 0
    for size in sizes:
        pieces.append(data[start : start + size])
        start += size
    pieces.append(data[start:])
    return pieces


def header(name: str, value_type: int, value: bytes = b"") -> bytes:
    """One raw header: the value bytes must already be in the type's wire form."""
    raw_name = name.encode()
    return bytes((len(raw_name),)) + raw_name + bytes((value_type,)) + value


def string_header(name: str, value: str, value_type: int = 7) -> bytes:
    raw = value.encode()
    return header(name, value_type, struct.pack(">H", len(raw)) + raw)


def frame(raw_headers: bytes, payload: bytes) -> bytes:
    """A frame with correct lengths and CRCs around any header block."""
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return head + struct.pack(">I", zlib.crc32(head))


def frame_with_prelude(total: int, headers_length: int, rest: bytes = b"") -> bytes:
    """A prelude with a valid CRC claiming any lengths, then ``rest``."""
    prelude = struct.pack(">II", total, headers_length)
    return prelude + struct.pack(">I", zlib.crc32(prelude)) + rest


def string_headers(headers: dict[str, str]) -> bytes:
    return b"".join(string_header(name, value) for name, value in headers.items())


def chunk_payload(event: bytes, padding: str = "abcdefgh") -> bytes:
    encoded = base64.b64encode(event).decode()
    return json.dumps({"bytes": encoded, "p": padding}, separators=(",", ":")).encode()


def chunk_frame(event: dict[str, Any] | bytes) -> bytes:
    """A Bedrock ``chunk`` frame carrying one Anthropic event."""
    if isinstance(event, dict):
        event = json.dumps(event, separators=(",", ":")).encode()
    return frame(string_headers(CHUNK_HEADERS), chunk_payload(event))


def exception_frame(exception_type: str, payload: bytes) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(string_headers(headers), payload)


def text_reply_events(
    text_pieces: list[str], model: str = "anthropic.claude-sonnet-4-5-20250929-v1:0"
) -> list[dict[str, Any]]:
    """The Anthropic events of a plain text reply, as Bedrock streams them."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_bdrk_01",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 12,
                    "cache_creation_input_tokens": 30,
                    "cache_read_input_tokens": 4000,
                    "output_tokens": 1,
                },
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        },
    ]
    for piece in text_pieces:
        events.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
        )
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(text_pieces)},
        },
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": 12,
                "outputTokenCount": len(text_pieces),
                "invocationLatency": 300,
                "firstByteLatency": 100,
            },
        },
    ]
    return events


# Recorded Bedrock frames (copied from the shared client recordings).
WIRE_EXAMPLES = pathlib.Path(__file__).parent / "data" / "bedrock_wire_examples.json"


def load_wire_examples() -> dict[str, Any]:
    examples: dict[str, Any] = json.loads(WIRE_EXAMPLES.read_text())
    return examples
