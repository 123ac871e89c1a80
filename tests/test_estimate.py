"""Local input-token estimates."""

from __future__ import annotations

import json
from pathlib import Path

from ccag.anthropic.estimate import (
    IMAGE_TOKENS,
    TOOLS_PREAMBLE_TOKENS,
    estimate_input_tokens,
)


def test_estimate_scales_with_text() -> None:
    short = estimate_input_tokens({"messages": [{"role": "user", "content": "hi"}]})
    long = estimate_input_tokens({"messages": [{"role": "user", "content": "word " * 700}]})
    assert 1 <= short < 10
    assert 900 <= long <= 1100  # 3500 characters at ~3.5 per token


def test_estimate_counts_images_at_a_fixed_cost() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100000}}
    body = {"messages": [{"role": "user", "content": [image]}]}
    assert IMAGE_TOKENS <= estimate_input_tokens(body) < IMAGE_TOKENS + 20


def test_estimate_counts_tools_and_system() -> None:
    bare = {"messages": [{"role": "user", "content": "hi"}]}
    with_tools = dict(bare, tools=[{"name": "Bash", "description": "run " * 100, "input_schema": {}}])
    with_system = dict(bare, system="rules " * 100)
    assert estimate_input_tokens(with_tools) > estimate_input_tokens(bare) + TOOLS_PREAMBLE_TOKENS
    assert estimate_input_tokens(with_system) > estimate_input_tokens(bare) + 150


def test_estimate_of_nothing_is_zero_and_never_raises() -> None:
    assert estimate_input_tokens({}) == 0
    assert estimate_input_tokens([]) == 0  # type: ignore[arg-type]
    deep: object = "x"
    for _ in range(500):
        deep = [deep]
    assert estimate_input_tokens({"messages": deep}) >= 0


def test_estimate_claude_code_request_is_plausible() -> None:
    record = json.loads(Path("/work/shared/clients/cc_01_basic_print_mode.json").read_text())
    body = record["requests"][1]["body"]
    characters = len(json.dumps(body))
    estimate = estimate_input_tokens(body)
    assert characters / 6 < estimate < characters / 2.5
