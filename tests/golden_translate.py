"""Runs one golden translation case; shared by the test and the regenerator."""

from __future__ import annotations

import base64
import json
from typing import Any

from ccag.anthropic.capabilities import Verdicts
from ccag.anthropic.models import ModelCatalog
from ccag.anthropic.translate import translate_count_tokens, translate_messages
from ccag.bedrock.facts import shipped_models


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """The translation of one ``*.in.json`` case, as a JSON-ready dict."""
    model = ModelCatalog(shipped_models()).resolve(case["model"], case.get("geo_prefix", "us"))
    verdicts = Verdicts(
        betas=frozenset(case.get("rejected_betas", ())),
        fields=frozenset(case.get("rejected_fields", ())),
    )
    if case.get("kind") == "count_tokens":
        raw = translate_count_tokens(case["body"], case.get("beta_header"), model, verdicts)
        outer = json.loads(raw)
        inner = outer["input"]["invokeModel"]["body"]
        return {"base_model_id": model.base_model_id, "invoke_body": json.loads(base64.b64decode(inner))}
    translated = translate_messages(case["body"], case.get("beta_header"), model, verdicts)
    return {
        "model_id": translated.model_id,
        "stream": translated.stream,
        "betas_sent": list(translated.betas_sent),
        "betas_dropped": list(translated.betas_dropped),
        "fields_dropped": list(translated.fields_dropped),
        "body": json.loads(translated.body),
    }
