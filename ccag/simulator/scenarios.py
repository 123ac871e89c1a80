"""What a scripted model call does: the answer, and what goes wrong with it.

Answers (:class:`Text`, :class:`ToolUse`, :class:`Thinking`) say what the
model replies. Faults (:class:`Fail`, :class:`StreamException`,
:class:`Stall`, :class:`Truncate`, :class:`Garbage`, :class:`Reset`) wrap an
answer and spoil its delivery; a fault that only makes sense on a stream lets
a non-streaming call receive the wrapped answer unharmed, the way a real
mid-stream failure cannot happen without a stream.

Scenarios are plain frozen attrs classes so tests can build them in Python;
:func:`scenario_from_json` builds the same from the JSON of the HTTP control
API (``{"type": "text", "text": "hi"}``).
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Usage:
    """Token counts to report. ``None`` means: compute from the request or reply."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


@attrs.frozen
class Text:
    """A text answer.

    Attributes:
        text: the reply; ``None`` is the default deterministic answer.
        deltas: how many ``text_delta`` events the text is split into.
        delay: seconds between streamed events.
        usage: token counts to report.
        stop_reason: the ``stop_reason`` of the message.
    """

    text: str | None = None
    deltas: int = 3
    delay: float = 0.0
    usage: Usage = Usage()
    stop_reason: str = "end_turn"


@attrs.frozen
class ToolUse:
    """A ``tool_use`` block, its input streamed as ``input_json_delta`` pieces.

    Attributes:
        name: the tool to call.
        input: the tool's input.
        text: an optional text block before the call.
        pieces: how many non-empty JSON pieces (an empty first piece is added,
            as Anthropic's API does).
        tool_id: the block id; a fresh ``toolu_bdrk_...`` if omitted.
    """

    name: str
    input: dict[str, Any] = attrs.field(factory=dict)
    text: str | None = None
    pieces: int = 3
    tool_id: str | None = None
    delay: float = 0.0
    usage: Usage = Usage()


@attrs.frozen
class Thinking:
    """A thinking block (or a redacted one), then a text answer.

    Attributes:
        thinking: the thinking text, sent as ``thinking_delta`` events.
        signature: sent as one ``signature_delta``.
        redacted: send a ``redacted_thinking`` block with opaque data instead.
        text: the answer after thinking; ``None`` is the default answer.
    """

    thinking: str = "Let me think about this step by step."
    signature: str = "EqQBCkYIBxgCKkBzaW11bGF0ZWQgc2lnbmF0dXJl"
    redacted: bool = False
    text: str | None = None
    deltas: int = 3
    delay: float = 0.0
    usage: Usage = Usage()


Answer = Text | ToolUse | Thinking


@attrs.frozen
class Fail:
    """Refuse the call with a Bedrock error before any response head.

    Attributes:
        name: the exception name (``ThrottlingException``, ``ValidationException``...).
        status: the HTTP status; Bedrock's own for ``name`` if omitted.
        message: the ``message``; a stock Bedrock text if omitted.
    """

    name: str = "ThrottlingException"
    status: int | None = None
    message: str | None = None


@attrs.frozen
class StreamException:
    """On a stream, send an exception frame after ``after_events`` events.

    A non-streaming call gets ``answer`` normally.
    """

    exception_type: str = "modelStreamErrorException"
    message: str = "The model stream returned an error. Try your request again."
    after_events: int = 2
    answer: Answer = Text()


@attrs.frozen
class Stall:
    """Go silent for ``seconds``: before the head (``after_events`` None) or
    after that many streamed events; then carry on with ``answer``."""

    seconds: float
    after_events: int | None = None
    answer: Answer = Text()


@attrs.frozen
class Truncate:
    """End a stream cleanly after ``after_events`` events, with no
    ``message_stop``; with ``mid_frame`` half of the next frame is sent first.
    A non-streaming call gets ``answer`` normally."""

    after_events: int = 2
    mid_frame: bool = False
    answer: Answer = Text()


@attrs.frozen
class Garbage:
    """After ``after_events`` events send bytes that are not a valid frame:
    ``kind`` ``"bytes"`` (random bytes) or ``"crc"`` (the next frame with a
    corrupted message CRC), then end the stream. A non-streaming call gets
    ``answer`` normally."""

    after_events: int = 2
    kind: str = attrs.field(default="bytes", validator=attrs.validators.in_(("bytes", "crc")))
    answer: Answer = Text()


@attrs.frozen
class Reset:
    """Drop the connection: before the head (``after_events`` None) or after
    that many streamed events."""

    after_events: int | None = None
    answer: Answer = Text()


Fault = Fail | StreamException | Stall | Truncate | Garbage | Reset
Scenario = Answer | Fault

SCENARIO_TYPES: dict[str, type] = {
    "text": Text,
    "tool_use": ToolUse,
    "thinking": Thinking,
    "fail": Fail,
    "stream_exception": StreamException,
    "stall": Stall,
    "truncate": Truncate,
    "garbage": Garbage,
    "reset": Reset,
}


def answer_of(scenario: Scenario) -> Answer | None:
    """The answer a scenario delivers, or ``None`` for :class:`Fail`."""
    if isinstance(scenario, (Text, ToolUse, Thinking)):
        return scenario
    if isinstance(scenario, Fail):
        return None
    return scenario.answer


def scenario_from_json(data: Any) -> Scenario:
    """Build a scenario from its JSON form.

    Args:
        data: an object with ``type`` (one of :data:`SCENARIO_TYPES`) and the
            class's fields; ``usage`` and ``answer`` nest.

    Raises:
        ValueError: the type or a field is unknown or has the wrong shape.
    """
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        # A wrongly shaped JSON document is a bad value (as documented), not a type bug.
        raise ValueError("a scenario is an object with a string 'type'")  # noqa: TRY004
    cls = SCENARIO_TYPES.get(data["type"])
    if cls is None:
        raise ValueError(f"unknown scenario type {data['type']!r}; one of {sorted(SCENARIO_TYPES)}")

    names = {field.name for field in attrs.fields(cls)}
    fields = {key: value for key, value in data.items() if key != "type"}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"{data['type']}: unknown field(s) {', '.join(unknown)}")

    if "usage" in fields:
        if not isinstance(fields["usage"], dict):
            raise ValueError("usage must be an object")
        fields["usage"] = Usage(**fields["usage"])
    if "answer" in fields:
        answer = scenario_from_json(fields["answer"])
        if not isinstance(answer, (Text, ToolUse, Thinking)):
            raise ValueError("answer must be a text, tool_use or thinking scenario")
        fields["answer"] = answer
    try:
        scenario: Scenario = cls(**fields)
    except TypeError as exc:
        raise ValueError(f"{data['type']}: {exc}") from None
    return scenario
