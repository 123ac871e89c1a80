"""Operator settings that change what the gateway does: beta allowlists,
body logging, the access log."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from ccag.app import run_gateway
from ccag.config import load_config
from ccag.errors import ConfigError
from ccag.simulator import ToolUse
from tests.e2e_client import message_body, post_messages, request
from tests.gateway_fixture import open_gateway

TIMEOUT_S = 20
INTERLEAVED = "interleaved-thinking-2025-05-14"


async def test_betas_file_removes_a_beta_from_a_models_allowlist(tmp_path) -> None:
    betas_file = tmp_path / "betas.json"
    betas_file.write_text(json.dumps({"claude-sonnet-4-5": {"remove": [INTERLEAVED]}}))

    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as plain:
            await post_messages(
                plain.port, plain.key, message_body(), ("anthropic-beta", INTERLEAVED)
            )
            default_sent = plain.simulator.model_requests()[-1].body.get("anthropic_beta")
        async with open_gateway(
            tmp_path / "overridden", settings={"betas_file": str(betas_file)}
        ) as overridden:
            reply = await post_messages(
                overridden.port, overridden.key, message_body(), ("anthropic-beta", INTERLEAVED)
            )
            overridden_sent = overridden.simulator.model_requests()[-1].body.get("anthropic_beta")

    assert default_sent == [INTERLEAVED]
    assert reply.status == 200
    assert overridden_sent is None


async def test_a_betas_file_naming_an_unknown_model_stops_the_start(tmp_path) -> None:
    betas_file = tmp_path / "betas.json"
    betas_file.write_text(json.dumps({"claude-nonexistent-9": ["x"]}))

    config = load_config(
        {"port": 0, "store": str(tmp_path / "s.sqlite3"), "betas_file": str(betas_file)},
        environ={},
    )

    with pytest.raises(ConfigError, match="unknown model 'claude-nonexistent-9'"):
        with trio.fail_after(TIMEOUT_S):
            await run_gateway(config, environ={})


async def test_log_bodies_logs_request_and_response_bodies_only_when_asked(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="ccag.bodies")
    secret_prompt = "the-prompt-text-4711"

    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path / "quiet") as quiet:
            await post_messages(quiet.port, quiet.key, message_body(text=secret_prompt))
        quiet_text = caplog.text
        caplog.clear()
        async with open_gateway(tmp_path / "loud", settings={"log_bodies": True}) as loud:
            await post_messages(loud.port, loud.key, message_body(text=secret_prompt))
        loud_text = caplog.text

    assert secret_prompt not in quiet_text
    assert f'"text": "{secret_prompt}"' in loud_text or secret_prompt in loud_text
    assert "response body" in loud_text


async def test_every_route_gets_one_access_line_without_secrets(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ccag.access")

    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            await request(running.port, "GET", "/health")
            await request(running.port, "GET", "/nowhere")
            await post_messages(running.port, running.key, message_body())
            await post_messages(running.port, "sk-ccag-wrong", message_body())

    lines = [record.getMessage() for record in caplog.records if record.name == "ccag.access"]
    assert any(" GET /health 200 " in line for line in lines)
    assert any(" GET /nowhere 404 " in line for line in lines)
    assert any("POST /v1/messages 200 model=claude-sonnet-4-5" in line for line in lines)
    assert any("POST /v1/messages 401" in line for line in lines)
    assert len(lines) == 4
    assert all(running.key not in line and "sk-ccag-wrong" not in line for line in lines)


async def test_metrics_max_tool_names_bounds_the_tool_label(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, settings={"metrics_max_tool_names": 2}) as running:
            for name in ("alpha", "beta", "gamma", "delta"):
                running.simulator.script(ToolUse(name, {"x": 1}))
                await post_messages(running.port, running.key, message_body())
            exposition = running.telemetry.render_prometheus()[0].decode()

    tool_lines = [line for line in exposition.splitlines() if line.startswith("ccag_tool_calls_total{")]
    tools = sorted(line.split('tool="')[1].split('"')[0] for line in tool_lines)
    assert tools == ["alpha", "beta", "other"]
    assert 'tool="other",type="builtin"} 2.0' in exposition
