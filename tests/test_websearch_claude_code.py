"""The real Claude Code CLI searches the web through ccag (fake provider on loopback).

Claude Code's WebSearch is a client tool: when the model calls it, the CLI
sends a small request offering only Anthropic's ``web_search_20250305``
server tool, with ``tool_choice`` forcing it and thinking disabled, and
turns the reply's ``server_tool_use`` / ``web_search_tool_result`` / text
blocks into the WebSearch tool's result. Here the simulator plays the model
(``[sim:tool WebSearch ...]`` in the prompt, then the forced search), ccag
runs the search against a fake provider, and the CLI's own result must carry
the provider's answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.claude_code import install_claude_code, run_claude
from tests.websearch_fakes import RESULTS, open_search_gateway

SESSION_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="session")
def claude() -> Path:
    return install_claude_code()


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict):
            parts.append(_texts(block.get("text", block.get("content", ""))))
    return "\n".join(parts)


async def test_claude_code_web_search_through_ccag(
    tmp_path: Path, claude: Path
) -> None:
    prompt = (
        'Search the web for trio. [sim:tool WebSearch {"query":"trio python async"}]'
    )
    with trio.fail_after(SESSION_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            run = await run_claude(
                claude,
                prompt,
                base_url=running.url,
                api_key=running.key,
                home=tmp_path / "home",
                args=["--allowedTools", "WebSearch"],
                timeout=SESSION_TIMEOUT_SECONDS - 10,
            )
            calls = [
                call
                for call in running.simulator.model_requests()
                if call.kind != "count-tokens"
            ]

    assert run.returncode == 0 and not run.is_error, run.explain()

    # The provider got exactly the query the model wrote for the server tool.
    assert len(provider.received) == 1, run.explain()
    searches = [
        call
        for call in calls
        if any(tool.get("name") == "web_search" for tool in call.body.get("tools", []))
    ]
    assert len(searches) == 2, (
        "the forced search call, then the call that reads the results"
    )
    forced = searches[0].body
    assert forced["tools"] == [
        {
            "name": "web_search",
            "description": forced["tools"][0]["description"],
            "input_schema": forced["tools"][0]["input_schema"],
        }
    ]
    # Claude Code 2.1.197 forced the tool; 2.1.332 leaves the choice to the model.
    assert forced.get("tool_choice", {"type": "auto"}) in (
        {"type": "tool", "name": "web_search"},
        {"type": "auto"},
    )
    assert searches[1].body.get("tool_choice", {"type": "auto"}) == {"type": "auto"}
    assert forced.get("thinking", {"type": "disabled"}) == {"type": "disabled"}

    # The CLI turned ccag's blocks into the WebSearch tool result it sent back.
    last = calls[-1].body["messages"]
    tool_result_text = _texts(last[-1]["content"])
    assert RESULTS[0]["url"] in tool_result_text, tool_result_text
    assert RESULTS[0]["title"] in tool_result_text, tool_result_text
    assert RESULTS[0]["url"] in run.result, run.explain()
