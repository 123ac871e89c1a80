"""Fuzz target: any JSON-like body translates or raises ApiError, nothing else.

Run with Hypothesis (``python fuzz/fuzz_translate.py``) or, when atheris is
installed, with ``python fuzz/fuzz_translate.py --atheris`` on raw bytes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.anthropic.capabilities import Verdicts
from ccag.anthropic.estimate import estimate_input_tokens
from ccag.anthropic.models import ModelCatalog
from ccag.anthropic.translate import translate_count_tokens, translate_messages
from ccag.bedrock.facts import shipped_models
from ccag.errors import ApiError

_CATALOG = ModelCatalog(shipped_models())
_MODELS = [
    _CATALOG.resolve(name, "global")
    for name in ("claude-opus-4-8", "claude-sonnet-4-5[1m]", "claude-opus-4-6")
] + [_CATALOG.resolve("claude-3-5-haiku", "us")]
_VERDICTS = [Verdicts(), Verdicts(frozenset({"*"}), frozenset({"tools.strict", "thinking"}))]

_KEYS = st.sampled_from([
    "model", "messages", "max_tokens", "system", "tools", "tool_choice", "thinking",
    "cache_control", "type", "text", "role", "content", "ttl", "betas", "anthropic_beta",
    "stream", "metadata", "output_config", "effort", "name", "input_schema", "budget_tokens",
    "context_management", "tool_use_id", "defer_loading",
])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False),
    st.sampled_from(["user", "assistant", "system", "text", "ephemeral", "1h", "5m",
                     "adaptive", "enabled", "tool_result", "x-anthropic-billing-header: x",
                     "web_search_20250305", "custom"]),
    st.text(max_size=8),
)
JSON_LIKE = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(_KEYS | st.text(max_size=5), children, max_size=6),
    ),
    max_leaves=40,
)
BODIES = st.one_of(
    JSON_LIKE,
    st.fixed_dictionaries(
        {"messages": st.lists(JSON_LIKE, max_size=5), "max_tokens": JSON_LIKE},
        optional={k: JSON_LIKE for k in ("system", "tools", "thinking", "tool_choice",
                                         "cache_control", "betas", "stream")},
    ),
)


def check(body: Any, beta_header: str | None, model_index: int, verdict_index: int) -> None:
    """The invariant: translation succeeds with valid JSON, or raises ApiError."""
    model = _MODELS[model_index % len(_MODELS)]
    verdicts = _VERDICTS[verdict_index % len(_VERDICTS)]
    for translate in (translate_messages, translate_count_tokens):
        try:
            result = translate(body, beta_header, model, verdicts)
        except ApiError as error:
            assert error.status == 400
            continue
        raw = result if isinstance(result, bytes) else result.body
        assert isinstance(json.loads(raw), dict)
    estimate_input_tokens(body)


@settings(max_examples=2000, deadline=None)
@given(BODIES, st.one_of(st.none(), st.text(max_size=40)), st.integers(0, 3), st.integers(0, 1))
def fuzz_hypothesis(body: Any, beta_header: str | None, model_index: int, verdict_index: int) -> None:
    check(body, beta_header, model_index, verdict_index)


def _atheris_main() -> None:  # pragma: no cover - optional tool
    import atheris  # type: ignore[import-not-found]

    def one_input(data: bytes) -> None:
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return
        check(body, None, len(data), len(data) // 7)

    atheris.Setup(sys.argv[:1], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    if "--atheris" in sys.argv:
        _atheris_main()
    else:
        fuzz_hypothesis()
