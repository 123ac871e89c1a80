"""Bedrock's checks of a model id and an InvokeModel body, without I/O.

Messages follow the wording Bedrock uses for the Anthropic schema
("Malformed input request: #: extraneous key [stream] is not permitted, please
reformat your input and try again.", "invalid beta flag"), so a gateway's
error mapping and its remove-and-retry logic see what they would see live.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import attrs

from ccag.simulator.catalog import ANTHROPIC_VERSIONS, SimModel
from ccag.simulator.errors import BedrockError, validation_error

REQUIRED_BODY_KEYS: tuple[str, ...] = ("anthropic_version", "max_tokens", "messages")

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
"""Claude Code's per-request attribution line; Bedrock refuses it in ``system``."""


@attrs.frozen
class BodyRules:
    """What an InvokeModel body may hold, beyond what the model itself takes.

    Attributes:
        core_fields: the body keys every model accepts.
        anthropic_versions: the accepted ``anthropic_version`` values.
        refuse_billing_header: refuse a system block that starts with
            :data:`BILLING_HEADER_PREFIX`.
    """

    core_fields: frozenset[str]
    anthropic_versions: frozenset[str] = ANTHROPIC_VERSIONS
    refuse_billing_header: bool = True


def _malformed(detail: str) -> BedrockError:
    return validation_error(f"Malformed input request: {detail}, please reformat your input and try again.")


def _extra_input(path: str) -> BedrockError:
    return validation_error(f"{path}: Extra inputs are not permitted")


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "JSONObject"
    if isinstance(value, list):
        return "JSONArray"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, (int, float)):
        return "Number"
    if value is None:
        return "null"
    return "String"


_INVALID_ID = "The provided model identifier is invalid."


def resolve_model_id(
    encoded_id: str,
    models: Mapping[str, SimModel],
    application_profiles: Mapping[str, str],
    geo_prefixes: frozenset[str],
) -> SimModel:
    """The model a path's ``{modelId}`` names, checked the way Bedrock does.

    Accepts a foundation model id (if the model may be invoked on demand), a
    system inference profile id (``us.anthropic...``) with a prefix offered
    for that model, ARNs of those, and the given application inference
    profiles (name or ARN -> foundation id); percent-encoding (``%3A``,
    ``%2F``) is decoded first.

    Raises:
        BedrockError: ``ResourceNotFoundException`` for an unknown foundation
            model, ``ValidationException`` for a malformed id, an unoffered
            profile or a bare id that needs a profile.
    """
    model_id = unquote(encoded_id)

    # 1. Application profiles and ARNs name something else.
    target = application_profiles.get(model_id)
    if target is None and model_id.startswith("arn:"):
        kind, _, name = model_id.split(":", 5)[-1].partition("/")
        if kind == "application-inference-profile":
            target = application_profiles.get(name)
            if target is None:
                raise BedrockError("ResourceNotFoundException", "The specified inference profile was not found.")
        elif kind in ("foundation-model", "inference-profile"):
            model_id = name
        else:
            raise validation_error(_INVALID_ID)
    if target is not None:
        return _known(target, models)

    # 2. A system profile: the prefix must be offered for the model.
    prefix, _, rest = model_id.partition(".")
    if prefix in geo_prefixes:
        model = models.get(rest)
        if model is None or prefix not in model.geo_prefixes:
            raise validation_error(_INVALID_ID)
        return model

    # 3. A bare foundation model id.
    if not model_id.startswith("anthropic."):
        raise validation_error(_INVALID_ID)
    model = _known(model_id, models)
    if not model.in_region:
        raise validation_error(
            f"Invocation of model ID {model_id} with on-demand throughput isn\u2019t supported. "
            "Retry your request with the ID or ARN of an inference profile that contains this model."
        )
    return model


def _known(model_id: str, models: Mapping[str, SimModel]) -> SimModel:
    model = models.get(model_id)
    if model is None:
        raise BedrockError("ResourceNotFoundException")
    return model


def parse_invoke_body(raw: bytes, model: SimModel, rules: BodyRules) -> dict[str, Any]:
    """Parse and check an InvokeModel body for ``model`` the way Bedrock does.

    Raises:
        BedrockError: ``ValidationException`` naming the first problem.
    """
    # 1. JSON object.
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _malformed("#: expected type: JSONObject, found: invalid JSON") from None
    if not isinstance(body, dict):
        raise _malformed(f"#: expected type: JSONObject, found: {_json_type(body)}")

    # 2. Keys: required ones present, nothing outside the schema.
    for key in REQUIRED_BODY_KEYS:
        if key not in body:
            raise _malformed(f"#: required key [{key}] not found")
    optional_tops = {name.split(".", 1)[0] for name in model.fields}
    for key in body:
        if key not in rules.core_fields and key not in optional_tops:
            raise _malformed(f"#: extraneous key [{key}] is not permitted")

    # 3. The values the schema types.
    if body["anthropic_version"] not in rules.anthropic_versions:
        raise validation_error(f"Invalid API version: {body['anthropic_version']!s:.64}")
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _malformed(f"#/max_tokens: expected type: Integer, found: {_json_type(max_tokens)}")
    if max_tokens < 1:
        raise _malformed(f"#/max_tokens: {max_tokens} is not greater or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _malformed(f"#/messages: expected type: JSONArray, found: {_json_type(messages)}")
    if not messages:
        raise validation_error("messages: at least one message is required")

    # 4. Betas, and the optional fields some betas unlock.
    betas = body.get("anthropic_beta", [])
    if not isinstance(betas, list) or not all(isinstance(beta, str) for beta in betas):
        raise _malformed(f"#/anthropic_beta: expected type: JSONArray, found: {_json_type(betas)}")
    if any(beta not in model.betas for beta in betas):
        raise validation_error("invalid beta flag")
    _check_optional_fields(body, model, frozenset(betas))

    # 5. The system prompt.
    if rules.refuse_billing_header:
        _check_system(body.get("system"))
    return body


def _check_optional_fields(body: dict[str, Any], model: SimModel, betas: frozenset[str]) -> None:
    for key, value in body.items():
        if key in model.fields:
            needed = model.fields[key]
            if needed is not None and needed not in betas:
                raise _extra_input(key)
        children = {name.split(".", 1)[1]: beta for name, beta in model.fields.items() if name.startswith(key + ".")}
        if not children or not isinstance(value, dict):
            continue
        for child in value:
            if child not in children:
                raise _extra_input(f"{key}.{child}")
            needed = children[child]
            if needed is not None and needed not in betas:
                raise _extra_input(f"{key}.{child}")


def _check_system(system: Any) -> None:
    blocks = [system] if isinstance(system, str) else system if isinstance(system, list) else []
    for index, block in enumerate(blocks):
        text = block if isinstance(block, str) else block.get("text") if isinstance(block, dict) else None
        if isinstance(text, str) and text.lstrip().startswith(BILLING_HEADER_PREFIX):
            raise validation_error(
                f"system.{index}.text: the reserved prefix {BILLING_HEADER_PREFIX!r} is not permitted"
            )


def parse_count_tokens_body(raw: bytes, model: SimModel, rules: BodyRules) -> dict[str, Any]:
    """The InvokeModel body a CountTokens request wraps, checked.

    CountTokens takes ``{"input": {"invokeModel": {"body": "<base64>"}}}``
    (or a Converse-shaped ``{"input": {"converse": {...}}}``, returned as is).

    Raises:
        BedrockError: ``ValidationException`` for a malformed request.
    """
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise validation_error("Could not parse the request body as JSON.") from None
    wrapper = request.get("input") if isinstance(request, dict) else None
    if not isinstance(wrapper, dict) or len(wrapper) != 1:
        raise validation_error("1 validation error detected: Value at 'input' failed to satisfy constraint: Member must not be null")

    if "converse" in wrapper and isinstance(wrapper["converse"], dict):
        converse: dict[str, Any] = wrapper["converse"]
        return converse
    invoke = wrapper.get("invokeModel")
    encoded = invoke.get("body") if isinstance(invoke, dict) else None
    if not isinstance(encoded, str):
        raise validation_error("1 validation error detected: Value at 'input.invokeModel.body' failed to satisfy constraint: Member must not be null")
    try:
        inner = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise validation_error("input.invokeModel.body is not valid base64.") from None
    return parse_invoke_body(inner, model, rules)
