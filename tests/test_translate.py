"""Translation of Anthropic request bodies for Bedrock."""

from __future__ import annotations

import copy
import difflib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.anthropic.capabilities import NO_VERDICTS
from ccag.anthropic.models import ModelCatalog, ResolvedModel
from ccag.anthropic.translate import translate_messages
from ccag.bedrock.facts import shipped_models
from ccag.errors import ApiError
from tests.fuzz_targets import load_target
from tests.golden_translate import run_case

fuzz_translate = load_target("fuzz_translate")

GOLDEN = Path(__file__).parent / "golden" / "translate"
CLIENTS = Path("/work/shared/clients")
CATALOG = ModelCatalog(shipped_models())


def model(name: str, prefix: str = "us") -> ResolvedModel:
    return CATALOG.resolve(name, prefix)


def sent(body: dict[str, Any], name: str = "claude-sonnet-4-5", header: str | None = None) -> dict[str, Any]:
    return json.loads(translate_messages(body, header, model(name), NO_VERDICTS).body)


@pytest.mark.parametrize("case", sorted(p.name[:-8] for p in GOLDEN.glob("*.in.json")))
def test_translate_matches_golden(case: str) -> None:
    given_case = json.loads((GOLDEN / f"{case}.in.json").read_text())
    expected_text = (GOLDEN / f"{case}.out.json").read_text()
    actual_text = json.dumps(run_case(given_case), indent=1, ensure_ascii=False) + "\n"
    if actual_text != expected_text:
        diff = "".join(difflib.unified_diff(
            expected_text.splitlines(True), actual_text.splitlines(True),
            f"{case}.out.json (expected)", f"{case} (actual)",
        ))
        pytest.fail(f"translation of {case} changed; if intended, run "
                    f"tests/golden/translate/regenerate.py and review:\n{diff}")


def test_translate_sets_bedrock_version_and_removes_model_and_stream() -> None:
    out = sent({"model": "m", "stream": True, "max_tokens": 5, "messages": []})
    assert out["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in out and "stream" not in out and "anthropic_beta" not in out


def test_translate_reports_stream_and_model_id() -> None:
    translated = translate_messages(
        {"stream": True, "max_tokens": 5, "messages": []}, None,
        model("claude-haiku-4-5", "eu"), NO_VERDICTS,
    )
    assert translated.stream is True
    assert translated.model_id == "eu.anthropic.claude-haiku-4-5-20251001-v1:0"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("text", "body"),
        ({"max_tokens": 5}, "messages"),
        ({"max_tokens": 5, "messages": {"role": "user"}}, "messages"),
        ({"max_tokens": 5, "messages": ["hi"]}, "messages.0"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        ({"messages": []}, "max_tokens"),
        ({"messages": [], "max_tokens": "5"}, "max_tokens"),
        ({"messages": [], "max_tokens": True}, "max_tokens"),
        ({"messages": [], "max_tokens": 5.0}, "max_tokens"),
    ],
)
def test_translate_rejects_invalid_body_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(ApiError) as raised:
        translate_messages(body, None, model("claude-sonnet-4-5"), NO_VERDICTS)
    assert raised.value.status == 400
    assert raised.value.error_type == "invalid_request_error"
    assert raised.value.message.startswith(f"{field}:")


def test_translate_passes_content_blocks_through_as_the_same_objects() -> None:
    thinking = {"type": "thinking", "thinking": "t", "signature": "c2ln"}
    redacted = {"type": "redacted_thinking", "data": "ZGF0YQ=="}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    body = {
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": [image]},
            {"role": "assistant", "content": [thinking, redacted]},
            {"role": "user", "content": "go on", "cache_control": None},
        ],
    }
    original = copy.deepcopy(body)
    translated = translate_messages(body, None, model("claude-sonnet-4-5"), NO_VERDICTS)
    assert body == original, "the client's body must not be modified"
    out = json.loads(translated.body)
    assert out["messages"][1]["content"] == [thinking, redacted]
    assert out["messages"][0]["content"] == [image]


def test_translate_removes_claude_code_billing_block_only() -> None:
    out = sent({
        "max_tokens": 5, "messages": [],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
            {"type": "text", "text": "x-anthropic-billing-header: kept, not first"},
        ],
    })
    assert out["system"] == [{"type": "text", "text": "x-anthropic-billing-header: kept, not first"}]


def test_translate_converts_thinking_between_adaptive_and_enabled() -> None:
    adaptive = {"max_tokens": 40000, "messages": [], "thinking": {"type": "adaptive"}}
    assert sent(adaptive, "claude-sonnet-4-5")["thinking"] == {"type": "enabled", "budget_tokens": 31999}
    enabled = {"max_tokens": 4000, "messages": [], "thinking": {"type": "enabled", "budget_tokens": 2000}}
    assert sent(enabled, "claude-opus-4-8")["thinking"] == {"type": "adaptive"}
    small = {"max_tokens": 500, "messages": [], "thinking": {"type": "adaptive"}}
    assert "thinking" not in sent(small, "claude-sonnet-4-5")


def test_translate_never_fails_for_a_dropped_beta() -> None:
    translated = translate_messages(
        {"max_tokens": 5, "messages": []}, "no-such-beta-2099-01-01", model("claude-opus-4-8"),
        NO_VERDICTS,
    )
    assert translated.betas_dropped == ("no-such-beta-2099-01-01",)
    assert "anthropic_beta" not in json.loads(translated.body)


def _claude_code_body(size: int) -> tuple[dict[str, Any], str]:
    record = json.loads((CLIENTS / "cc_01_basic_print_mode.json").read_text())["requests"][1]
    body = copy.deepcopy(record["body"])
    headers = {k.lower(): v for k, v in dict(record["headers"]).items()}
    # Grow the recorded (abridged) prompt to a real Claude Code body's size.
    while len(json.dumps(body)) < size:
        body["tools"].append(copy.deepcopy(body["tools"][len(body["tools"]) % 24]))
    return body, headers["anthropic-beta"]


def test_translate_claude_code_body_is_fast() -> None:
    body, header = _claude_code_body(76 * 1024)
    resolved = model("claude-opus-4-8")
    timings = []
    for _ in range(30):
        started = time.perf_counter()
        translate_messages(body, header, resolved, NO_VERDICTS)
        timings.append(time.perf_counter() - started)
    # Well under the 1-2 ms budget on a developer machine; generous for CI.
    assert statistics.median(timings) < 0.005


@settings(max_examples=300, deadline=None)
@given(
    fuzz_translate.BODIES,
    st.one_of(st.none(), st.text(max_size=30)),
    st.integers(0, 3),
    st.integers(0, 1),
)
def test_translate_fuzz_translates_or_raises_api_error(
    body: Any, header: str | None, model_index: int, verdict_index: int
) -> None:
    fuzz_translate.check(body, header, model_index, verdict_index)
