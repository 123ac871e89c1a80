"""A deterministic token estimate, good enough for a stand-in.

The simulator counts about four characters of the request's text per token,
so that ``count-tokens`` and the usage of an invocation of the same body agree
and grow with the prompt, which is what gateway tests assert. It also tells
which prompt-cache TTL a request's cache writes use.
"""

from __future__ import annotations

import json
from typing import Any

CHARS_PER_TOKEN = 4
"""Roughly what Claude's tokenizer averages on English prose and code."""

_COUNTED_KEYS = ("system", "messages", "tools", "tool_choice")


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Tokens of the prompt parts of an InvokeModel body (at least 1)."""
    counted = {key: body[key] for key in _COUNTED_KEYS if key in body}
    text = json.dumps(counted, separators=(",", ":"), ensure_ascii=False)
    return max(1, len(text) // CHARS_PER_TOKEN)


def estimate_output_tokens(text: str) -> int:
    """Tokens of generated text (at least 1)."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


CACHE_TTL_5M = "5m"
CACHE_TTL_1H = "1h"


def cache_write_ttl(body: dict[str, Any]) -> str:
    """The TTL the request's cache writes are reported under.

    ``1h`` when every cache breakpoint (``cache_control``) of the request asks
    for ``"ttl": "1h"``; ``5m`` (the default TTL) otherwise.
    """
    # TODO: a request mixing 1h and 5m breakpoints writes the prefix up to
    # its last 1h breakpoint for an hour and the rest for 5 minutes; the
    # simulator reports all of it as 5-minute writes, so a mixed request's
    # 1-hour share is under-reported.
    ttls = {_ttl(control) for control in _cache_controls(body)}
    return CACHE_TTL_1H if ttls == {CACHE_TTL_1H} else CACHE_TTL_5M


def _ttl(control: dict[str, Any]) -> str:
    return CACHE_TTL_1H if control.get("ttl") == CACHE_TTL_1H else CACHE_TTL_5M


def _cache_controls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``cache_control`` object of the request, in prompt order."""
    blocks: list[Any] = [body]
    for part in ("tools", "system"):
        if isinstance(body.get(part), list):
            blocks += body[part]
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for block in content:
                blocks.append(block)
                # A tool result's own blocks may carry breakpoints too.
                inner = block.get("content") if isinstance(block, dict) else None
                if isinstance(inner, list):
                    blocks += inner
    return [
        block["cache_control"]
        for block in blocks
        if isinstance(block, dict) and isinstance(block.get("cache_control"), dict)
    ]
