"""Loads the Bedrock facts shipped in ``ccag/data/bedrock.json``.

Everything ccag knows about Bedrock that could change when AWS changes it
(model ids, beta allowlists, accepted fields, error names, prices) lives in
that one data file so that an update is an edit of data, not of code.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def bedrock_facts() -> dict[str, Any]:
    """The parsed facts file (cached; treat it as read-only)."""
    text = resources.files("ccag.data").joinpath("bedrock.json").read_text()
    facts: dict[str, Any] = json.loads(text)
    return facts


def error_fact(exception_name: str) -> dict[str, Any] | None:
    """The status, Anthropic type and metric label for a Bedrock exception.

    Bedrock names exceptions in ``x-amzn-ErrorType`` as ``ThrottlingException``
    (sometimes with a ``:http://...`` suffix) and in event-stream frames as
    ``throttlingException``; both spellings are accepted.
    """
    name = exception_name.split(":", 1)[0].strip()
    errors: dict[str, Any] = bedrock_facts()["errors"]
    if name in errors:
        return errors[name]
    capitalised = name[:1].upper() + name[1:]
    return errors.get(capitalised)
