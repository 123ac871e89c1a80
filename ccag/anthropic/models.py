"""Which Bedrock model a client's model name means.

Clients name models the Anthropic way (``claude-sonnet-4-5``, with or without
a date, ``claude-opus-4-8[1m]`` for the 1M-token context) or the Bedrock way
(``anthropic.claude-...-v1:0``, a profile id such as ``us.anthropic...``, or an
ARN). :class:`ModelCatalog` turns any of these into a :class:`ResolvedModel`:
the exact Bedrock model id to call, the base id CountTokens wants, the
canonical name used as the metrics label, and the facts of that model.

Bedrock ids and ARNs pass through unchanged: the client picked the target.
Their canonical name is the known model they contain, else ``"other"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ccag.bedrock import facts as bedrock
from ccag.bedrock.facts import ModelFacts
from ccag.errors import ApiError, invalid_request, not_found

ONE_MILLION_SUFFIX = "[1m]"
OTHER_MODEL = "other"

# A Bedrock model id starts with its provider; an ARN with its scheme.
_BEDROCK_PROVIDER = "anthropic."
_ARN_PREFIX = "arn:"

# Longest name accepted, so an absurd "model" never reaches an error message
# or a log line whole.
MAX_MODEL_NAME_CHARS = 512


@attrs.frozen
class ResolvedModel:
    """One client model name, resolved.

    Attributes:
        requested: exactly what the client sent (echoed in responses).
        canonical: the canonical Anthropic name, or ``"other"``; the metrics label.
        bedrock_id: the id to invoke, with its geo prefix where one applies.
        base_model_id: the id without any prefix (CountTokens wants this).
        one_million: the client asked for the 1M-token context (``[1m]``).
        facts: what Bedrock accepts for this model.
    """

    requested: str
    canonical: str
    bedrock_id: str
    base_model_id: str
    one_million: bool
    facts: ModelFacts


class ModelCatalog:
    """The models this gateway serves: the shipped table plus the operator's.

    Args:
        facts: the shipped models by canonical name (usually
            :func:`ccag.bedrock.facts.shipped_models`).
        extra: the operator's extension table (``config.models_file``), in the
            data file's ``models`` format; an entry with a shipped name
            replaces it.
    """

    def __init__(
        self, facts: Mapping[str, ModelFacts], extra: Mapping[str, Any] | None = None
    ) -> None:
        models = dict(facts)
        for name, entry in (extra or {}).items():
            if name.startswith("_"):
                continue
            models[name] = bedrock.model_facts_from(name, entry)
        self._models = models

        # Every spelling a client may use, lower-cased, to its model.
        self._by_name: dict[str, ModelFacts] = {}
        self._by_bedrock_id: dict[str, ModelFacts] = {}
        for model in models.values():
            for name in (model.canonical, *model.aliases):
                self._by_name[name.lower()] = model
            if model.bedrock_id:
                self._by_bedrock_id[model.bedrock_id.lower()] = model
                # Bedrock's "vN:M" suffix is optional in the names people type.
                self._by_name.setdefault(_without_version(model.bedrock_id).lower(), model)

    def canonical_names(self) -> frozenset[str]:
        """Every metrics label a request can carry (bounded by the table)."""
        return frozenset(self._models) | {OTHER_MODEL}

    def list_models(self) -> list[dict[str, str]]:
        """Entries for ``GET /v1/models`` in Anthropic's format, newest first."""
        ordered = sorted(self._models.values(), key=lambda m: m.created_at, reverse=True)
        return [
            {
                "type": "model",
                "id": model.canonical,
                "display_name": model.display_name,
                "created_at": model.created_at,
            }
            for model in ordered
            if model.bedrock_id
        ]

    def resolve(self, name: str, geo_prefix: str) -> ResolvedModel:
        """Resolve a client's model name for the endpoint's geo prefix.

        Args:
            name: the ``model`` the client sent.
            geo_prefix: ``us``, ``eu``, ``apac``, ``jp``, ``au``, ``us-gov``,
                ``global``, or ``""`` for the in-Region base id.

        Raises:
            ApiError: 404 ``not_found_error`` for an unknown model; 400 when
                the model is not offered under ``geo_prefix``.
        """
        if not isinstance(name, str) or not name.strip():
            raise invalid_request("model: a model name is required")
        if len(name) > MAX_MODEL_NAME_CHARS:
            raise not_found(f"model: {name[:64]}... (name too long)")

        stem = name.strip()
        one_million = stem.lower().endswith(ONE_MILLION_SUFFIX)
        if one_million:
            stem = stem[: -len(ONE_MILLION_SUFFIX)]

        if stem.startswith(_ARN_PREFIX) or _looks_like_bedrock_id(stem):
            return self._pass_through(name, stem, one_million)

        model = self._by_name.get(stem.lower())
        if model is None or model.bedrock_id is None:
            raise not_found(f"model: {name}")
        bedrock_id = _with_prefix(model, geo_prefix)
        return ResolvedModel(
            requested=name,
            canonical=model.canonical,
            bedrock_id=bedrock_id,
            base_model_id=model.bedrock_id,
            one_million=one_million,
            facts=model,
        )

    def known_canonical(self, name: str) -> str | None:
        """The canonical name of the table's model that ``name`` means.

        Accepts every spelling :meth:`resolve` maps to a known model (the
        canonical name, an alias or dated name, a Bedrock id with or without
        a geo prefix, any of these with ``[1m]``), whatever the geo prefix:
        ``GET /v1/models/{id}`` answers for names, not for one endpoint.

        Returns:
            The canonical name, or None when the table does not know the
            model (an unknown name, an ARN, an unknown Bedrock id).
        """
        stem = name.strip()
        if stem.lower().endswith(ONE_MILLION_SUFFIX):
            stem = stem[: -len(ONE_MILLION_SUFFIX)]

        if _looks_like_bedrock_id(stem):
            model = self._by_bedrock_id.get(_strip_geo_prefix(stem).lower())
        else:
            model = self._by_name.get(stem.lower())
        if model is None or model.bedrock_id is None:
            return None
        return model.canonical

    def _pass_through(self, requested: str, model_id: str, one_million: bool) -> ResolvedModel:
        base = _strip_geo_prefix(model_id)
        model = self._by_bedrock_id.get(base.lower())
        if model is None:
            model = bedrock.unknown_model_facts()
        return ResolvedModel(
            requested=requested,
            canonical=model.canonical,
            bedrock_id=model_id,
            base_model_id=base,
            one_million=one_million,
            facts=model,
        )


def _looks_like_bedrock_id(name: str) -> bool:
    return _strip_geo_prefix(name).lower().startswith(_BEDROCK_PROVIDER)


def _strip_geo_prefix(model_id: str) -> str:
    head, dot, rest = model_id.partition(".")
    if dot and head.lower() in bedrock.geo_prefixes():
        return rest
    return model_id


def _without_version(bedrock_id: str) -> str:
    """``anthropic.claude-x-20250101-v1:0`` -> ``claude-x-20250101``."""
    name = bedrock_id.removeprefix(_BEDROCK_PROVIDER)
    head, sep, tail = name.rpartition("-v")
    if sep and tail[:1].isdigit():
        return head
    return name


def _with_prefix(model: ModelFacts, geo_prefix: str) -> str:
    assert model.bedrock_id is not None
    if geo_prefix == "":
        if model.in_region:
            return model.bedrock_id
        raise _prefix_error(model, "without an inference profile (in-Region)")
    if geo_prefix not in model.geo_prefixes:
        raise _prefix_error(model, f"with the {geo_prefix!r} inference profile prefix")
    return f"{geo_prefix}.{model.bedrock_id}"


def _prefix_error(model: ModelFacts, how: str) -> ApiError:
    offered = ", ".join(sorted(model.geo_prefixes)) or "none"
    if model.in_region:
        offered += " (or in-Region)"
    return invalid_request(
        f"model: {model.canonical} is not offered on Bedrock {how}; "
        f"prefixes offered: {offered}. Set the gateway's geo_prefix accordingly."
    )
