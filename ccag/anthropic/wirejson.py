"""Compact JSON bytes as the Anthropic API and Bedrock exchange them."""

from __future__ import annotations

import json
from typing import Any


def dump_json(value: Any) -> bytes:
    """Compact JSON as UTF-8.

    A lone surrogate escape (``"\\ud800"``, which JavaScript's JSON.stringify
    writes for a cut emoji) cannot be encoded as UTF-8; such a document is
    written with ASCII escapes instead, which carry it through unchanged.
    """
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()
