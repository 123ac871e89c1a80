"""Micro-benchmark of the streaming hot path: Bedrock frames in, SSE bytes out.

A realistic reply (message_start, a text block of 50 deltas, message_delta,
message_stop with Bedrock's metrics) is fed to the translator one frame per
read (how Bedrock's frames usually arrive) and all in one read. CPU time is
measured, so a busy machine skews the numbers less.

Run: ``python perf/bench_protocol.py``
"""

from __future__ import annotations

import base64
import json
import time
import timeit
from typing import Any

from ccag.anthropic.observe import ResponseObserver
from ccag.anthropic.stream import BedrockStreamTranslator
from ccag.eventstream import EventStreamDecoder, encode_message

DELTAS = 50
REPETITIONS = 2000
_CHUNK_HEADERS = {
    ":event-type": "chunk",
    ":content-type": "application/json",
    ":message-type": "event",
}


def _chunk(event: dict[str, Any]) -> bytes:
    encoded = base64.b64encode(json.dumps(event, separators=(",", ":")).encode())
    payload = b'{"bytes":"' + encoded + b'","p":"abcdefghijklmnop"}'
    return encode_message(_CHUNK_HEADERS, payload)


def reply_frames() -> list[bytes]:
    usage = {"input_tokens": 1000, "cache_read_input_tokens": 5000, "output_tokens": 1}
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m"}
    text = {"type": "text_delta", "text": "Some words of text here "}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**start, "content": [], "usage": usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        *[{"type": "content_block_delta", "index": 0, "delta": text}] * DELTAS,
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"x": 1}},
    ]
    return [_chunk(event) for event in events]


def main() -> None:
    frames = reply_frames()
    whole = b"".join(frames)

    def frame_per_read() -> None:
        translator = BedrockStreamTranslator("claude", ResponseObserver())
        for frame in frames:
            translator.feed(frame)

    def one_read() -> None:
        BedrockStreamTranslator("claude", ResponseObserver()).feed(whole)

    def decoder_only() -> None:
        decoder = EventStreamDecoder()
        for frame in frames:
            decoder.feed(frame)

    for name, run in [
        ("translator, one frame per read", frame_per_read),
        ("translator, whole reply in one read", one_read),
        ("event-stream decoder alone", decoder_only),
    ]:
        seconds = min(
            timeit.repeat(run, number=REPETITIONS, repeat=5, timer=time.process_time)
        )
        per_event = seconds / REPETITIONS / len(frames)
        print(
            f"{name}: {per_event * 1e6:.2f} us/event, "
            f"{1 / per_event:,.0f} events/s ({len(frames)} events per reply)"
        )


if __name__ == "__main__":
    main()
