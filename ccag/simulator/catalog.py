"""The models the simulator serves and what each accepts.

Seeded from :mod:`ccag.bedrock.facts` (the gateway's own record of Bedrock:
model ids, the inference-profile prefixes offered for each, whether the bare
id can be invoked on demand, the betas and the optional body fields each model
takes), so the simulator refuses what Bedrock would refuse. Tests narrow the
lists through :class:`~ccag.simulator.handler.SimulatorOptions` to make the
simulator reject something specific.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

import attrs

from ccag.bedrock import facts

ANTHROPIC_VERSIONS: frozenset[str] = frozenset({"bedrock-2023-05-31"})


@attrs.frozen
class SimModel:
    """One Claude foundation model as the simulator serves it.

    Attributes:
        bedrock_id: the foundation model id (``anthropic.claude-...``).
        geo_prefixes: the cross-region profile prefixes offered for it.
        in_region: the bare id may be invoked on demand.
        betas: the ``anthropic_beta`` values it accepts.
        fields: optional body fields beyond the core ones (``name`` or
            ``parent.child``) -> the beta each needs, or ``None``.
        context_window: the most prompt tokens it takes without a beta.
        one_million: the context-1m beta raises the window to a million.
        max_output: the largest ``max_tokens`` it takes without a beta.
        system_role_message: ``role: "system"`` messages are accepted.
    """

    bedrock_id: str
    geo_prefixes: frozenset[str]
    in_region: bool
    betas: frozenset[str]
    fields: Mapping[str, str | None]
    context_window: int = 200_000
    one_million: bool = False
    max_output: int = 128_000
    system_role_message: bool = False


@attrs.frozen
class RequestChecks:
    """Limits Bedrock enforces on an InvokeModel body (``request_checks`` in the facts).

    Attributes:
        thinking_min_budget: the smallest ``thinking.budget_tokens``.
        interleaved_thinking_beta: the beta that lets the budget reach ``max_tokens``.
        tool_name_pattern: what a custom tool's name must match.
        output_beta_max_tokens: beta -> the ``max_tokens`` limit it raises to.
        count_tokens_max_prompt_tokens: CountTokens' own prompt limit.
        one_million_context_window: the window with the context-1m beta.
        content_block_types: the ``type`` values a message content block may have.
    """

    thinking_min_budget: int
    interleaved_thinking_beta: str
    tool_name_pattern: re.Pattern[str]
    output_beta_max_tokens: Mapping[str, int]
    count_tokens_max_prompt_tokens: int
    one_million_context_window: int
    content_block_types: tuple[str, ...]


@functools.cache
def request_checks() -> RequestChecks:
    """The request limits of the facts file."""
    entry = facts.bedrock_facts()["request_checks"]
    return RequestChecks(
        thinking_min_budget=int(entry["thinking_min_budget"]),
        interleaved_thinking_beta=str(entry["interleaved_thinking_beta"]),
        tool_name_pattern=re.compile(entry["tool_name_pattern"]),
        output_beta_max_tokens={beta: int(limit) for beta, limit in entry["output_beta_max_tokens"].items()},
        count_tokens_max_prompt_tokens=int(entry["count_tokens_max_prompt_tokens"]),
        one_million_context_window=int(entry["one_million_context_window"]),
        content_block_types=tuple(entry["content_block_types"]),
    )


def core_fields() -> frozenset[str]:
    """Body keys every model accepts."""
    return facts.core_fields()


def all_geo_prefixes() -> frozenset[str]:
    return facts.geo_prefixes()


def models_from_facts() -> dict[str, SimModel]:
    """Every model of the facts file, by foundation id."""
    served = {}
    for model in facts.shipped_models().values():
        if model.bedrock_id is None:
            continue
        served[model.bedrock_id] = SimModel(
            bedrock_id=model.bedrock_id,
            geo_prefixes=model.geo_prefixes,
            in_region=model.in_region,
            betas=model.betas,
            fields=dict(model.fields),
            context_window=model.context_window,
            one_million=model.one_million,
            max_output=model.max_output,
            system_role_message=model.system_role_message,
        )
    return served


def narrowed(
    models: Mapping[str, SimModel],
    *,
    betas: Iterable[str] | None = None,
    reject_betas: Iterable[str] = (),
    reject_fields: Iterable[str] = (),
    all_in_region: bool = False,
) -> dict[str, SimModel]:
    """``models`` with their accepted betas and fields changed for a test.

    Args:
        betas: if given, every model accepts exactly these betas.
        reject_betas: betas no model accepts.
        reject_fields: optional fields (``name`` or ``parent.child``) no
            model accepts.
        all_in_region: let every bare model id be invoked on demand.
    """
    refused_betas = frozenset(reject_betas)
    refused_fields = frozenset(reject_fields)
    changed = {}
    for model_id, model in models.items():
        accepted = frozenset(betas) if betas is not None else model.betas
        changed[model_id] = attrs.evolve(
            model,
            betas=accepted - refused_betas,
            fields={name: beta for name, beta in model.fields.items() if name not in refused_fields},
            in_region=model.in_region or all_in_region,
        )
    return changed


def offered_prefixes(model: SimModel, region: str) -> tuple[str, ...]:
    """The model's profile prefixes that route from ``region``, ``global`` last."""
    home = facts.default_geo_prefix(region)
    return tuple(prefix for prefix in (home, "global") if prefix in model.geo_prefixes)
