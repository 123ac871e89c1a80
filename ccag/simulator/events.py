"""Anthropic stream events for an answer, and the message they add up to.

The events are exactly what Anthropic's Messages API streams (``message_start``
with the full usage, ``content_block_start``/``delta``/``stop``,
``message_delta`` with the stop reason and the cumulative output tokens,
``message_stop``); Bedrock wraps each one in a chunk frame and adds
``amazon-bedrock-invocationMetrics`` to the last. A non-streaming call answers
with :func:`message_from_events` of the same events, so both paths agree.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ccag.simulator.scenarios import Answer, Text, Thinking, ToolUse, Usage
from ccag.simulator.tokens import estimate_output_tokens, split_cache_writes

Event = dict[str, Any]

INVOCATION_METRICS_KEY = "amazon-bedrock-invocationMetrics"


@attrs.frozen
class ReplyContext:
    """What an answer needs from the call it answers.

    Attributes:
        message_id: the ``msg_bdrk_...`` id.
        model_id: the Bedrock model id the message names.
        input_tokens: the estimated prompt size.
        default_text: the text used where an answer leaves ``text`` unset.
        tool_id: the id given to a tool call that names none.
        five_minute_tail: the most of the cache writes that are 5-minute
            ones, ``None`` for all of them (see
            :func:`ccag.simulator.tokens.five_minute_tail_tokens`).
    """

    message_id: str
    model_id: str
    input_tokens: int
    default_text: str
    tool_id: str
    five_minute_tail: int | None = None


def split_evenly(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` non-empty pieces (fewer if it is shorter)."""
    parts = max(1, min(parts, len(text)))
    if not text:
        return [""]
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _text_block(index: int, text: str, deltas: int) -> list[Event]:
    events: list[Event] = [
        {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    ]
    for piece in split_evenly(text, deltas):
        events.append(
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
        )
    events.append({"type": "content_block_stop", "index": index})
    return events


def _tool_block(index: int, answer: ToolUse, tool_id: str) -> list[Event]:
    block = {"type": "tool_use", "id": answer.tool_id or tool_id, "name": answer.name, "input": {}}
    events: list[Event] = [{"type": "content_block_start", "index": index, "content_block": block}]

    # Anthropic's API opens every tool input with an empty piece.
    arguments = json.dumps(answer.input, separators=(",", ":"))
    for piece in [""] + split_evenly(arguments, answer.pieces):
        events.append(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            }
        )
    events.append({"type": "content_block_stop", "index": index})
    return events


def _thinking_block(index: int, answer: Thinking) -> list[Event]:
    if answer.redacted:
        block = {"type": "redacted_thinking", "data": answer.signature}
        return [
            {"type": "content_block_start", "index": index, "content_block": block},
            {"type": "content_block_stop", "index": index},
        ]
    events: list[Event] = [
        {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        }
    ]
    for piece in split_evenly(answer.thinking, answer.deltas):
        events.append(
            {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}}
        )
    events.append(
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "signature_delta", "signature": answer.signature},
        }
    )
    events.append({"type": "content_block_stop", "index": index})
    return events


def _generated_text(events: list[Event]) -> str:
    parts = []
    for event in events:
        delta = event.get("delta", {})
        parts.append(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
    return "".join(parts)


def build_events(answer: Answer, context: ReplyContext) -> list[Event]:
    """The full event sequence of ``answer``, ``message_start`` to ``message_stop``.

    Args:
        answer: what the model replies.
        context: ids, model and sizes of the call being answered.

    Returns:
        The events in order; the last is ``message_stop`` carrying
        ``amazon-bedrock-invocationMetrics``.
    """
    # 1. The content blocks.
    blocks: list[Event] = []
    stop_reason = "end_turn"
    if isinstance(answer, Text):
        blocks = _text_block(0, answer.text if answer.text is not None else context.default_text, answer.deltas)
        stop_reason = answer.stop_reason
    elif isinstance(answer, ToolUse):
        index = 0
        if answer.text:
            blocks += _text_block(index, answer.text, 1)
            index += 1
        blocks += _tool_block(index, answer, context.tool_id)
        stop_reason = "tool_use"
    else:
        blocks = _thinking_block(0, answer)
        text = answer.text if answer.text is not None else context.default_text
        blocks += _text_block(1, text, answer.deltas)

    # 2. The usage, computed where the scenario leaves it open.
    usage: Usage = answer.usage
    input_tokens = context.input_tokens if usage.input_tokens is None else usage.input_tokens
    output_tokens = (
        estimate_output_tokens(_generated_text(blocks)) if usage.output_tokens is None else usage.output_tokens
    )

    # 3. The cache writes split by TTL, as Bedrock reports them.
    written = usage.cache_creation_input_tokens
    written_5m, written_1h = split_cache_writes(written, context.five_minute_tail)

    # 4. The envelope around the blocks.
    start = {
        "type": "message_start",
        "message": {
            "id": context.message_id,
            "type": "message",
            "role": "assistant",
            "model": context.model_id,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": written_5m,
                    "ephemeral_1h_input_tokens": written_1h,
                },
                "output_tokens": 1,
            },
        },
    }
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    stop = {
        "type": "message_stop",
        INVOCATION_METRICS_KEY: {
            "inputTokenCount": input_tokens,
            "outputTokenCount": output_tokens,
            "invocationLatency": 0,
            "firstByteLatency": 0,
            "cacheReadInputTokenCount": usage.cache_read_input_tokens,
            "cacheWriteInputTokenCount": usage.cache_creation_input_tokens,
        },
    }
    return [start, *blocks, delta, stop]


def message_from_events(events: list[Event]) -> dict[str, Any]:
    """The non-streaming message JSON the ``events`` add up to."""
    message: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    partial_json: dict[int, str] = {}
    for event in events:
        kind = event["type"]
        if kind == "message_start":
            message = json.loads(json.dumps(event["message"]))
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial_json[event["index"]] = partial_json.get(event["index"], "") + delta["partial_json"]
        elif kind == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
            message["stop_sequence"] = event["delta"]["stop_sequence"]
            message["usage"]["output_tokens"] = event["usage"]["output_tokens"]

    for index, text in partial_json.items():
        blocks[index]["input"] = json.loads(text) if text else {}
    message["content"] = [blocks[index] for index in sorted(blocks)]
    return message


def invocation_metrics(events: list[Event]) -> dict[str, Any]:
    """The ``amazon-bedrock-invocationMetrics`` of the final event."""
    metrics: dict[str, Any] = events[-1][INVOCATION_METRICS_KEY]
    return metrics
