"""Loads the Bedrock facts shipped in ``ccag/data/bedrock.json``.

Everything ccag knows about Bedrock that could change when AWS changes it
(model ids, beta allowlists, accepted fields, error names, prices) lives in
that one data file so that an update is an edit of data, not of code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs


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


# -- Models, betas and fields ------------------------------------------------


@attrs.frozen
class Pricing:
    """USD per million tokens for one model."""

    input: float
    output: float
    cache_read: float
    cache_write_5m: float
    cache_write_1h: float


@attrs.frozen
class ModelFacts:
    """What Bedrock accepts for one Claude model (see ``models`` in the data file).

    ``fields`` maps each optional request field beyond the core ones (a
    top-level name, or ``parent.child`` for a key inside an object field) to
    the beta it needs, or None when it needs none.
    """

    canonical: str
    display_name: str
    created_at: str
    aliases: tuple[str, ...]
    bedrock_id: str | None
    geo_prefixes: frozenset[str]
    in_region: bool
    context_window: int
    one_million: bool
    max_output: int
    betas: frozenset[str]
    fields: Mapping[str, str | None]
    thinking: frozenset[str]
    cache_ttl_1h: bool
    system_role_message: bool
    count_tokens: bool
    pricing: Pricing


def _model_facts(canonical: str, entry: Mapping[str, Any], betas: frozenset[str]) -> ModelFacts:
    return ModelFacts(
        canonical=canonical,
        display_name=str(entry["display_name"]),
        created_at=str(entry["created_at"]),
        aliases=tuple(entry.get("aliases", ())),
        bedrock_id=entry.get("bedrock_id"),
        geo_prefixes=frozenset(entry.get("geo_prefixes", ())),
        in_region=bool(entry.get("in_region", False)),
        context_window=int(entry["context_window"]),
        one_million=bool(entry["one_million"]),
        max_output=int(entry["max_output"]),
        betas=betas,
        fields=dict(entry.get("fields", {})),
        thinking=frozenset(entry.get("thinking", ())),
        cache_ttl_1h=bool(entry["cache_ttl_1h"]),
        system_role_message=bool(entry["system_role_message"]),
        count_tokens=bool(entry["count_tokens"]),
        pricing=Pricing(**{k: float(v) for k, v in entry["pricing"].items()}),
    )


def model_facts_from(canonical: str, entry: Mapping[str, Any]) -> ModelFacts:
    """Build facts from one table entry (the shipped one or an operator's)."""
    return _model_facts(canonical, entry, frozenset(entry.get("betas", ())))


@functools.cache
def shipped_models() -> dict[str, ModelFacts]:
    """Every Claude model in the data file, by canonical name."""
    table: dict[str, Any] = bedrock_facts()["models"]
    return {
        name: model_facts_from(name, entry)
        for name, entry in table.items()
        if not name.startswith("_")
    }


@functools.cache
def unknown_model_facts() -> ModelFacts:
    """Facts for a Bedrock id or ARN that names no known model.

    Every beta Bedrock accepts for some model is allowed: the capability
    memory learns the rest from Bedrock's refusals.
    """
    entry = bedrock_facts()["unknown_model"]
    return _model_facts("other", entry, bedrock_betas())


@functools.cache
def bedrock_betas() -> frozenset[str]:
    """Betas Bedrock accepts for at least one model."""
    table: dict[str, Any] = bedrock_facts()["betas"]
    return frozenset(
        name for name, fact in table.items()
        if not name.startswith("_") and fact.get("bedrock")
    )


def one_million_beta() -> str:
    """The beta a ``[1m]`` model name turns into."""
    return str(bedrock_facts()["one_million_beta"])


@functools.cache
def core_fields() -> frozenset[str]:
    """Request fields every Claude model on InvokeModel accepts."""
    return frozenset(bedrock_facts()["core_fields"]["names"])


@functools.cache
def dropped_fields() -> frozenset[str]:
    """Anthropic-only request fields that are never sent to Bedrock."""
    return frozenset(bedrock_facts()["dropped_fields"]["names"])


@attrs.frozen
class ToolKeys:
    """Keys a client tool may carry on Bedrock (see ``tool_keys``)."""

    allowed: frozenset[str]
    needs_beta: Mapping[str, str]
    unsupported_type_prefixes: tuple[str, ...]


@functools.cache
def tool_keys() -> ToolKeys:
    entry = bedrock_facts()["tool_keys"]
    return ToolKeys(
        allowed=frozenset(entry["allowed"]),
        needs_beta=dict(entry["needs_beta"]),
        unsupported_type_prefixes=tuple(entry["unsupported_tool_types"]),
    )


@functools.cache
def geo_prefixes() -> frozenset[str]:
    """Known cross-region inference profile prefixes (without the dot)."""
    return frozenset(bedrock_facts()["geo_prefixes"]["names"])


def default_geo_prefix(region: str) -> str:
    """The inference profile prefix to use from ``region`` when none is set."""
    table: dict[str, str] = bedrock_facts()["region_geo_prefix"]
    return table.get(region, "global")


def count_tokens_default_max_tokens() -> int:
    """The max_tokens put in a CountTokens body when the client sent none."""
    return int(bedrock_facts()["count_tokens"]["default_max_tokens"])


def mantle_count_tokens_path() -> str:
    """The path of Anthropic's ``count_tokens`` on ``bedrock-mantle``."""
    return str(bedrock_facts()["mantle"]["count_tokens_path"])


def mantle_count_tokens_fields() -> frozenset[str]:
    """The body fields mantle's ``count_tokens`` takes; others are dropped."""
    return frozenset(bedrock_facts()["mantle"]["count_tokens_fields"])


@attrs.frozen
class ValidationMessages:
    """The phrases by which a ValidationException names what it refused."""

    unnamed_beta: str
    extra_input: str
    extraneous_key: str


@functools.cache
def validation_messages() -> ValidationMessages:
    entry = bedrock_facts()["validation_messages"]
    return ValidationMessages(
        unnamed_beta=entry["unnamed_beta"],
        extra_input=entry["extra_input"],
        extraneous_key=entry["extraneous_key"],
    )


def apply_beta_overrides(
    models: Mapping[str, ModelFacts], overrides: Mapping[str, Any] | None
) -> dict[str, ModelFacts]:
    """The model table with the operator's beta allowlist overrides applied.

    ``overrides`` maps a canonical model name, or ``"*"`` for every model, to
    either a list (the model's whole allowlist) or ``{"add": [...],
    "remove": [...]}``. ``"*"`` applies first, then the per-model entries.

    Raises:
        ValueError: an entry names an unknown model or has the wrong shape.
    """
    result = dict(models)
    if not overrides:
        return result
    ordered = sorted(overrides.items(), key=lambda item: item[0] != "*")
    for name, change in ordered:
        if name.startswith("_"):
            continue
        if name != "*" and name not in result:
            raise ValueError(f"betas file: unknown model {name!r}")
        targets = list(result) if name == "*" else [name]
        for target in targets:
            result[target] = attrs.evolve(
                result[target], betas=_changed_betas(result[target].betas, change, name)
            )
    return result


def _changed_betas(current: frozenset[str], change: Any, name: str) -> frozenset[str]:
    if isinstance(change, list) and all(isinstance(beta, str) for beta in change):
        return frozenset(change)
    if isinstance(change, dict) and set(change) <= {"add", "remove"}:
        added = change.get("add", [])
        removed = change.get("remove", [])
        if all(isinstance(beta, str) for beta in [*added, *removed]):
            return (current | frozenset(added)) - frozenset(removed)
    raise ValueError(
        f"betas file: the entry for {name!r} must be a list of betas or "
        '{"add": [...], "remove": [...]}'
    )
