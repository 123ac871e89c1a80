"""A deterministic token estimate, good enough for a stand-in.

The simulator counts about four characters of the request's text per token,
so that ``count-tokens`` and the usage of an invocation of the same body agree
and grow with the prompt, which is what gateway tests assert. It also splits a
request's prompt-cache writes between the 5-minute and the 1-hour TTL by
where its breakpoints fall.
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


CACHE_TTL_1H = "1h"
"""The ``ttl`` of a breakpoint written for an hour; any other is 5 minutes."""

# One part of the prompt in cache order: the JSON value (sized only when it
# falls in a 5-minute segment), whether it is a tool_result whose content was
# listed before it, and its cache_control (None where it has none or cannot
# have one, such as a message whose content is a string).
_Piece = tuple[Any, bool, dict[str, Any] | None]


def five_minute_tail_tokens(body: dict[str, Any]) -> int | None:
    """The tokens a request writes to the prompt cache for 5 minutes at most.

    Anthropic bills a request mixing TTLs by three positions in its prompt
    (https://platform.claude.com/docs/en/build-with-claude/prompt-caching,
    "Mixing different TTLs"): A at the highest cache hit, B at the last 1-hour
    breakpoint after A, C at the last breakpoint; ``B - A`` tokens are 1-hour
    writes and ``C - B`` are 5-minute writes. This is ``C - B`` as estimated
    from the request; :func:`split_cache_writes` takes A from the cache writes
    the answer reports.

    Returns:
        ``None`` when no breakpoint asks for an hour (every write is a
        5-minute one), else the estimated tokens after the last 1-hour
        breakpoint up to the last breakpoint (0 when that is the 1-hour one).
    """
    pieces = _pieces_in_prompt_order(body)
    last_1h = last = None
    for index, (_, _, control) in enumerate(pieces):
        if control is not None:
            last = index
            if control.get("ttl") == CACHE_TTL_1H:
                last_1h = index
    if last_1h is None or last is None:
        return None

    # Only a mixed request pays for sizing, and only its 5-minute segment.
    segment = pieces[last_1h + 1 : last + 1]
    chars = sum(_chars(thing, is_shell) for thing, is_shell, _ in segment)
    return -(-chars // CHARS_PER_TOKEN)


def split_cache_writes(written: int, five_minute_tail: int | None) -> tuple[int, int]:
    """``written`` cache-write tokens split into (5-minute, 1-hour) ones.

    The writes end at the last breakpoint (C), so the first ``C - B`` of them
    counted back from there are 5-minute writes and the rest, reaching back
    into the 1-hour prefix, are 1-hour ones. When the answer reports fewer
    writes than the 5-minute segment holds, the cache hit (A) lies past the
    1-hour prefix and all of them are 5-minute writes.

    Args:
        written: the ``cache_creation_input_tokens`` the answer reports.
        five_minute_tail: :func:`five_minute_tail_tokens` of the request.
    """
    if five_minute_tail is None:
        return written, 0
    five_minutes = min(written, five_minute_tail)
    return five_minutes, written - five_minutes


def _pieces_in_prompt_order(body: dict[str, Any]) -> list[_Piece]:
    """The request's prompt parts in the order the cache reads them.

    Tools, then system, then messages, each block in order; a tool_result's
    own blocks come before the tool_result's breakpoint; the top-level
    ``cache_control`` (automatic caching) marks the end of the prompt.
    """
    pieces: list[_Piece] = []
    for part in ("tools", "system"):
        value = body.get(part)
        if isinstance(value, list):
            pieces += [(block, False, _control(block)) for block in value]
        elif value is not None:
            pieces.append((value, False, None))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            pieces.append((message, False, None))
            continue
        for block in content:
            inner = block.get("content") if isinstance(block, dict) else None
            if isinstance(inner, list):
                pieces += [(child, False, _control(child)) for child in inner]
                pieces.append((block, True, _control(block)))
            else:
                pieces.append((block, False, _control(block)))
    pieces.append((None, False, _control(body)))
    return pieces


def _control(block: Any) -> dict[str, Any] | None:
    control = block.get("cache_control") if isinstance(block, dict) else None
    return control if isinstance(control, dict) else None


def _chars(thing: Any, is_shell: bool) -> int:
    if thing is None:
        return 0
    if is_shell:
        thing = {key: value for key, value in thing.items() if key != "content"}
    return len(json.dumps(thing, separators=(",", ":"), ensure_ascii=False))
