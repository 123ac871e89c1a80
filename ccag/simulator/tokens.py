"""A deterministic token estimate, good enough for a stand-in.

The simulator counts about four characters of the request's text per token,
so that ``count-tokens`` and the usage of an invocation of the same body agree
and grow with the prompt, which is what gateway tests assert.
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
