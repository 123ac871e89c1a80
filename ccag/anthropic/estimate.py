"""A local input-token estimate for ``count_tokens`` when Bedrock cannot count.

Claude's tokenizer is not public, so this is a deliberate approximation:
English prose and code run at about 3.5 to 4 characters per token, and the
estimate divides all the text a request carries (system, message text, tool
names, descriptions and schemas, tool inputs and results) by
:data:`CHARS_PER_TOKEN`, leaning towards slightly more tokens rather than
fewer (an estimate that is low lets a client overrun its context window).
Images cost a fixed :data:`IMAGE_TOKENS` (Anthropic's cost for an image at
its largest before resizing, about 1.15 megapixels / 750); base64 documents
cost by size. Each message, and the tool-use preamble when tools are
present, adds a small fixed overhead.
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 3.5
IMAGE_TOKENS = 1600
# A PDF page is roughly 1,500-3,000 tokens and 50-100 KB; one token per 40
# decoded bytes sits in the middle of that.
DOCUMENT_BYTES_PER_TOKEN = 40
PER_MESSAGE_TOKENS = 4
# The hidden system text Anthropic adds when a request defines tools.
TOOLS_PREAMBLE_TOKENS = 350

# Nesting deeper than this is not counted: it stops a hostile body from
# exhausting the stack, and no real request comes near it.
MAX_DEPTH = 64

_SKIPPED_KEYS = frozenset({"type", "cache_control", "signature", "id", "tool_use_id", "media_type"})


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Estimate the input tokens of a Messages request body.

    Args:
        body: the client's ``count_tokens`` or ``messages`` body.

    Returns:
        A non-negative estimate (at least 1 for any non-empty request).
    """
    if not isinstance(body, dict):
        return 0
    counter = _Counter()
    counter.walk(body.get("system"), 0)
    counter.walk(body.get("messages"), 0)
    tools = body.get("tools")
    counter.walk(tools, 0)

    tokens = counter.chars / CHARS_PER_TOKEN + counter.fixed_tokens
    messages = body.get("messages")
    if isinstance(messages, list):
        tokens += PER_MESSAGE_TOKENS * len(messages)
    if isinstance(tools, list) and tools:
        tokens += TOOLS_PREAMBLE_TOKENS
    return max(1, round(tokens)) if tokens > 0 else 0


class _Counter:
    def __init__(self) -> None:
        self.chars = 0
        self.fixed_tokens = 0.0

    def walk(self, value: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if isinstance(value, str):
            self.chars += len(value)
        elif isinstance(value, list):
            for item in value:
                self.walk(item, depth + 1)
        elif isinstance(value, dict):
            self._walk_object(value, depth)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.chars += len(str(value))

    def _walk_object(self, value: dict[str, Any], depth: int) -> None:
        kind = value.get("type")
        if kind == "image":
            self.fixed_tokens += IMAGE_TOKENS
            return
        if kind == "document":
            source = value.get("source")
            if isinstance(source, dict) and source.get("type") == "base64":
                data = source.get("data")
                if isinstance(data, str):
                    self.fixed_tokens += len(data) * 3 / 4 / DOCUMENT_BYTES_PER_TOKEN
                return
        if kind == "redacted_thinking":
            # Opaque data standing for thinking; roughly as long as its text.
            data = value.get("data")
            self.chars += len(data) // 2 if isinstance(data, str) else 0
            return
        for key, item in value.items():
            if key in _SKIPPED_KEYS:
                continue
            # Keys of tool schemas and inputs are text the model reads too.
            self.chars += len(key)
            self.walk(item, depth + 1)
