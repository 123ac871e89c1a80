"""The simulator refuses, on the wire, the InvokeModel bodies Bedrock refuses.

Each refusal is a 400 with ``x-amzn-errortype: ValidationException:...`` and
a JSON ``{"message": ...}``, on InvokeModel and on the streaming route; what
Bedrock takes (a Claude Code conversation through the gateway included) is
still answered.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from ccag.simulator import open_simulator
from ccag.simulator.fixture import Simulator
from ccag.simulator.tokens import CHARS_PER_TOKEN
from tests.gateway_fixture import open_gateway

SONNET_4_5 = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
SONNET_4_5_FOUNDATION = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SONNET_3_7 = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
SONNET_4_5_MAX_OUTPUT = 64_000
ROUTES = ("invoke", "invoke-with-response-stream")
TIMEOUT = 10
CLIENTS = Path("/work/shared/clients")

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(16)
VALID_IMAGE = {
    "type": "image",
    "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG_BYTES).decode()},
}
BUDGET_MESSAGE = (
    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
)
TOOL_NAME_MESSAGE = "tools.1.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"


def _body(**fields: Any) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "say hi"}],
        **fields,
    }


def _tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "d", "input_schema": {"type": "object"}, **extra}


async def _post(sim: Simulator, model: str, route: str, body: Any) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lower-cased), body."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = f"/model/{model.replace(':', '%3A')}/{route}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
        async with stream:
            await stream.send_all(head + payload)
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
    head_bytes, _, rest = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


# (case id, body, the message Bedrock answers)
REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "role-system",
        _body(messages=[{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]),
        "messages.1.role: Input should be 'user' or 'assistant'",
    ),
    (
        "role-tool",
        _body(messages=[{"role": "tool", "content": "a"}]),
        "messages.0.role: Input should be 'user' or 'assistant'",
    ),
    (
        "unknown-block-type",
        _body(messages=[{"role": "user", "content": [{"type": "input_text", "text": "a"}]}]),
        "messages.0.content.0: Input tag 'input_text' found using 'type' does not match any of the expected tags:",
    ),
    (
        "block-without-type",
        _body(messages=[{"role": "user", "content": [{"text": "a"}]}]),
        "messages.0.content.0: Unable to extract tag using discriminator 'type'",
    ),
    (
        "budget-equals-max-tokens",
        _body(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 4096}),
        BUDGET_MESSAGE,
    ),
    (
        "budget-below-minimum",
        _body(thinking={"type": "enabled", "budget_tokens": 1023}),
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    (
        "tool-name-with-dot",
        _body(tools=[_tool("Read"), _tool("mcp.server.tool")]),
        TOOL_NAME_MESSAGE,
    ),
    (
        "tool-name-too-long",
        _body(tools=[_tool("Read"), _tool("x" * 129)]),
        TOOL_NAME_MESSAGE,
    ),
    (
        "tool-name-custom-type",
        _body(tools=[_tool("Read"), _tool("has space", type="custom")]),
        TOOL_NAME_MESSAGE,
    ),
    (
        "image-bad-base64",
        _body(messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}
        ]}]),
        "messages.0.content.0.image.source.base64: invalid base64 data",
    ),
    (
        "document-bad-padding",
        _body(messages=[{"role": "user", "content": [
            {"type": "text", "text": "read"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "QUJ"}},
        ]}]),
        "messages.0.content.1.document.source.base64: invalid base64 data",
    ),
    (
        "tool-result-image-bad-base64",
        _body(messages=[
            {"role": "user", "content": "shoot"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%%"}}
            ]}]},
        ]),
        "messages.2.content.0.tool_result.content.0.image.source.base64: invalid base64 data",
    ),
    (
        "system-number",
        _body(system=42),
        ("Malformed input request: #/system: expected type: String or JSONArray, found: Number, "
        "please reformat your input and try again."),
    ),
    (
        "system-image-block",
        _body(system=[{"type": "text", "text": "a"}, VALID_IMAGE]),
        "system.1.type: Input should be 'text'",
    ),
    (
        "tools-object",
        _body(tools={"name": "Read"}),
        ("Malformed input request: #/tools: expected type: JSONArray, found: JSONObject, "
        "please reformat your input and try again."),
    ),
    (
        "thinking-string",
        _body(thinking="enabled"),
        ("Malformed input request: #/thinking: expected type: JSONObject, found: String, "
        "please reformat your input and try again."),
    ),
    (
        "tool-choice-string",
        _body(tools=[_tool("Read")], tool_choice="auto"),
        ("Malformed input request: #/tool_choice: expected type: JSONObject, found: String, "
        "please reformat your input and try again."),
    ),
    (
        "content-number",
        _body(messages=[{"role": "user", "content": 7}]),
        ("Malformed input request: #/messages/0/content: expected type: String or JSONArray, found: Number, "
        "please reformat your input and try again."),
    ),
    (
        "content-missing",
        _body(messages=[{"role": "user"}]),
        "messages.0.content: Field required",
    ),
    (
        "max-tokens-above-model-limit",
        _body(max_tokens=SONNET_4_5_MAX_OUTPUT + 1),
        ("The maximum tokens you requested exceeds the model limit of 64000. "
        "Try again with a maximum tokens value that is lower than 64000."),
    ),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("body", "message"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS])
async def test_bedrock_refusals_reach_the_wire(route: str, body: dict[str, Any], message: str) -> None:
    async with open_simulator(verify_signatures=False) as sim:
        status, headers, payload = await _post(sim, SONNET_4_5, route, body)

    assert status == 400
    assert headers["x-amzn-errortype"].split(":", 1)[0] == "ValidationException"
    assert headers["content-type"] == "application/json"
    answer = json.loads(payload)
    assert list(answer) == ["message"]
    if message.endswith(":"):
        assert answer["message"].startswith(message)
    else:
        assert answer["message"] == message
    assert sim.requests[-1].status == 400
    assert sim.requests[-1].error == "ValidationException"


def _long_prompt(tokens: int) -> str:
    return "a" * (tokens * CHARS_PER_TOKEN)


@pytest.mark.parametrize("route", ROUTES)
async def test_a_prompt_over_the_context_window_is_too_long(route: str) -> None:
    body = _body(messages=[{"role": "user", "content": _long_prompt(200_001)}])

    async with open_simulator(verify_signatures=False) as sim:
        status, headers, payload = await _post(sim, SONNET_4_5, route, body)

    assert status == 400
    assert headers["x-amzn-errortype"].startswith("ValidationException:")
    message = json.loads(payload)["message"]
    prefix, _, limit = message.partition(" > ")
    assert prefix.startswith("prompt is too long: ") and prefix.endswith(" tokens")
    assert int(prefix.split()[-2]) > 200_000
    assert limit == "200000 maximum"


async def test_the_context_1m_beta_opens_a_million_tokens_but_not_to_count_tokens() -> None:
    body = _body(
        anthropic_beta=["context-1m-2025-08-07"],
        messages=[{"role": "user", "content": _long_prompt(200_001)}],
    )
    wrapped = {"input": {"invokeModel": {"body": base64.b64encode(json.dumps(body).encode()).decode()}}}

    async with open_simulator(verify_signatures=False) as sim:
        invoked, _, _ = await _post(sim, SONNET_4_5, "invoke", body)
        counted, _, payload = await _post(sim, SONNET_4_5_FOUNDATION, "count-tokens", wrapped)
        over, _, over_payload = await _post(
            sim, SONNET_4_5, "invoke",
            _body(anthropic_beta=["context-1m-2025-08-07"],
                  messages=[{"role": "user", "content": _long_prompt(1_000_001)}]),
        )

    assert invoked == 200
    assert counted == 400
    assert json.loads(payload)["message"].endswith(" tokens > 200000 maximum")
    assert over == 400
    assert json.loads(over_payload)["message"].endswith(" tokens > 1000000 maximum")


ACCEPTED: list[tuple[str, str, dict[str, Any]]] = [
    ("plain", SONNET_4_5, _body()),
    ("assistant-first-prefill", SONNET_4_5, _body(messages=[{"role": "assistant", "content": "Sure:"}])),
    ("valid-image", SONNET_4_5, _body(messages=[{"role": "user", "content": [VALID_IMAGE, {"type": "text", "text": "what"}]}])),
    ("max-tokens-at-limit", SONNET_4_5, _body(max_tokens=SONNET_4_5_MAX_OUTPUT)),
    ("output-128k-beta", SONNET_3_7, _body(max_tokens=128_000, anthropic_beta=["output-128k-2025-02-19"])),
    ("budget-below-max-tokens", SONNET_4_5, _body(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 4095})),
    (
        "interleaved-budget-above-max-tokens",
        SONNET_4_5,
        _body(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 8000},
              anthropic_beta=["interleaved-thinking-2025-05-14"]),
    ),
    ("adaptive-needs-no-budget", "us.anthropic.claude-opus-4-6-v1", _body(thinking={"type": "adaptive"})),
    (
        "anthropic-defined-tools",
        SONNET_4_5,
        _body(tools=[
            _tool("mcp__github__create-issue"),
            {"type": "bash_20250124", "name": "bash"},
            {"type": "computer_20250124", "name": "computer", "display_width_px": 1024,
             "display_height_px": 768},
        ], anthropic_beta=["computer-use-2025-01-24"], tool_choice={"type": "auto"}),
    ),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("model", "body"), [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
async def test_bodies_bedrock_takes_are_answered(route: str, model: str, body: dict[str, Any]) -> None:
    async with open_simulator(verify_signatures=False) as sim:
        status, _, payload = await _post(sim, model, route, body)

    assert status == 200, payload[:300]
    assert sim.requests[-1].error is None


IDENTICAL_TO = re.compile(r"<identical to (\w+) of seq (\d+)>")
"""How a recording abbreviates a field repeated from an earlier request."""


def _client_bodies(name: str) -> list[dict[str, Any]]:
    """The Messages bodies of one recording, abbreviated fields filled back in."""
    record = json.loads((CLIENTS / name).read_text())
    by_seq = {request["seq"]: request["body"] for request in record["requests"]}
    bodies = []
    for request in record["requests"]:
        body = request["body"]
        if request["path"] != "/v1/messages" or not isinstance(body, dict):
            continue
        for key, value in body.items():
            abbreviated = IDENTICAL_TO.fullmatch(value) if isinstance(value, str) else None
            if abbreviated is not None:
                body[key] = by_seq[int(abbreviated[2])][abbreviated[1]]
        bodies.append(body)
    return bodies


CLAUDE_CODE_BODIES = [
    pytest.param(body, id=f"{name}-{index}")
    for name in ("cc_01_basic_print_mode.json", "cc_02_tool_roundtrip_bash.json", "cc_04_web_search.json")
    for index, body in enumerate(_client_bodies(name))
]


@pytest.mark.parametrize("body", CLAUDE_CODE_BODIES)
async def test_claude_code_bodies_through_the_gateway_are_accepted(tmp_path: Path, body: dict[str, Any]) -> None:
    sent = copy.deepcopy(body)
    sent["stream"] = False
    async with open_gateway(tmp_path) as running:
        with trio.fail_after(TIMEOUT):
            status, _, payload = await _post_gateway(running.url, running.key, sent)

    assert status == 200, payload[:500]
    calls = running.simulator.model_requests()
    assert calls and all(call.status == 200 for call in calls), [(call.status, call.error) for call in calls]


async def _post_gateway(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    payload = json.dumps(body).encode()
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head + payload)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    head_bytes, _, rest = received.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), {}, rest
