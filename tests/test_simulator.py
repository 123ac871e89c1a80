"""The simulator against the real clients: boto3 and the anthropic SDK's
AnthropicBedrock, over loopback sockets through ccag.server.serve."""

from __future__ import annotations

import datetime
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import boto3
import botocore.config
import botocore.exceptions
import pytest
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ccag.simulator import (
    Fail,
    StreamException,
    Text,
    Thinking,
    Usage,
    open_simulator,
)
from ccag.simulator.fixture import Simulator

PROFILE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
FOUNDATION = "anthropic.claude-sonnet-4-5-20250929-v1:0"
BEDROCK_VERSION = "bedrock-2023-05-31"
TIMEOUT = 15


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No test may find real AWS credentials, config or instance metadata."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


_OPEN_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """Close every client a test opened, so no socket is left to the GC."""
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()


def _opened(client: Any) -> Any:
    _OPEN_CLIENTS.append(client)
    return client


def _body(**extra: Any) -> bytes:
    body = {
        "anthropic_version": BEDROCK_VERSION,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "say hi"}],
        **extra,
    }
    return json.dumps(body).encode()


def _runtime(sim: Simulator, secret: str | None = None, retries: int = 0) -> Any:
    return _opened(boto3.client(
        "bedrock-runtime",
        region_name=sim.region,
        endpoint_url=sim.url,
        aws_access_key_id=sim.access_key,
        aws_secret_access_key=secret or sim.secret_key,
        config=botocore.config.Config(retries={"total_max_attempts": retries + 1, "mode": "standard"}),
    ))


def _bedrock_sdk(sim: Simulator, secret: str | None = None) -> anthropic.AnthropicBedrock:
    return _opened(anthropic.AnthropicBedrock(
        aws_access_key=sim.access_key,
        aws_secret_key=secret or sim.secret_key,
        aws_region=sim.region,
        base_url=sim.url,
        max_retries=0,
    ))


# The SDK fills in its own API version; Bedrock wants its own.
SDK_EXTRA = {"extra_body": {"anthropic_version": BEDROCK_VERSION}}


async def _in_thread(function: Any) -> Any:
    return await trio.to_thread.run_sync(function)


async def _client_error(call: Any) -> dict[str, Any]:
    """Run a boto3 call that must fail; its error response, as botocore parsed it.

    The exception is caught in the worker thread so that no traceback keeps
    botocore's connection objects alive past the test.
    """

    def run() -> dict[str, Any] | None:
        try:
            call()
        except botocore.exceptions.ClientError as error:
            return dict(error.response)
        return None

    response = await trio.to_thread.run_sync(run)
    assert response is not None, "the call did not fail"
    return response


def _stream_events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for event in response["body"]:
        yield json.loads(event["chunk"]["bytes"])


# -- boto3 -------------------------------------------------------------------


async def test_simulator_boto3_invoke_model_returns_an_anthropic_message() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            response = await _in_thread(lambda: _runtime(sim).invoke_model(modelId=PROFILE, body=_body()))
            message = json.loads(response["body"].read())
            headers = response["ResponseMetadata"]["HTTPHeaders"]

    assert message["id"].startswith("msg_bdrk_")
    assert message["model"] == FOUNDATION
    assert message["content"] == [{"type": "text", "text": "Simulated reply to: say hi"}]
    assert message["stop_reason"] == "end_turn"
    assert headers["x-amzn-bedrock-input-token-count"] == str(message["usage"]["input_tokens"])
    assert headers["x-amzn-bedrock-output-token-count"] == str(message["usage"]["output_tokens"])
    assert headers["x-amzn-requestid"]
    assert sim.requests[0].model_id == PROFILE
    assert sim.requests[0].target == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"


async def test_simulator_boto3_stream_decodes_every_anthropic_event() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            sim.script(Text(text="hello there", deltas=4, usage=Usage(cache_read_input_tokens=7)))
            events = await _in_thread(
                lambda: list(_stream_events(_runtime(sim).invoke_model_with_response_stream(modelId=PROFILE, body=_body())))
            )

    kinds = [event["type"] for event in events]
    assert kinds == ["message_start", "content_block_start"] + ["content_block_delta"] * 4 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(event["delta"]["text"] for event in events if event["type"] == "content_block_delta") == "hello there"
    usage = events[0]["message"]["usage"]
    assert usage["cache_read_input_tokens"] == 7 and usage["cache_creation_input_tokens"] == 0
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == events[-2]["usage"]["output_tokens"]


async def test_simulator_boto3_count_tokens_matches_invocation_usage() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            client = _runtime(sim)
            counted = await _in_thread(
                lambda: client.count_tokens(modelId=FOUNDATION, input={"invokeModel": {"body": _body()}})
            )
            invoked = await _in_thread(lambda: json.loads(client.invoke_model(modelId=PROFILE, body=_body())["body"].read()))

    assert counted["inputTokens"] == invoked["usage"]["input_tokens"]
    assert sim.requests[0].kind == "count-tokens"
    assert sim.requests[0].body["messages"] == [{"role": "user", "content": "say hi"}]


async def test_simulator_count_tokens_refuses_a_profile_id() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            error = await _client_error(
                    lambda: _runtime(sim).count_tokens(modelId=PROFILE, input={"invokeModel": {"body": _body()}})
                )
    assert error["Error"]["Code"] == "ValidationException"


async def test_simulator_boto3_wrong_secret_is_invalid_signature() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            error = await _client_error(lambda: _runtime(sim, secret="wrong").invoke_model(modelId=PROFILE, body=_body()))

    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert "signature we calculated does not match" in error["Error"]["Message"]


async def test_simulator_unknown_access_key_is_unrecognized_client() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(access_key="AKIDOTHER", secret_key="s") as sim:
            client = _opened(boto3.client(
                "bedrock-runtime", region_name=sim.region, endpoint_url=sim.url,
                aws_access_key_id="AKIDUNKNOWN", aws_secret_access_key="s",
            ))
            error = await _client_error(lambda: client.invoke_model(modelId=PROFILE, body=_body()))
    assert error["Error"]["Code"] == "UnrecognizedClientException"


async def test_simulator_refuses_a_stale_signature() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=6)
            request = AWSRequest("POST", f"{sim.url}/model/{PROFILE}/invoke", data=_body(),
                                 headers={"content-type": "application/json"})
            request.context["timestamp"] = old.strftime("%Y%m%dT%H%M%SZ")
            request.headers["X-Amz-Date"] = request.context["timestamp"]
            signer = SigV4Auth(Credentials(sim.access_key, sim.secret_key), "bedrock", sim.region)
            signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
            signer._inject_signature_to_request(request, signature)
            status, headers, body = await _in_thread(lambda: _send(request))

    assert status == 403
    assert headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    assert json.loads(body)["message"].startswith("Signature expired")


async def test_simulator_request_without_auth_is_missing_token() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            request = AWSRequest("POST", f"{sim.url}/model/{PROFILE}/invoke", data=_body())
            status, headers, body = await _in_thread(lambda: _send(request))
    assert status == 403
    assert headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")
    assert json.loads(body) == {"message": "Missing Authentication Token"}


def _send(request: AWSRequest) -> tuple[int, dict[str, str], bytes]:
    prepared = urllib.request.Request(request.url, data=request.body, method=request.method,
                                      headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=TIMEOUT) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


async def test_simulator_scripted_throttle_is_429() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            sim.script(Fail("ThrottlingException"))
            client = _runtime(sim)
            error = await _client_error(lambda: client.invoke_model(modelId=PROFILE, body=_body()))
            after = await _in_thread(lambda: client.invoke_model(modelId=PROFILE, body=_body()))

    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Error"]["Code"] == "ThrottlingException"
    assert after["ResponseMetadata"]["HTTPStatusCode"] == 200


async def test_simulator_mid_stream_exception_surfaces_in_boto3() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            sim.script(StreamException("throttlingException", "Too many tokens", after_events=3))
            seen: list[dict[str, Any]] = []

            def consume() -> dict[str, Any] | None:
                response = _runtime(sim).invoke_model_with_response_stream(modelId=PROFILE, body=_body())
                try:
                    # One at a time: the events before a mid-stream error count too.
                    for event in _stream_events(response):
                        seen.append(event)  # noqa: PERF402
                except botocore.exceptions.EventStreamError as error:
                    return dict(error.response)
                finally:
                    response["body"].close()
                return None

            error = await _in_thread(consume)

    assert [event["type"] for event in seen] == ["message_start", "content_block_start", "content_block_delta"]
    assert error["Error"]["Code"] == "throttlingException"
    assert error["Error"]["Message"] == "Too many tokens"


async def test_simulator_unknown_model_is_resource_not_found() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            error = await _client_error(lambda: _runtime(sim).invoke_model(modelId="anthropic.claude-nope-v1:0", body=_body()))
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Code"] == "ResourceNotFoundException"


async def test_simulator_bare_id_of_a_profile_only_model_needs_a_profile() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            error = await _client_error(lambda: _runtime(sim).invoke_model(modelId=FOUNDATION, body=_body()))
    assert error["Error"]["Code"] == "ValidationException"
    assert "on-demand throughput" in error["Error"]["Message"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"stream": True}, "extraneous key [stream] is not permitted"),
        ({"model": PROFILE}, "extraneous key [model] is not permitted"),
        ({"anthropic_beta": ["claude-code-20250219"]}, "invalid beta flag"),
        ({"context_management": {"edits": []}}, "context_management: Extra inputs are not permitted"),
        ({"system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2"}]}, "x-anthropic-billing-header"),
    ],
)
async def test_simulator_refuses_what_bedrock_refuses(extra: dict[str, Any], message: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            error = await _client_error(lambda: _runtime(sim).invoke_model(modelId=PROFILE, body=_body(**extra)))
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationException"
    assert message in error["Error"]["Message"]
    assert sim.requests[0].error == "ValidationException"


async def test_simulator_rejects_a_beta_only_when_told_to() -> None:
    body = _body(anthropic_beta=["interleaved-thinking-2025-05-14"])
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as accepting:
            ok = await _in_thread(lambda: _runtime(accepting).invoke_model(modelId=PROFILE, body=body))
        async with open_simulator(reject_betas=frozenset({"interleaved-thinking-2025-05-14"})) as refusing:
            error = await _client_error(lambda: _runtime(refusing).invoke_model(modelId=PROFILE, body=body))
    assert ok["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert error["Error"]["Message"] == "invalid beta flag"


async def test_simulator_lists_inference_profiles_in_pages() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            client = _opened(boto3.client(
                "bedrock", region_name=sim.region, endpoint_url=sim.url,
                aws_access_key_id=sim.access_key, aws_secret_access_key=sim.secret_key,
            ))
            pages = await _in_thread(
                lambda: list(
                    client.get_paginator("list_inference_profiles").paginate(
                        typeEquals="SYSTEM_DEFINED", PaginationConfig={"PageSize": 5}
                    )
                )
            )

    ids = [profile["inferenceProfileId"] for page in pages for profile in page["inferenceProfileSummaries"]]
    assert len(pages) > 1
    assert len(ids) == len(set(ids))
    assert PROFILE in ids and "global." + FOUNDATION in ids
    assert not any(profile_id.startswith("eu.") for profile_id in ids)


# -- anthropic.AnthropicBedrock ------------------------------------------------


async def test_simulator_anthropic_bedrock_create_and_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            client = _bedrock_sdk(sim)
            created = await _in_thread(
                lambda: client.messages.create(
                    model=PROFILE, max_tokens=50, messages=[{"role": "user", "content": "hello"}], **SDK_EXTRA
                )
            )

            def stream() -> Any:
                with client.messages.stream(
                    model=PROFILE, max_tokens=50, messages=[{"role": "user", "content": "hello [sim:text 5]"}],
                    **SDK_EXTRA,
                ) as events:
                    deltas = sum(1 for event in events if event.type == "content_block_delta")
                    return deltas, events.get_final_message()

            deltas, streamed = await _in_thread(stream)

    assert created.content[0].text == "Simulated reply to: hello"
    assert created.usage.input_tokens > 0
    assert deltas == 5
    assert streamed.content[0].text == "Simulated reply to: hello"
    assert sim.requests[1].kind == "invoke-with-response-stream"
    assert "stream" not in sim.requests[1].body


async def test_simulator_anthropic_bedrock_tool_use_round_trip() -> None:
    prompt = 'run it [sim:tool Bash {"command": "echo hello"}]'
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            client = _bedrock_sdk(sim)

            def round_trip() -> tuple[Any, Any]:
                with client.messages.stream(
                    model=PROFILE, max_tokens=50, messages=[{"role": "user", "content": prompt}], **SDK_EXTRA
                ) as events:
                    call = events.get_final_message()
                block = call.content[0]
                answer = client.messages.create(
                    model=PROFILE, max_tokens=50, **SDK_EXTRA,
                    messages=[
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": [block.model_dump()]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "hello"}]},
                    ],
                )
                return call, answer

            call, answer = await _in_thread(round_trip)

    assert call.stop_reason == "tool_use"
    assert call.content[0].name == "Bash" and call.content[0].input == {"command": "echo hello"}
    assert call.content[0].id.startswith("toolu_bdrk_")
    assert answer.content[0].text == "Tool result: hello"


async def test_simulator_anthropic_bedrock_thinking() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            sim.script(Thinking(thinking="pondering deeply", signature="sig123", text="done"))
            sim.script(Thinking(redacted=True, signature="opaque", text="done"))
            client = _bedrock_sdk(sim)

            def stream() -> Any:
                with client.messages.stream(
                    model=PROFILE, max_tokens=2000, messages=[{"role": "user", "content": "think"}],
                    thinking={"type": "enabled", "budget_tokens": 1024}, **SDK_EXTRA,
                ) as events:
                    return events.get_final_message()

            thought = await _in_thread(stream)
            redacted = await _in_thread(
                lambda: client.messages.create(
                    model=PROFILE, max_tokens=50, messages=[{"role": "user", "content": "think"}], **SDK_EXTRA
                )
            )

    assert thought.content[0].type == "thinking"
    assert thought.content[0].thinking == "pondering deeply"
    assert thought.content[0].signature == "sig123"
    assert thought.content[1].text == "done"
    assert redacted.content[0].type == "redacted_thinking" and redacted.content[0].data == "opaque"


async def test_simulator_anthropic_bedrock_wrong_secret_and_throttle() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            with pytest.raises(anthropic.PermissionDeniedError):
                await _in_thread(
                    lambda: _bedrock_sdk(sim, secret="wrong").messages.create(
                        model=PROFILE, max_tokens=5, messages=[{"role": "user", "content": "x"}], **SDK_EXTRA
                    )
                )
            sim.script(Fail("ThrottlingException"))
            with pytest.raises(anthropic.RateLimitError):
                await _in_thread(
                    lambda: _bedrock_sdk(sim).messages.create(
                        model=PROFILE, max_tokens=5, messages=[{"role": "user", "content": "x"}], **SDK_EXTRA
                    )
                )


async def test_simulator_fail_stream_directive_fails_only_when_streaming() -> None:
    prompt = [{"role": "user", "content": "go [sim:fail-stream]"}]
    with trio.fail_after(TIMEOUT):
        async with open_simulator() as sim:
            client = _bedrock_sdk(sim)

            def stream() -> None:
                with client.messages.stream(model=PROFILE, max_tokens=5, messages=prompt, **SDK_EXTRA) as events:
                    events.get_final_message()

            with pytest.raises(anthropic.APIStatusError):
                await _in_thread(stream)
            whole = await _in_thread(
                lambda: client.messages.create(model=PROFILE, max_tokens=5, messages=prompt, **SDK_EXTRA)
            )
    assert whole.content[0].text == "Simulated reply to: go"


async def test_simulator_accepts_a_configured_bedrock_api_key() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(api_keys=frozenset({"bedrock-api-key-TEST"})) as sim:
            client = _opened(anthropic.AnthropicBedrock(api_key="bedrock-api-key-TEST", aws_region=sim.region,
                                                        base_url=sim.url, max_retries=0))
            message = await _in_thread(
                lambda: client.messages.create(
                    model=PROFILE, max_tokens=5, messages=[{"role": "user", "content": "x"}], **SDK_EXTRA
                )
            )
            wrong = _opened(anthropic.AnthropicBedrock(api_key="bedrock-api-key-WRONG", aws_region=sim.region,
                                                       base_url=sim.url, max_retries=0))
            with pytest.raises(anthropic.PermissionDeniedError):
                await _in_thread(
                    lambda: wrong.messages.create(
                        model=PROFILE, max_tokens=5, messages=[{"role": "user", "content": "x"}], **SDK_EXTRA
                    )
                )
    assert message.content[0].text == "Simulated reply to: x"
