"""Capability memory and ValidationException parsing."""

from __future__ import annotations

import pytest

from ccag.anthropic.capabilities import (
    MAX_KEYS,
    CapabilityMemory,
    Rejection,
    parse_validation_rejection,
)
from ccag.anthropic.models import ModelCatalog
from ccag.anthropic.translate import BedrockRequest, translate_messages
from ccag.bedrock.facts import shipped_models

CATALOG = ModelCatalog(shipped_models())


def test_memory_remembers_until_ttl_passes() -> None:
    memory = CapabilityMemory(ttl_seconds=60)
    memory.remember("ep/m", "beta", "effort-2025-11-24", now=100.0)
    memory.remember("ep/m", "field", "context_management", now=100.0)
    assert memory.rejected_betas("ep/m", 159.0) == {"effort-2025-11-24"}
    assert memory.rejected_fields("ep/m", 159.0) == {"context_management"}
    assert memory.verdicts("ep/other", 120.0).betas == frozenset()
    assert memory.verdicts("ep/m", 161.0).betas == frozenset()
    assert memory.snapshot(161.0) == {}


def test_memory_snapshot_shows_time_left() -> None:
    memory = CapabilityMemory(ttl_seconds=60)
    memory.remember("k", "beta", "b", now=0.0)
    assert memory.snapshot(10.0) == {"k": {"beta": {"b": 50.0}}}


def test_memory_is_bounded_in_keys() -> None:
    memory = CapabilityMemory(ttl_seconds=1e6)
    for index in range(MAX_KEYS + 10):
        memory.remember(f"k{index}", "beta", "b", now=float(index))
    assert len(memory.snapshot(MAX_KEYS + 10.0)) == MAX_KEYS
    assert memory.rejected_betas(f"k{MAX_KEYS + 9}", MAX_KEYS + 10.0) == {"b"}


def _sent(body: dict, header: str | None = None, name: str = "claude-sonnet-4-5") -> BedrockRequest:
    model = CATALOG.resolve(name, "us")
    memory = CapabilityMemory(60)
    return translate_messages(body, header, model, memory.verdicts("k", 0))


BODY = {
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
    "context_management": {"edits": []},
    "tools": [{"name": "t", "input_schema": {"type": "object"}, "defer_loading": True}],
}
HEADER = "context-management-2025-06-27,tool-search-tool-2025-10-19,interleaved-thinking-2025-05-14"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("invalid beta flag", Rejection("beta", "*")),
        ("The model returned the following errors: invalid beta flag: interleaved-thinking-2025-05-14",
         Rejection("beta", "interleaved-thinking-2025-05-14")),
        ("The model returned the following errors: context_management: Extra inputs are not permitted",
         Rejection("field", "context_management")),
        ("tools.0.custom.defer_loading: Extra inputs are not permitted",
         Rejection("field", "tools.defer_loading")),
        ("Malformed input request: #: extraneous key [context_management] is not permitted",
         Rejection("field", "context_management")),
        ("Malformed input request: #/tools/0: extraneous key [defer_loading] is not permitted",
         Rejection("field", "tools.defer_loading")),
    ],
)
def test_parse_recognises_refusals_of_what_was_sent(message: str, expected: Rejection) -> None:
    assert parse_validation_rejection(message, _sent(BODY, HEADER)) == expected


@pytest.mark.parametrize(
    "message",
    [
        "metadata: Extra inputs are not permitted",  # not sent: ccag already drops it
        "messages.0.content: Extra inputs are not permitted",
        "max_tokens: Input should be a valid integer",
        "The provided model identifier is invalid.",
        "Input is too long for requested model.",
    ],
)
def test_parse_ignores_errors_that_name_nothing_removable(message: str) -> None:
    assert parse_validation_rejection(message, _sent(BODY, HEADER)) is None


def test_parse_unnamed_beta_refusal_without_betas_is_not_recoverable() -> None:
    assert parse_validation_rejection("invalid beta flag", _sent(BODY)) is None


def test_remembered_rejection_leaves_it_out_of_the_retry() -> None:
    memory = CapabilityMemory(60)
    model = CATALOG.resolve("claude-sonnet-4-5", "us")
    first = translate_messages(BODY, HEADER, model, memory.verdicts("k", 0))
    rejection = parse_validation_rejection("tools.0.custom.defer_loading: Extra inputs are not permitted", first)
    assert rejection is not None
    memory.remember("k", rejection.kind, rejection.name, 0)
    retry = translate_messages(BODY, HEADER, model, memory.verdicts("k", 1))
    assert b"defer_loading" not in retry.body
    assert "tools.defer_loading" in retry.fields_dropped
