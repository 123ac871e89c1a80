import base64
import json
from typing import Any

import pytest

from ccag.anthropic.observe import ResponseObserver, Usage
from ccag.anthropic.stream import (
    BedrockStreamTranslator,
    TranslatedChunk,
    translate_message_body,
)
from ccag.errors import ApiError
from ccag.sse import SSEDecoder, SSEEvent
from tests.protocol_factory import (
    CHUNK_HEADERS,
    chunk_frame,
    frame,
    load_wire_examples,
    split_at_sizes,
    string_headers,
    text_reply_events,
)

WIRE = load_wire_examples()
RECORDED_STREAM = base64.b64decode(WIRE["aws_eventstream"]["whole_stream_base64"])
RECORDED_EXCEPTION = base64.b64decode(
    WIRE["aws_eventstream"]["exception_frame"]["base64"]
)
MALFORMED = "Bedrock sent a malformed event stream"


def translate(
    raw: bytes, pieces: list[int] | None = None, model: str = "claude-sonnet-4-5"
) -> tuple[list[TranslatedChunk], ResponseObserver, BedrockStreamTranslator]:
    observer = ResponseObserver()
    translator = BedrockStreamTranslator(model, observer)
    chunks = [translator.feed(piece) for piece in split_at_sizes(raw, pieces)]
    return chunks, observer, translator


def sse_events(chunks: list[TranslatedChunk]) -> list[SSEEvent]:
    return SSEDecoder().feed(b"".join(c.sse for c in chunks))


def stream_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(chunk_frame(event) for event in events)


def test_translator_recorded_stream_becomes_the_anthropic_stream() -> None:
    (chunk,), observer, translator = translate(RECORDED_STREAM)
    expected = SSEDecoder().feed(WIRE["anthropic_sse_example"]["body"].encode())

    got = sse_events([chunk])

    assert [e.event for e in got] == [e.event for e in expected]
    for mine, theirs in zip(got, expected):
        wanted = json.loads(theirs.data)
        if wanted["type"] == "message_start":
            wanted["message"]["model"] = "claude-sonnet-4-5"
        assert json.loads(mine.data) == wanted
    assert chunk.finished and chunk.error is None
    assert translator.close() is None
    assert observer.usage == Usage(input_tokens=10, output_tokens=2)


def test_translator_forwards_event_bytes_unchanged() -> None:
    frames = WIRE["aws_eventstream"]["frames"]
    decoded = [base64.b64decode(f["payload_json"]["bytes"]) for f in frames]

    got = sse_events(translate(RECORDED_STREAM)[0])

    for mine, original in zip(got[1:-1], decoded[1:-1]):
        assert mine.data == original


def test_translator_frames_of_one_read_go_out_in_one_chunk() -> None:
    chunks, _, _ = translate(RECORDED_STREAM)

    assert len(chunks) == 1
    assert chunks[0].sse.count(b"\n\n") == 7


def test_translator_split_anywhere_gives_the_same_bytes() -> None:
    (whole,), _, _ = translate(RECORDED_STREAM)

    for cut in range(0, len(RECORDED_STREAM) + 1, 7):
        chunks, _, _ = translate(RECORDED_STREAM, [cut])
        assert b"".join(c.sse for c in chunks) == whole.sse
    chunks, observer, _ = translate(RECORDED_STREAM, [1] * len(RECORDED_STREAM))
    assert b"".join(c.sse for c in chunks) == whole.sse
    assert chunks[-1].finished
    assert observer.usage.output_tokens == 2


def test_translator_message_stop_loses_bedrock_metrics() -> None:
    got = sse_events(translate(stream_of(text_reply_events(["a"])))[0])

    assert got[-1] == SSEEvent("message_stop", b'{"type":"message_stop"}')
    assert all(b"amazon-bedrock" not in e.data for e in got)


def test_translator_drops_bedrock_keys_from_any_event() -> None:
    events = text_reply_events(["a"])
    events[-2]["amazon-bedrock-extra"] = {"x": 1}

    got = sse_events(translate(stream_of(events))[0])

    assert json.loads(got[-2].data) == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 1},
    }


def test_translator_text_that_mentions_bedrock_keys_is_untouched() -> None:
    events = text_reply_events(['the "amazon-bedrock-invocationMetrics" key'])

    got = sse_events(translate(stream_of(events))[0])

    assert got[2].data == json.dumps(events[2], separators=(",", ":")).encode()


def test_translator_rewrites_model_in_message_start_only() -> None:
    got = sse_events(
        translate(stream_of(text_reply_events(["a"])), model="claude-opus-4-1")[0]
    )

    start = json.loads(got[0].data)
    assert start["message"]["model"] == "claude-opus-4-1"
    assert start["message"]["usage"]["cache_read_input_tokens"] == 4000


def test_translator_every_data_object_has_the_type_of_its_event() -> None:
    got = sse_events(translate(stream_of(text_reply_events(["a", "b"])))[0])

    assert all(json.loads(e.data)["type"] == e.event for e in got)


def test_translator_exception_mid_stream_ends_with_one_error_event() -> None:
    events = text_reply_events(["a", "b"])[:3]
    raw = (
        stream_of(events)
        + RECORDED_EXCEPTION
        + chunk_frame(text_reply_events(["c"])[2])
    )

    chunks, observer, translator = translate(raw, [len(raw) - 5])

    got = sse_events(chunks)
    assert [e.event for e in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert json.loads(got[-1].data) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Too many requests"},
    }
    assert chunks[0].finished and chunks[0].error is not None
    assert chunks[0].error.status == 429
    assert chunks[1] == TranslatedChunk(b"", None, True)
    assert translator.close() is None
    assert not observer.saw_message_stop


def test_translator_error_event_inside_a_chunk_ends_the_stream() -> None:
    events = text_reply_events(["a"])[:2] + [
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
    ]

    (chunk,), observer, _ = translate(stream_of(events))

    assert sse_events([chunk])[-1] == SSEEvent(
        "error",
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    )
    assert chunk.finished and chunk.error is not None and chunk.error.status == 529
    assert observer.error_type == "overloaded_error"


def test_translator_protocol_error_frame_ends_the_stream() -> None:
    headers = {
        ":message-type": "error",
        ":error-code": "InternalFailure",
        ":error-message": "boom",
    }
    raw = stream_of(text_reply_events(["a"])[:1]) + frame(string_headers(headers), b"")

    (chunk,), _, _ = translate(raw)

    assert chunk.error is not None
    assert sse_events([chunk])[-1].event == "error"
    assert json.loads(sse_events([chunk])[-1].data)["error"]["message"] == "boom"


def test_translator_ignores_unknown_frames() -> None:
    unknown_message = frame(string_headers({":message-type": "surprise"}), b"\x00")
    other_event = frame(
        string_headers({":message-type": "event", ":event-type": "initial-response"}),
        b"{}",
    )
    no_headers = frame(b"", b"")
    events = text_reply_events(["a"])
    raw = (
        chunk_frame(events[0])
        + unknown_message
        + other_event
        + no_headers
        + stream_of(events[1:])
    )

    (chunk,), _, _ = translate(raw)

    assert [e.event for e in sse_events([chunk])] == [e["type"] for e in events]
    assert chunk.error is None


def test_translator_unknown_event_type_is_forwarded() -> None:
    events = text_reply_events(["a"])
    events.insert(2, {"type": "brand_new_event", "x": 1})

    got = sse_events(translate(stream_of(events))[0])

    assert got[2] == SSEEvent("brand_new_event", b'{"type":"brand_new_event","x":1}')


def test_translator_unusual_json_shapes_take_the_slow_path() -> None:
    spaced_event = b'{ "index": 0, "type": "content_block_stop" }'
    escaped_slash_payload = (
        json.dumps(
            {"bytes": base64.b64encode(b'{"type":"ping","s":"\xfb\xff"}').decode()}
        )
        .replace("/", "\\/")
        .encode()
    )
    assert b"\\/" in escaped_slash_payload
    events = text_reply_events(["a"])
    raw = (
        stream_of(events[:2])
        + chunk_frame(spaced_event)
        + frame(string_headers(CHUNK_HEADERS), escaped_slash_payload)
        + stream_of(events[-2:])
    )

    got = sse_events(translate(raw)[0])

    assert got[2] == SSEEvent("content_block_stop", spaced_event)
    assert got[3] == SSEEvent("ping", b'{"type":"ping","s":"\xfb\xff"}')
    assert got[-1].event == "message_stop"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"bytes":"not base64!","p":"x"}',
        b'{"bytes":"eyJ0eXBl","p":"x"}',  # valid base64, broken JSON inside
        b'{"p":"x"}',
        b"not json",
        b'{"bytes":7}',
        b'{"bytes":"' + base64.b64encode(b"[1,2]") + b'"}',
        b'{"bytes":"' + base64.b64encode(b'{"no_type":1}') + b'"}',
        b'{"bytes":"' + base64.b64encode(b'{"type":"bad name\\n"}') + b'"}',
        b'{"bytes":"' + base64.b64encode(b'{"type":"message_start"}') + b'"}',
        b'{"bytes":"' + base64.b64encode(b'{"type":"message_delta","usage":') + b'"}',
    ],
)
def test_translator_malformed_chunk_becomes_an_api_error(payload: bytes) -> None:
    raw = chunk_frame(text_reply_events(["a"])[0]) + frame(
        string_headers(CHUNK_HEADERS), payload
    )

    (chunk,), _, translator = translate(raw)

    got = sse_events([chunk])
    assert [e.event for e in got] == ["message_start", "error"]
    assert json.loads(got[-1].data)["error"] == {
        "type": "api_error",
        "message": MALFORMED,
    }
    assert chunk.finished and chunk.error is not None and chunk.error.status == 502
    assert translator.close() is None


def test_translator_bad_crc_becomes_an_api_error() -> None:
    raw = bytearray(RECORDED_STREAM)
    raw[-1] ^= 0xFF

    chunks, _, _ = translate(bytes(raw), [len(raw) - 10])

    got = sse_events(chunks)
    assert got[-2].event == "message_delta"
    assert got[-1].event == "error"
    assert chunks[-1].error is not None and chunks[-1].error.message == MALFORMED


def test_translator_close_without_message_stop_is_an_error() -> None:
    events = text_reply_events(["a"])[:-1]
    chunks, _, translator = translate(stream_of(events))

    error = translator.close()

    assert not chunks[0].finished
    assert isinstance(error, ApiError)
    assert (error.status, error.error_type) == (502, "api_error")
    assert b"message_stop" not in b"".join(c.sse for c in chunks)
    assert translator.close() is None
    assert translator.feed(chunk_frame(text_reply_events(["a"])[-1])).sse == b""


def test_translator_close_in_the_middle_of_a_frame_is_malformed() -> None:
    raw = stream_of(text_reply_events(["a"]))

    _, _, translator = translate(raw[:-3])

    error = translator.close()
    assert error is not None and error.message == MALFORMED


def test_translator_observer_sees_tool_calls_and_usage() -> None:
    events = text_reply_events([])
    events[1] = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "Read",
            "input": {},
        },
    }
    events[-2]["usage"] = {"output_tokens": 33}

    _, observer, _ = translate(stream_of(events))

    assert observer.tool_calls == ["Read"]
    assert observer.usage == Usage(12, 33, 4000, 30)
    assert observer.saw_message_stop and observer.stop_reason == "end_turn"


def test_translate_message_body_sets_model_and_observes() -> None:
    body = json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "content": [
                {"type": "text", "text": "héllo"},
                {"type": "tool_use", "id": "t", "name": "Bash", "input": {}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 12,
                "output_tokens": 5,
                "cache_read_input_tokens": 7,
            },
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12},
        }
    ).encode()
    observer = ResponseObserver()

    out = translate_message_body(body, "claude-sonnet-4-5", observer)

    message = json.loads(out)
    assert message["model"] == "claude-sonnet-4-5"
    assert "amazon-bedrock-invocationMetrics" not in message
    assert "héllo".encode() in out
    assert observer.usage == Usage(12, 5, 7, 0)
    assert observer.tool_calls == ["Bash"]


def test_translate_message_body_keeps_lone_surrogates_escaped() -> None:
    out = translate_message_body(
        b'{"content":[{"type":"text","text":"\\ud800"}]}', "m", ResponseObserver()
    )

    assert json.loads(out)["content"][0]["text"] == "\ud800"


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"\xff", b"[" * 100_000])
def test_translate_message_body_rejects_garbage(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        translate_message_body(body, "m", ResponseObserver())

    assert (caught.value.status, caught.value.error_type) == (502, "api_error")


def test_streamed_and_non_streamed_replies_count_the_same() -> None:
    events = text_reply_events(["a", "b", "c"])
    message = dict(events[0]["message"])
    message["content"] = [{"type": "text", "text": "abc"}]
    message["stop_reason"] = "end_turn"
    message["usage"] = dict(message["usage"], output_tokens=3)
    whole = ResponseObserver()

    translate_message_body(json.dumps(message).encode(), "m", whole)
    _, streamed, _ = translate(stream_of(events))

    assert whole.usage == streamed.usage
    assert whole.stop_reason == streamed.stop_reason
