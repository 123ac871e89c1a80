import json
from typing import Any

import pytest

from ccag.anthropic.observe import ResponseObserver, Usage
from ccag.errors import ProtocolError
from tests.protocol_factory import text_reply_events


def observe_stream(events: list[dict[str, Any]]) -> ResponseObserver:
    observer = ResponseObserver()
    for event in events:
        observer.observe_event(event["type"].encode(), json.dumps(event).encode())
    return observer


def tool_reply_events() -> list[dict[str, Any]]:
    return [
        {
            "type": "message_start",
            "message": {
                "type": "message",
                "role": "assistant",
                "content": [],
                "usage": {"input_tokens": 5, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "Bash",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {},
            },
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "content_block_start",
            "index": 3,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_2",
                "name": "mcp__github__list",
                "input": {},
            },
        },
        {"type": "content_block_stop", "index": 3},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 77},
        },
        {"type": "message_stop"},
    ]


def message_from_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed message equivalent to a stream (what Anthropic sends)."""
    message = dict(events[0]["message"])
    message["content"] = [
        e["content_block"] for e in events if e["type"] == "content_block_start"
    ]
    usage = dict(message["usage"])
    for event in events:
        if event["type"] == "message_delta":
            usage.update(event["usage"])
            message["stop_reason"] = event["delta"]["stop_reason"]
    message["usage"] = usage
    return message


def test_observer_text_reply_usage_and_stop() -> None:
    observer = observe_stream(text_reply_events(["a", "b", "c"]))

    assert observer.usage == Usage(
        input_tokens=12, output_tokens=3, cache_read_tokens=4000, cache_write_tokens=30
    )
    assert observer.stop_reason == "end_turn"
    assert observer.saw_message_stop
    assert observer.tool_calls == []


def test_observer_content_starts_at_first_block() -> None:
    events = text_reply_events(["a"])
    observer = ResponseObserver()

    observer.observe_event(b"message_start", json.dumps(events[0]).encode())
    assert not observer.content_started
    observer.observe_event(b"ping", b'{"type":"ping"}')
    assert not observer.content_started
    observer.observe_event(b"content_block_start", json.dumps(events[1]).encode())
    assert observer.content_started
    assert not observer.saw_message_stop


def test_observer_content_starts_at_a_delta_too() -> None:
    observer = ResponseObserver()

    observer.observe_event(b"content_block_delta", b"{}")

    assert observer.content_started


def test_observer_collects_tool_names_in_order() -> None:
    observer = observe_stream(tool_reply_events())

    assert observer.tool_calls == ["Bash", "web_search", "mcp__github__list"]
    assert observer.stop_reason == "tool_use"
    assert observer.usage.output_tokens == 77


def test_observer_output_tokens_last_value_wins() -> None:
    observer = ResponseObserver()
    for output in (1, 40, 39, 90):
        observer.observe_event(
            b"message_delta",
            json.dumps(
                {
                    "type": "message_delta",
                    "delta": {},
                    "usage": {"output_tokens": output},
                }
            ).encode(),
        )

    assert observer.usage.output_tokens == 90


def test_observer_message_delta_may_update_input_and_cache_numbers() -> None:
    events = text_reply_events(["a"])
    events[-2]["usage"] = {
        "input_tokens": 500,
        "cache_read_input_tokens": 4100,
        "cache_creation_input_tokens": 0,
        "output_tokens": 9,
    }

    observer = observe_stream(events)

    assert observer.usage == Usage(500, 9, 4100, 0)


@pytest.mark.parametrize("bad", [None, True, -1, "7", 1.5])
def test_observer_ignores_usage_values_that_are_not_counts(bad: object) -> None:
    events = text_reply_events(["a"])
    events[0]["message"]["usage"]["cache_creation_input_tokens"] = bad

    observer = observe_stream(events)

    assert observer.usage.cache_write_tokens == 0
    assert observer.usage.input_tokens == 12


def test_observer_does_not_parse_text_deltas_or_text_block_starts() -> None:
    # Not JSON at all: if the observer tried to parse these, it would raise.
    observer = ResponseObserver()

    observer.observe_event(b"content_block_delta", b"{not json")
    observer.observe_event(b"content_block_start", b'{"content_block":{"type":"text"')
    observer.observe_event(b"content_block_stop", b"{not json")
    observer.observe_event(b"ping", b"{not json")

    assert observer.content_started


@pytest.mark.parametrize("event_type", [b"message_start", b"message_delta", b"error"])
def test_observer_rejects_broken_json_it_needs(event_type: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseObserver().observe_event(event_type, b"{broken")


def test_observer_rejects_non_object_json() -> None:
    with pytest.raises(ProtocolError):
        ResponseObserver().observe_event(b"message_delta", b"[1]")


def test_observer_records_error_event() -> None:
    observer = ResponseObserver()

    observer.observe_event(
        b"error",
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    )

    assert (observer.error_type, observer.error_message) == (
        "overloaded_error",
        "Overloaded",
    )
    assert not observer.saw_message_stop


@pytest.mark.parametrize("events", [text_reply_events(["x", "y"]), tool_reply_events()])
def test_observer_streamed_and_whole_message_give_same_numbers(
    events: list[dict[str, Any]],
) -> None:
    streamed = observe_stream(events)
    whole = ResponseObserver()

    whole.observe_message(message_from_events(events))

    assert whole.usage == streamed.usage
    assert whole.tool_calls == streamed.tool_calls
    assert whole.stop_reason == streamed.stop_reason
    assert whole.saw_message_stop and streamed.saw_message_stop
    assert whole.content_started and streamed.content_started


def test_observer_whole_message_tolerates_odd_shapes() -> None:
    observer = ResponseObserver()

    observer.observe_message({"content": "text", "usage": [], "stop_reason": 3})

    assert observer.usage == Usage()
    assert observer.tool_calls == []
    assert observer.stop_reason is None


def test_observer_event_object_path_matches_bytes_path() -> None:
    events = tool_reply_events()
    by_object = ResponseObserver()
    for event in events:
        by_object.observe_event_object(event["type"].encode(), event)

    by_bytes = observe_stream(events)

    assert by_object.usage == by_bytes.usage
    assert by_object.tool_calls == by_bytes.tool_calls
    assert by_object.stop_reason == by_bytes.stop_reason
    assert by_object.saw_message_stop == by_bytes.saw_message_stop
