"""The requests the benchmark sends, built once as raw HTTP/1.1 bytes.

Two request bodies, each streamed or not:

* ``1k``: a short conversation, about 1 KB;
* ``76k``: shaped like a real Claude Code request (see
  /work/shared/clients/cc_01_basic_print_mode.json): 24 tools with long
  descriptions and JSON schemas, a long system prompt in cached blocks,
  Claude Code's beta header, about 76 KB.

Every body asks the simulator for 50 text deltas with the ``[sim:text 50]``
directive (and enough prompt text that its echoed answer has 50 characters to
split). The gateway gets the Anthropic body; the direct client gets the
Bedrock body ccag's own translation makes of it, SigV4-signed to the
simulator, so both sides carry the same upstream payload.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from ccag.anthropic.capabilities import NO_VERDICTS
from ccag.anthropic.models import ModelCatalog
from ccag.anthropic.translate import translate_messages
from ccag.bedrock.facts import default_geo_prefix, shipped_models
from ccag.bedrock.signing import AwsCredentials, model_path, sign_request

MODEL = "claude-sonnet-4-5"
ANTHROPIC_VERSION = "2023-06-01"
DELTAS_DIRECTIVE = "[sim:text 50]"

# The tool names of a Claude Code session (24 of them).
CLAUDE_CODE_TOOLS = (
    "Agent", "Bash", "CronCreate", "CronDelete", "CronList", "Edit",
    "EnterWorktree", "ExitWorktree", "NotebookEdit", "Read", "ReportFindings",
    "ScheduleWakeup", "SendMessage", "Skill", "TaskCreate", "TaskGet", "TaskList",
    "TaskOutput", "TaskStop", "TaskUpdate", "WebFetch", "WebSearch", "Workflow",
    "Write",
)
CLAUDE_CODE_BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,"
    "context-management-2025-06-27,effort-2025-11-24"
)

# Sizes of the Claude Code-like body's parts, chosen so the whole is ~76 KB
# like the recorded request: long tool descriptions dominate, then the
# system prompt.
TOOL_DESCRIPTION_CHARS = 1600
TOOL_PROPERTIES = 5
SYSTEM_PROMPT_CHARS = 12000

_PROSE = (
    "Use this tool when the task needs it; read the file first, keep edits "
    "small, explain what changed and why, and never guess at paths. "
)


def _prose(chars: int) -> str:
    return (_PROSE * (chars // len(_PROSE) + 1))[:chars]


def _tool(name: str) -> dict[str, Any]:
    properties = {
        f"param_{index}": {
            "description": _prose(120),
            "type": "string" if index % 2 else "integer",
        }
        for index in range(TOOL_PROPERTIES)
    }
    return {
        "name": name,
        "description": _prose(TOOL_DESCRIPTION_CHARS),
        "input_schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": properties,
            "required": ["param_0"],
            "additionalProperties": False,
        },
    }


def anthropic_body(size: str, stream: bool) -> dict[str, Any]:
    """The ``POST /v1/messages`` body of one workload."""
    prompt = (
        "Please summarise the current state of the repository in one short "
        "paragraph for the changelog. " + DELTAS_DIRECTIVE
    )
    if size == "1k":
        body: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 1024,
            "system": "You are a concise assistant. " + _prose(500),
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": prompt}]},
            ],
        }
    elif size == "76k":
        body = {
            "model": MODEL,
            "max_tokens": 32000,
            "system": [
                {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."},
                {
                    "type": "text",
                    "text": _prose(SYSTEM_PROMPT_CHARS),
                    "cache_control": {"type": "ephemeral"},
                },
            ],
            "tools": [_tool(name) for name in CLAUDE_CODE_TOOLS],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "<system-reminder>" + _prose(300) + "</system-reminder>"},
                        {"type": "text", "text": prompt, "cache_control": {"type": "ephemeral"}},
                    ],
                },
            ],
            "metadata": {"user_id": "bench-user"},
        }
    else:
        raise ValueError(f"unknown body size {size!r}")
    if stream:
        body["stream"] = True
    return body


def encode_json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def gateway_request(host: str, port: int, key: str, size: str, stream: bool) -> bytes:
    """The raw HTTP/1.1 request a client of the gateway sends."""
    body = encode_json(anthropic_body(size, stream))
    headers = [
        ("Host", f"{host}:{port}"),
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("anthropic-version", ANTHROPIC_VERSION),
        ("x-api-key", key),
        ("User-Agent", "ccag-bench/1"),
        ("Content-Length", str(len(body))),
    ]
    if size == "76k":
        headers.append(("anthropic-beta", CLAUDE_CODE_BETAS))
    return _raw("/v1/messages?beta=true", headers, body)


def bedrock_body(size: str, stream: bool, region: str) -> tuple[str, bytes]:
    """The Bedrock model id and body ccag's translation makes of a workload."""
    body = anthropic_body(size, stream)
    catalog = ModelCatalog(shipped_models(), None)
    model = catalog.resolve(body["model"], default_geo_prefix(region))
    beta_header = CLAUDE_CODE_BETAS if size == "76k" else None
    translated = translate_messages(body, beta_header, model, NO_VERDICTS)
    return translated.model_id, translated.body


def direct_request(
    host: str,
    port: int,
    size: str,
    stream: bool,
    *,
    access_key: str,
    secret_key: str,
    region: str,
) -> bytes:
    """A SigV4-signed InvokeModel(WithResponseStream) request to the simulator.

    Signed once, now: the simulator accepts a signature for five minutes, so
    the caller signs again before each run.
    """
    model_id, body = bedrock_body(size, stream, region)
    action = "invoke-with-response-stream" if stream else "invoke"
    path = model_path(model_id, action)
    host_header = f"{host}:{port}"
    to_sign = [
        ("host", host_header),
        ("content-type", "application/json"),
        ("x-amzn-bedrock-accept" if stream else "accept", "application/json"),
    ]
    signed = sign_request(
        "POST",
        f"http://{host_header}{path}",
        to_sign,
        body,
        AwsCredentials(access_key, secret_key),
        region,
        "bedrock",
        datetime.datetime.now(datetime.UTC),
    )
    signed.append(("content-length", str(len(body))))
    return _raw(path, signed, body)


def _raw(target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = f"POST {target} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers
    )
    return head.encode("latin-1") + b"\r\n" + body
