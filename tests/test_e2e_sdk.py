"""The official ``anthropic`` Python SDK through a real gateway and simulator.

Every test drives the SDK's synchronous client in a worker thread (the SDK
does its own blocking I/O) against ``open_gateway``: real sockets on
loopback, the real app wiring, a scripted Bedrock stand-in. Assertions are on
what an SDK user gets back (objects, exception classes, headers) and on what
Bedrock received (``running.simulator.requests``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import pytest
import trio

from ccag.anthropic.estimate import estimate_input_tokens as local_estimate
from ccag.simulator import (
    Fail,
    Stall,
    StreamException,
    Text,
    Thinking,
    ToolUse,
    Truncate,
    Usage,
)
from ccag.simulator.handler import ReceivedRequest
from ccag.simulator.tokens import estimate_input_tokens as bedrock_count
from tests.gateway_fixture import RunningGateway, open_gateway

T = TypeVar("T")

# Each test makes a handful of loopback calls; this is far above what they
# need, and low enough that a hang fails the test instead of the CI job.
TEST_TIMEOUT_SECONDS = 30

# A short ping interval so that a scripted silence well above it produces
# pings without making the test slow.
PING_INTERVAL_SECONDS = 0.2
STALL_SECONDS = 1.0

SONNET = "claude-sonnet-4-5"
SONNET_DATED = "claude-sonnet-4-5-20250929"
HELLO = [{"role": "user", "content": "hello"}]


_open_clients: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def sdk_hygiene(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SDK settings from the developer's environment; every client closed.

    A client left open keeps pooled sockets to a gateway that is gone, and
    their ResourceWarning would surface (as an error) in some later test.
    """
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    yield
    while _open_clients:
        _open_clients.pop().close()


def sdk(running: RunningGateway, **options: Any) -> anthropic.Anthropic:
    """An SDK client for the gateway, with the SDK's own retries off."""
    options.setdefault("api_key", running.key)
    options.setdefault("max_retries", 0)
    client = anthropic.Anthropic(base_url=running.url, **options)
    _open_clients.append(client)
    return client


async def in_thread(call: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(call)


def model_calls(
    running: RunningGateway, kind: str | None = None
) -> list[ReceivedRequest]:
    calls = running.simulator.model_requests()
    return [call for call in calls if kind is None or call.kind == kind]


def sse_event_names(lines: Iterator[str]) -> list[str]:
    return [
        line[len("event:") :].strip() for line in lines if line.startswith("event:")
    ]


# -- Text ----------------------------------------------------------------------


async def test_text_answer_with_usage_and_the_requested_model_name(
    tmp_path: Path,
) -> None:
    usage = Usage(
        input_tokens=123,
        output_tokens=45,
        cache_read_input_tokens=67,
        cache_creation_input_tokens=8,
    )
    answer = "The capital of France is Paris."
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(
                Text(text=answer, usage=usage), Text(text=answer, usage=usage, deltas=5)
            )
            client = sdk(running)

            message = await in_thread(
                lambda: client.messages.create(
                    model=SONNET_DATED, max_tokens=64, messages=HELLO
                )
            )

            def stream() -> tuple[list[str], anthropic.types.Message]:
                with client.messages.stream(
                    model=SONNET_DATED, max_tokens=64, messages=HELLO
                ) as events:
                    texts = [event.text for event in events if event.type == "text"]
                    return texts, events.get_final_message()

            pieces, streamed = await in_thread(stream)
            calls = model_calls(running)

    for reply in (message, streamed):
        assert reply.model == SONNET_DATED
        assert [block.type for block in reply.content] == ["text"]
        assert reply.content[0].text == answer
        assert reply.stop_reason == "end_turn"
        assert reply.usage.input_tokens == 123
        assert reply.usage.output_tokens == 45
        assert reply.usage.cache_read_input_tokens == 67
        assert reply.usage.cache_creation_input_tokens == 8
    assert len(pieces) == 5 and "".join(pieces) == answer
    assert [call.kind for call in calls] == ["invoke", "invoke-with-response-stream"]


async def test_create_stream_true_yields_the_anthropic_event_sequence(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Text(text="one two three", deltas=3))
            client = sdk(running)

            def collect() -> list[Any]:
                return list(
                    client.messages.create(
                        model=SONNET, max_tokens=64, messages=HELLO, stream=True
                    )
                )

            events = await in_thread(collect)

    kinds = [event.type for event in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.model == SONNET
    assert (
        "".join(
            event.delta.text for event in events if event.type == "content_block_delta"
        )
        == "one two three"
    )
    assert events[-2].delta.stop_reason == "end_turn"


async def test_pings_flow_while_bedrock_is_silent_mid_stream(tmp_path: Path) -> None:
    answer = "an answer that took a while"
    stalled = Stall(
        seconds=STALL_SECONDS, after_events=3, answer=Text(text=answer, deltas=3)
    )
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(
            tmp_path, settings={"ping_interval": PING_INTERVAL_SECONDS}
        ) as running:
            running.simulator.script(stalled, stalled)
            client = sdk(running)

            def raw_events() -> list[str]:
                with client.messages.with_streaming_response.create(
                    model=SONNET, max_tokens=64, messages=HELLO, stream=True
                ) as response:
                    return sse_event_names(response.iter_lines())

            def sdk_stream() -> tuple[list[str], str]:
                with client.messages.stream(
                    model=SONNET, max_tokens=64, messages=HELLO
                ) as events:
                    kinds = [event.type for event in events]
                    return kinds, events.get_final_text()

            names = await in_thread(raw_events)
            kinds, text = await in_thread(sdk_stream)

    # The silence came after message_start, content_block_start and one
    # delta: pings fill it, then the rest of the message follows.
    assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert names[3] == "ping"
    assert names.count("ping") >= 2
    after_pings = [name for name in names[3:] if name != "ping"]
    assert after_pings == [
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert names[-1] == "message_stop"
    # The SDK's own stream hides the pings and still builds the message.
    assert text == answer
    assert "ping" not in kinds and kinds[-1] == "message_stop"


# -- Tools and thinking ----------------------------------------------------------


async def test_tool_use_arrives_as_split_json_and_parses_to_the_input(
    tmp_path: Path,
) -> None:
    tool_input = {
        "city": "Paris",
        "days": 3,
        "units": ["celsius"],
        "detail": {"hourly": True, "note": 'é "q"'},
    }
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
            },
        }
    ]
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(
                ToolUse(
                    name="get_weather",
                    input=tool_input,
                    text="Let me look.",
                    pieces=6,
                    tool_id="toolu_bdrk_01abc",
                )
            )
            client = sdk(running)

            def stream() -> tuple[list[str], anthropic.types.Message]:
                with client.messages.stream(
                    model=SONNET, max_tokens=256, messages=HELLO, tools=tools
                ) as events:
                    pieces = [
                        event.partial_json
                        for event in events
                        if event.type == "input_json"
                    ]
                    return pieces, events.get_final_message()

            pieces, message = await in_thread(stream)
            sent = model_calls(running)[0].body

    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Let me look."
    call = message.content[1]
    assert (call.id, call.name) == ("toolu_bdrk_01abc", "get_weather")
    assert call.input == tool_input
    assert len([piece for piece in pieces if piece]) == 6
    assert json.loads("".join(pieces)) == tool_input
    assert sent["tools"] == tools


async def test_thinking_with_signature_goes_back_to_bedrock_unchanged(
    tmp_path: Path,
) -> None:
    thought = "First, 6 times 7.\nThat is 42 — «certainly»."
    signature = "EqQBCkYIBxgCKkB" + "x" * 200 + "/+=="
    thinking = {"type": "enabled", "budget_tokens": 2048}
    question = {"role": "user", "content": "What is 6 times 7?"}
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(
                Thinking(thinking=thought, signature=signature, text="42", deltas=4)
            )
            client = sdk(running)

            def first_turn() -> anthropic.types.Message:
                with client.messages.stream(
                    model=SONNET,
                    max_tokens=4096,
                    thinking=thinking,
                    messages=[question],
                ) as events:
                    return events.get_final_message()

            message = await in_thread(first_turn)
            assistant = {
                "role": "assistant",
                "content": [block.model_dump() for block in message.content],
            }
            follow_up = [
                question,
                assistant,
                {"role": "user", "content": "And 7 times 8?"},
            ]
            second = await in_thread(
                lambda: client.messages.create(
                    model=SONNET, max_tokens=4096, thinking=thinking, messages=follow_up
                )
            )
            received = model_calls(running)[-1]

    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == thought
    assert message.content[0].signature == signature
    assert message.content[1].text == "42"

    # What Bedrock got back is the block the SDK received, key for key.
    returned = received.body["messages"][1]["content"]
    assert returned[0] == {
        "type": "thinking",
        "thinking": thought,
        "signature": signature,
    }
    assert returned == assistant["content"]
    assert json.dumps(signature).encode() in received.raw_body
    assert received.body["thinking"] == thinking
    assert second.content[-1].type == "text"


async def test_redacted_thinking_reaches_the_client_and_goes_back(
    tmp_path: Path,
) -> None:
    opaque = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
    thinking = {"type": "enabled", "budget_tokens": 2048}
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(
                Thinking(redacted=True, signature=opaque, text="done")
            )
            client = sdk(running)

            def first_turn() -> anthropic.types.Message:
                with client.messages.stream(
                    model=SONNET, max_tokens=4096, thinking=thinking, messages=HELLO
                ) as events:
                    return events.get_final_message()

            message = await in_thread(first_turn)
            blocks = [block.model_dump() for block in message.content]
            follow_up = [
                *HELLO,
                {"role": "assistant", "content": blocks},
                {"role": "user", "content": "go on"},
            ]
            await in_thread(
                lambda: client.messages.create(
                    model=SONNET, max_tokens=4096, thinking=thinking, messages=follow_up
                )
            )
            received = model_calls(running)[-1]

    assert [block.type for block in message.content] == ["redacted_thinking", "text"]
    assert message.content[0].data == opaque
    assert message.content[1].text == "done"
    assert received.body["messages"][1]["content"][0] == {
        "type": "redacted_thinking",
        "data": opaque,
    }


# -- count_tokens and models -----------------------------------------------------


async def test_count_tokens_is_bedrocks_count(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "count these words, please " * 20}]
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            client = sdk(running)
            counted = await in_thread(
                lambda: client.messages.count_tokens(
                    model=SONNET, messages=messages, system="be brief"
                )
            )
            calls = model_calls(running)

    assert [(call.kind, call.status) for call in calls] == [("count-tokens", 200)]
    # The simulator's count of the body it was given, passed through as is.
    assert counted.input_tokens == bedrock_count(calls[0].body)
    assert calls[0].body["messages"] == messages
    assert calls[0].model_id == "anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.mark.parametrize(
    "failure", ["ThrottlingException", "ValidationException", "InternalServerException"]
)
async def test_count_tokens_falls_back_to_a_local_estimate(
    tmp_path: Path, failure: str
) -> None:
    body = {
        "model": SONNET,
        "messages": [{"role": "user", "content": "estimate me " * 50}],
    }
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Fail(failure), kind="count-tokens")
            client = sdk(running)
            counted = await in_thread(lambda: client.messages.count_tokens(**body))
            calls = model_calls(running)

    assert [(call.kind, call.error) for call in calls] == [("count-tokens", failure)]
    assert counted.input_tokens == local_estimate(body)
    assert counted.input_tokens > 0


async def test_models_list(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            client = sdk(running)
            models = await in_thread(lambda: list(client.models.list()))
            calls = model_calls(running)

    ids = [model.id for model in models]
    assert {
        "claude-opus-5-5",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-haiku-20240307",
    } <= set(ids)
    assert len(ids) == len(set(ids))
    sonnet = next(model for model in models if model.id == SONNET)
    assert sonnet.display_name and sonnet.created_at.year == 2025
    assert calls == []


# -- Errors ----------------------------------------------------------------------

ERROR_CASES = [
    # Bedrock exception, SDK class, status, Anthropic error type
    ("ThrottlingException", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("ValidationException", anthropic.BadRequestError, 400, "invalid_request_error"),
    ("AccessDeniedException", anthropic.PermissionDeniedError, 403, "permission_error"),
    (
        "ServiceUnavailableException",
        anthropic.InternalServerError,
        529,
        "overloaded_error",
    ),
    ("InternalServerException", anthropic.InternalServerError, 500, "api_error"),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize(
    ("exception", "error_class", "status", "error_type"), ERROR_CASES
)
async def test_bedrock_errors_raise_the_sdk_exception(
    tmp_path: Path,
    streaming: bool,
    exception: str,
    error_class: type,
    status: int,
    error_type: str,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(
                Fail(exception, message="refused by the simulator")
            )
            client = sdk(running)

            def call() -> None:
                if streaming:
                    with client.messages.stream(
                        model=SONNET, max_tokens=64, messages=HELLO
                    ) as events:
                        events.get_final_message()
                else:
                    client.messages.create(model=SONNET, max_tokens=64, messages=HELLO)

            with pytest.raises(error_class) as raised:
                await in_thread(call)
            calls = model_calls(running)

    error = raised.value
    assert error.status_code == status
    assert error.type == error_type
    assert error.api_message == "refused by the simulator"
    assert error.request_id
    if status == 429:
        assert int(error.response.headers["retry-after"]) > 0
    # One attempt only: a refusal that names no beta or field is not retried.
    assert len(calls) == 1 and calls[0].error == exception


async def test_unknown_model_is_not_found_without_calling_bedrock(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            client = sdk(running)
            with pytest.raises(anthropic.NotFoundError) as raised:
                await in_thread(
                    lambda: client.messages.create(
                        model="claude-imaginary-9", max_tokens=64, messages=HELLO
                    )
                )
            calls = model_calls(running)

    assert raised.value.type == "not_found_error"
    assert "claude-imaginary-9" in (raised.value.api_message or "")
    assert calls == []


async def test_a_bad_key_is_an_authentication_error_without_calling_bedrock(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            client = sdk(running, api_key="ccag-not-a-real-key")
            with pytest.raises(anthropic.AuthenticationError) as raised:
                await in_thread(
                    lambda: client.messages.create(
                        model=SONNET, max_tokens=64, messages=HELLO
                    )
                )
            calls = model_calls(running)

    assert raised.value.status_code == 401
    assert raised.value.type == "authentication_error"
    assert calls == []


@pytest.mark.parametrize(
    ("exception_type", "error_type"),
    [
        ("modelStreamErrorException", "api_error"),
        ("throttlingException", "rate_limit_error"),
        ("serviceUnavailableException", "overloaded_error"),
    ],
)
async def test_an_exception_frame_mid_stream_raises_from_the_stream(
    tmp_path: Path, exception_type: str, error_type: str
) -> None:
    failure = StreamException(
        exception_type=exception_type, message="broke mid-stream", after_events=3
    )
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(failure, failure)
            client = sdk(running)

            def sdk_stream() -> list[str]:
                seen: list[str] = []
                with client.messages.stream(
                    model=SONNET, max_tokens=64, messages=HELLO
                ) as events:
                    for event in events:
                        seen.append(event.type)
                return seen

            def raw_events() -> list[str]:
                with client.messages.with_streaming_response.create(
                    model=SONNET, max_tokens=64, messages=HELLO, stream=True
                ) as response:
                    assert response.status_code == 200
                    return sse_event_names(response.iter_lines())

            with pytest.raises(anthropic.APIStatusError) as raised:
                await in_thread(sdk_stream)
            names = await in_thread(raw_events)

    assert raised.value.type == error_type
    assert raised.value.api_message == "broke mid-stream"
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "error",
    ]


@pytest.mark.parametrize(
    "mid_frame", [False, True], ids=["between-frames", "mid-frame"]
)
async def test_a_truncated_stream_is_an_error_never_a_fake_message_stop(
    tmp_path: Path, mid_frame: bool
) -> None:
    cut = Truncate(after_events=4, mid_frame=mid_frame)
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(cut, cut)
            client = sdk(running)

            def sdk_stream() -> None:
                with client.messages.stream(
                    model=SONNET, max_tokens=64, messages=HELLO
                ) as events:
                    events.get_final_message()

            def raw_events() -> list[str]:
                with client.messages.with_streaming_response.create(
                    model=SONNET, max_tokens=64, messages=HELLO, stream=True
                ) as response:
                    return sse_event_names(response.iter_lines())

            with pytest.raises(anthropic.APIStatusError) as raised:
                await in_thread(sdk_stream)
            names = await in_thread(raw_events)

    assert raised.value.type in {"api_error", "overloaded_error"}
    assert "message_stop" not in names
    assert names[-1] == "error"
    assert names[:4] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]


# -- Keys and what Bedrock receives ----------------------------------------------


async def test_x_api_key_and_bearer_keys_both_work(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            # SDK 1.x style: the key only in X-Api-Key.
            legacy = sdk(
                running,
                api_key=None,
                default_headers={
                    "X-Api-Key": running.key,
                    "anthropic-version": "2023-06-01",
                },
            )
            assert "Authorization" not in legacy.auth_headers
            # SDK 2.x: Authorization: Bearer, from auth_token= (and api_key=).
            bearer = sdk(running, api_key=None, auth_token=running.key)
            assert bearer.auth_headers == {"Authorization": f"Bearer {running.key}"}
            wrong = sdk(running, api_key=None, default_headers={"X-Api-Key": "nope"})

            replies = []
            for client in (legacy, bearer):
                create = functools.partial(
                    client.messages.create, model=SONNET, max_tokens=64, messages=HELLO
                )
                message = await in_thread(create)
                replies.append(message.content[0].text)
            with pytest.raises(anthropic.AuthenticationError):
                await in_thread(
                    lambda: wrong.messages.create(
                        model=SONNET, max_tokens=64, messages=HELLO
                    )
                )
            calls = model_calls(running)

    assert replies == ["Simulated reply to: hello"] * 2
    assert len(calls) == 2


async def test_bedrock_receives_its_own_body_shape_and_only_allowed_betas(
    tmp_path: Path,
) -> None:
    betas = "interleaved-thinking-2025-05-14, context-1m-2025-08-07,claude-code-20250219,no-such-beta-2030-01-01"
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            client = sdk(running)
            for model in (SONNET, "claude-haiku-4-5", "claude-3-5-haiku"):
                create = functools.partial(
                    client.messages.create,
                    model=model,
                    max_tokens=64,
                    messages=HELLO,
                    extra_headers={"anthropic-beta": betas},
                )
                await in_thread(create)
            await in_thread(lambda: _finish_stream(client))
            sonnet, haiku, old_haiku, *streamed = model_calls(running)

    for call in (sonnet, haiku, old_haiku, *streamed):
        assert call.status == 200
        assert call.body["anthropic_version"] == "bedrock-2023-05-31"
        assert "model" not in call.body
        assert "stream" not in call.body
        assert call.body["messages"] == HELLO
        assert call.body["max_tokens"] == 64
    assert sonnet.model_id.endswith("anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert sonnet.kind == "invoke"
    # Each model gets only the betas Bedrock accepts for it, in the client's order.
    assert sonnet.body["anthropic_beta"] == [
        "interleaved-thinking-2025-05-14",
        "context-1m-2025-08-07",
    ]
    assert haiku.body["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert "anthropic_beta" not in old_haiku.body
    assert [call.kind for call in streamed] == ["invoke-with-response-stream"]
    assert "anthropic_beta" not in streamed[0].body


def _finish_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=SONNET, max_tokens=64, messages=HELLO) as events:
        events.get_final_message()
