"""The real Claude Code CLI through a real gateway, against the simulator.

Each test runs ``claude -p ... --output-format json`` (the pinned npm
release, installed once by :mod:`tests.claude_code`) with
``ANTHROPIC_BASE_URL`` pointing at ``open_gateway``, then checks what the
user sees (the JSON result) and what Bedrock received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from ccag.simulator import Text
from ccag.simulator.directives import default_text
from ccag.simulator.handler import ReceivedRequest
from ccag.simulator.tokens import estimate_input_tokens, estimate_output_tokens
from tests.claude_code import (
    ClaudeRun,
    install_claude_code,
    record_gateway_exchanges,
    run_claude,
)
from tests.gateway_fixture import RunningGateway, open_gateway

# One CLI session: a process start and one to three model calls on loopback.
# Generous, because a loaded CI machine is slow, not because it is expected.
SESSION_TIMEOUT_SECONDS = 90

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"

OPUS_5_5_ID = "us.anthropic.claude-opus-5-5"
SONNET_4_5_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture(scope="session")
def claude() -> Path:
    """The ``claude`` binary; installing it is part of the test, never a skip."""
    return install_claude_code()


def streamed_calls(running: RunningGateway) -> list[ReceivedRequest]:
    return [
        call
        for call in running.simulator.model_requests()
        if call.kind != "count-tokens"
    ]


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            text_of(block.get("text", block.get("content")))
            for block in content
            if isinstance(block, dict)
        )
    return ""


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def assert_bedrock_shape(call: ReceivedRequest) -> None:
    """What every InvokeModel body from Claude Code must look like after ccag."""
    body = call.body
    assert call.status == 200, (call.status, call.error)
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in body and "stream" not in body
    system = body["system"]
    assert system, "Claude Code's identity and main prompt reach Bedrock"
    system_texts = (
        [system] if isinstance(system, str) else [block["text"] for block in system]
    )
    assert not any(text.startswith(BILLING_HEADER_PREFIX) for text in system_texts)
    assert body["tools"], "Claude Code's tools reach Bedrock"


def session_ok(run: ClaudeRun) -> None:
    assert run.returncode == 0, run.explain()
    assert run.is_error is False, run.explain()


async def test_plain_answer_with_the_default_model(
    tmp_path: Path, claude: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = "Hello from the simulated Opus 5.5, through ccag."
    exchanges = record_gateway_exchanges(monkeypatch)
    with trio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(
                Text(text=answer, deltas=4),
                model=OPUS_5_5_ID,
                kind="invoke-with-response-stream",
            )
            run = await run_claude(
                claude,
                "say hi to the gateway",
                base_url=running.url,
                api_key=running.key,
                home=tmp_path / "home",
            )
            calls = streamed_calls(running)

    session_ok(run)
    assert run.result == answer
    assert run.num_turns == 1
    assert "claude-opus-5-5" in run.document["modelUsage"]

    # One streaming call for the default model, in Bedrock's own shape.
    assert [(call.kind, call.model_id) for call in calls] == [
        ("invoke-with-response-stream", OPUS_5_5_ID)
    ]
    call = calls[0]
    assert_bedrock_shape(call)
    assert "say hi to the gateway" in text_of(call.body["messages"][0]["content"])

    # The usage the user is billed for is what the simulator reported.
    assert run.document["usage"]["input_tokens"] == estimate_input_tokens(call.body)
    assert run.document["usage"]["output_tokens"] == estimate_output_tokens(answer)

    # Everything the CLI asked the gateway, and the status it got. With
    # non-essential traffic off, 2.1.332 skips its connectivity probe (see
    # test_the_cli_connectivity_probe_gets_200).
    assert [(item.method, item.target, item.status) for item in exchanges] == [
        ("POST", "/v1/messages?beta=true", 200)
    ]


# Claude Code 2.1.332 preconnects with ``HEAD {ANTHROPIC_BASE_URL}/api/hello``
# (no credentials) unless non-essential traffic is off, and its connection
# diagnostics ``GET`` the same path; 2.1.197 probed ``HEAD /``.
PROBES = [("HEAD", "/api/hello"), ("GET", "/api/hello"), ("HEAD", "/")]


@pytest.mark.parametrize(("method", "path"), PROBES)
async def test_the_cli_connectivity_probe_gets_200(
    tmp_path: Path, method: str, path: str
) -> None:
    with trio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            status = await probe(running.port, method, path)
            # Model discovery may list profiles at start; no model call.
            calls = running.simulator.model_requests()

    assert status == 200
    assert calls == []


async def probe(port: int, method: str, path: str) -> int:
    """The status a credential-less probe gets, as the CLI sends it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"User-Agent: claude-cli/2.1.332 (external, cli)\r\nConnection: close\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n" not in received:
            data = await stream.receive_some()
            if not data:
                break
            received += data
    status_line = received.split(b"\r\n", 1)[0].decode()
    assert status_line.startswith("HTTP/1.1 "), status_line
    return int(status_line.split()[1])


async def test_bash_tool_round_trip(tmp_path: Path, claude: Path) -> None:
    prompt = (
        'Run the command for me. [sim:tool Bash {"command":"echo hello-from-bash"}]'
    )
    with trio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            run = await run_claude(
                claude,
                prompt,
                base_url=running.url,
                api_key=running.key,
                home=tmp_path / "home",
                args=["--allowedTools", "Bash"],
            )
            calls = streamed_calls(running)

    session_ok(run)
    assert run.num_turns == 2
    assert "hello-from-bash" in run.result

    assert [call.kind for call in calls] == ["invoke-with-response-stream"] * 2
    for call in calls:
        assert_bedrock_shape(call)

    # The second call carries the model's tool call and the command's output.
    messages = calls[1].body["messages"]
    tool_calls = [
        block for block in blocks_of(messages[-2]) if block.get("type") == "tool_use"
    ]
    assert messages[-2]["role"] == "assistant"
    assert [(block["name"], block["input"]) for block in tool_calls] == [
        ("Bash", {"command": "echo hello-from-bash"})
    ]
    results = [
        block for block in blocks_of(messages[-1]) if block.get("type") == "tool_result"
    ]
    assert messages[-1]["role"] == "user"
    assert [block["tool_use_id"] for block in results] == [tool_calls[0]["id"]]
    assert text_of(results[0]["content"]).strip() == "hello-from-bash"
    assert not results[0].get("is_error")


async def test_mid_stream_failure_falls_back_to_a_non_streaming_call(
    tmp_path: Path, claude: Path
) -> None:
    with trio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            run = await run_claude(
                claude,
                "tell me something [sim:fail-stream]",
                base_url=running.url,
                api_key=running.key,
                home=tmp_path / "home",
            )
            calls = streamed_calls(running)

    session_ok(run)
    assert [call.kind for call in calls] == ["invoke-with-response-stream", "invoke"]
    streamed, whole = calls
    for call in calls:
        assert_bedrock_shape(call)
    assert whole.model_id == streamed.model_id == OPUS_5_5_ID
    assert whole.body["messages"] == streamed.body["messages"]
    # The answer is the one the non-streaming call delivered.
    assert run.result == default_text(whole.body)
    assert run.num_turns == 1


async def test_another_model_by_flag(tmp_path: Path, claude: Path) -> None:
    with trio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            run = await run_claude(
                claude,
                "which model are you?",
                base_url=running.url,
                api_key=running.key,
                home=tmp_path / "home",
                args=["--model", "claude-sonnet-4-5"],
            )
            calls = streamed_calls(running)

    session_ok(run)
    assert [(call.kind, call.model_id) for call in calls] == [
        ("invoke-with-response-stream", SONNET_4_5_ID)
    ]
    assert_bedrock_shape(calls[0])
    assert run.result == default_text(calls[0].body)
    assert "which model are you?" in text_of(calls[0].body["messages"][0]["content"])
    # Claude Code's 4.5-generation thinking, which this model accepts as is.
    assert calls[0].body["thinking"]["type"] == "enabled"
    assert any(
        name.startswith("claude-sonnet-4-5") for name in run.document["modelUsage"]
    )


async def test_a_bad_key_is_an_authentication_error_not_a_hang(
    tmp_path: Path, claude: Path
) -> None:
    with trio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path) as running:
            run = await run_claude(
                claude,
                "hello?",
                base_url=running.url,
                api_key="ccag-this-key-does-not-exist",
                home=tmp_path / "home",
            )
            calls = running.simulator.model_requests()

    assert run.is_error is True, run.explain()
    assert run.returncode != 0
    assert run.document.get("api_error_status") == 401
    assert "API key" in run.result
    assert calls == []
