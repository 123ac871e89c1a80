"""Fuzz target: the Bedrock stream translator.

Invariants: nothing escapes ``feed`` or ``close`` (every fault becomes an
ApiError); feeding whole or a byte at a time gives the same SSE bytes, the
same error and the same observed numbers; the output is well-formed SSE with
at most one ``error`` event, which is last, and at most one ``message_stop``,
also last; every event name is a plain word.

Inputs whose first byte is odd are built into frames: the rest is split into
pieces, and each piece's first byte chooses what it becomes (a chunk frame
around the piece, a chunk whose event opens like Anthropic's, a known-good
Anthropic event, an exception frame, or raw bytes).

Run: ``python fuzz/fuzz_stream.py [atheris args]``
"""

from __future__ import annotations

import base64
import json
import re

from protocol_runner import instrumented, run

with instrumented():
    from ccag.anthropic.observe import ResponseObserver
    from ccag.anthropic.stream import BedrockStreamTranslator, TranslatedChunk
    from ccag.errors import ApiError
    from ccag.eventstream import encode_message
    from ccag.sse import SSEDecoder

_PIECE_SEPARATOR = b"\xfe\xfe"
_CHUNK_HEADERS = {
    ":event-type": "chunk",
    ":content-type": "application/json",
    ":message-type": "event",
}
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

_GOOD_EVENTS = [
    b'{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"x","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}',
    b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    b'{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"Bash","input":{}}}',
    b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}',
    b'{"type":"content_block_stop","index":0}',
    b'{"type":"ping"}',
    b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}',
    b'{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3}}',
    b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
]


def _chunk(event: bytes) -> bytes:
    payload = b'{"bytes":"' + base64.b64encode(event) + b'","p":"abc"}'
    return encode_message(_CHUNK_HEADERS, payload)


def build_stream(body: bytes) -> bytes:
    parts = []
    for piece in body.split(_PIECE_SEPARATOR):
        kind, rest = (piece[0] % 6, piece[1:]) if piece else (0, b"")
        if kind == 0:
            parts.append(_chunk(rest))
        elif kind == 1:
            parts.append(_chunk(b'{"type":"' + rest))
        elif kind == 2:
            index = rest[0] % len(_GOOD_EVENTS) if rest else 0
            parts.append(_chunk(_GOOD_EVENTS[index]))
        elif kind == 3:
            parts.append(
                encode_message(
                    {
                        ":message-type": "exception",
                        ":exception-type": "throttlingException",
                    },
                    rest,
                )
            )
        elif kind == 4:
            parts.append(encode_message(_CHUNK_HEADERS, rest))
        else:
            parts.append(rest)
    return b"".join(parts)


def _translate(
    data: bytes, byte_by_byte: bool
) -> tuple[bytes, tuple[object, ...], ResponseObserver]:
    observer = ResponseObserver()
    translator = BedrockStreamTranslator("claude-test", observer, max_frame_bytes=8192)
    chunks: list[TranslatedChunk] = []
    if byte_by_byte:
        chunks = [translator.feed(data[i : i + 1]) for i in range(len(data))]
    else:
        chunks = [translator.feed(data)]
    closing = translator.close()

    errors = [c.error for c in chunks if c.error is not None]
    assert len(errors) <= 1
    assert closing is None or not errors
    error = errors[0] if errors else closing
    summary: tuple[object, ...] = ()
    if error is not None:
        assert isinstance(error, ApiError)
        summary = (error.status, error.error_type, error.message)
    finished = [c.finished for c in chunks]
    assert finished == sorted(finished), "finished went back to False"
    # The caller sends the closing error's event, as the last thing.
    sse = b"".join(c.sse for c in chunks) + (closing.sse_event() if closing else b"")
    return sse, summary, observer


def check(data: bytes) -> None:
    stream = build_stream(data[1:]) if data and data[0] % 2 == 1 else data

    whole_sse, whole_error, whole_observer = _translate(stream, byte_by_byte=False)
    split_sse, split_error, split_observer = _translate(stream, byte_by_byte=True)

    assert whole_sse == split_sse
    assert whole_error == split_error
    assert whole_observer.usage == split_observer.usage
    assert whole_observer.tool_calls == split_observer.tool_calls

    events = SSEDecoder(max_line_bytes=1 << 30, max_event_bytes=1 << 30).feed(whole_sse)
    assert not whole_sse or whole_sse.endswith(b"\n\n")
    event_lines = [
        line for line in whole_sse.split(b"\n") if line.startswith(b"event: ")
    ]
    assert len(event_lines) == len(events)
    names = [e.event for e in events]
    assert all(_EVENT_NAME.fullmatch(name) for name in names), names
    assert names.count("error") <= 1 and names.count("message_stop") <= 1
    if "error" in names:
        assert names[-1] == "error"
        assert json.loads(events[-1].data)["type"] == "error"
    if "message_stop" in names:
        assert names[-1] == "message_stop"
        assert events[-1].data == b'{"type":"message_stop"}'
        assert whole_error == ()


SEEDS = [
    b"\x01" + b"\xfe\xfe".join(b"\x02" + bytes((i,)) for i in (0, 1, 3, 3, 4, 6, 7)),
    b'\x01\x02\x00\xfe\xfe\x03{"message":"slow"}',
    b'\x01\x01content_block_delta","x":1}',
]


def main() -> None:
    run(check, SEEDS)


if __name__ == "__main__":
    main()
