"""What the simulator answers when no scenario is scripted.

The answer is deterministic and depends only on the conversation:

* the last user message is a ``tool_result``: a text answer that quotes the
  result's content (``Tool result: ...``), which ends a tool round trip;
* its text holds a directive (below): the directive decides;
* otherwise: a short text answer echoing the start of the last user text.

Directives, written anywhere in the last user message's text:

``[sim:tool NAME {json}]``
    call tool ``NAME`` with that JSON input (``{}`` if omitted).
``[sim:fail-stream]``
    on a streaming call, fail mid-stream with a ``modelStreamErrorException``
    frame after two events; a non-streaming call answers normally (how a
    client's fallback to non-streaming is tested).
``[sim:text N]``
    answer in N text deltas.
``[sim:thinking]``
    answer with a thinking block (thinking and signature deltas), then text.
``[sim:error NAME]``
    refuse the call with Bedrock exception NAME (``ThrottlingException``...).
``[sim:search N]``
    when the request offers a tool named ``web_search`` (ccag's stand-in
    for Anthropic's server tool): call it with ``{"query": <the prompt>}``
    until it has been called N times since the prompt, then answer as after
    any tool result. A ``tool_choice`` forcing ``web_search`` without the
    directive, or ``web_search`` as the only tool offered, means one search
    (Claude Code's WebSearch sub-request, which sends either).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ccag.simulator.scenarios import (
    Fail,
    Scenario,
    StreamException,
    Text,
    Thinking,
    ToolUse,
)

ECHO_CHARS = 60
"""How much of the prompt the default answer repeats: enough to recognise it."""

_DIRECTIVE = re.compile(r"\[sim:([a-z-]+)(?:\s+([^\]\s]+))?(?:\s+(\{.*?\}))?\]", re.DOTALL)


def _text_of(content: Any, *, include_tool_results: bool = False) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif include_tool_results and block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def _last_user_message(body: dict[str, Any]) -> Any:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message.get("content")
    return None


def _is_tool_result(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )


def default_text(body: dict[str, Any]) -> str:
    """The deterministic text answer for ``body``."""
    content = _last_user_message(body)
    if _is_tool_result(content):
        return "Tool result: " + _text_of(content, include_tool_results=True).strip()
    prompt = " ".join(_DIRECTIVE.sub("", _text_of(content)).split())
    return "Simulated reply to: " + prompt[:ECHO_CHARS]


def _tool_input(text: str, start: int) -> dict[str, Any]:
    """The JSON object that starts at ``start``, read whole.

    The directive pattern stops at the first ``}]``, which an input holding a
    list of objects contains; the JSON decoder knows where the object ends.
    """
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return {"raw": text[start:]}
    return value if isinstance(value, dict) else {}


def default_scenario(body: dict[str, Any]) -> Scenario:
    """The scenario for an unscripted call with InvokeModel ``body``."""
    search = _search_scenario(body)
    if search is not None:
        return search
    content = _last_user_message(body)
    if _is_tool_result(content):
        return Text()

    text = _text_of(content)
    for match in _DIRECTIVE.finditer(text):
        name, argument, payload = match.groups()
        if name == "tool" and argument:
            tool_input = _tool_input(text, match.start(3)) if payload else {}
            return ToolUse(name=argument, input=tool_input)
        if name == "fail-stream":
            return StreamException()
        if name == "text" and argument and argument.isdigit():
            return Text(deltas=max(1, int(argument)))
        if name == "thinking":
            return Thinking()
        if name == "error" and argument:
            return Fail(name=argument)
    return Text()


SEARCH_TOOL_NAME = "web_search"
_SEARCH_DIRECTIVE = re.compile(r"\[sim:search\s+(\d+)\]")


def _search_scenario(body: dict[str, Any]) -> Scenario | None:
    """The next step of a ``[sim:search N]`` conversation, or None."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not any(
        isinstance(tool, dict) and tool.get("name") == SEARCH_TOOL_NAME for tool in tools
    ):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None

    # The prompt is the last user turn with text; the searches are the calls since.
    prompt_at = None
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        is_user = isinstance(message, dict) and message.get("role") == "user"
        if is_user and _text_of(message.get("content")).strip():
            prompt_at = index
            break
    if prompt_at is None:
        return None
    prompt = _text_of(messages[prompt_at].get("content"))
    match = _SEARCH_DIRECTIVE.search(prompt)
    choice = body.get("tool_choice")
    if match is not None:
        wanted = int(match.group(1))
    elif (
        isinstance(choice, dict) and choice.get("type") == "tool" and choice.get("name") == SEARCH_TOOL_NAME
    ) or len(tools) == 1:
        wanted = 1
    else:
        return None
    done = sum(
        1
        for message in messages[prompt_at + 1 :]
        if isinstance(message, dict) and message.get("role") == "assistant"
        and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_use" and block.get("name") == SEARCH_TOOL_NAME
    )
    if done >= wanted:
        return Text() if done else None
    query = " ".join(_DIRECTIVE.sub("", _SEARCH_DIRECTIVE.sub("", prompt)).split())[:ECHO_CHARS]
    if done:
        query = f"{query} (search {done + 1})"
    return ToolUse(name=SEARCH_TOOL_NAME, input={"query": query or "search"})
