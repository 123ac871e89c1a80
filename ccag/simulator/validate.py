"""Bedrock's checks of a model id and an InvokeModel body, without I/O.

Messages follow the wording Bedrock uses for the Anthropic schema
("Malformed input request: #: extraneous key [stream] is not permitted, please
reformat your input and try again.", "invalid beta flag"), so a gateway's
error mapping and its remove-and-retry logic see what they would see live.

Beyond the keys, the body is checked the way the Messages API checks it
(roles, content block types, base64 sources, custom tool names, the thinking
budget, ``max_tokens`` against the model's output limit) in one walk over the
messages and tools; the prompt's length against the context window is checked
separately (:func:`check_prompt_length`), on the token estimate the answer
reports anyway. Where a message could not be confirmed from Bedrock's or
Anthropic's answers, the comment at its check says so.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import attrs

from ccag.bedrock import facts
from ccag.simulator.catalog import (
    ANTHROPIC_VERSIONS,
    RequestChecks,
    SimModel,
    request_checks,
)
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
        checks: the limits of the Messages schema (from the facts file).
    """

    core_fields: frozenset[str]
    anthropic_versions: frozenset[str] = ANTHROPIC_VERSIONS
    refuse_billing_header: bool = True
    checks: RequestChecks = attrs.field(factory=request_checks)


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
    beta_set = frozenset(betas)
    _check_optional_fields(body, model, beta_set)

    # 5. The output limit, then what the Messages schema types.
    _check_max_tokens(max_tokens, model, beta_set, rules.checks)
    _check_system(body.get("system"), rules.refuse_billing_header)
    roles = _ROLES_WITH_SYSTEM if model.system_role_message else _ROLES
    _check_messages(messages, roles, rules.checks)
    _check_tools(body.get("tools"), rules.checks)
    _check_thinking(body.get("thinking"), max_tokens, beta_set, rules.checks)
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, dict):
        # Assumption: worded like the other schema type errors above.
        raise _malformed(f"#/tool_choice: expected type: JSONObject, found: {_json_type(tool_choice)}")
    return body


def _check_max_tokens(max_tokens: int, model: SimModel, betas: frozenset[str], checks: RequestChecks) -> None:
    limit = max(
        [model.max_output, *(raised for beta, raised in checks.output_beta_max_tokens.items() if beta in betas)]
    )
    if max_tokens > limit:
        # Bedrock's own wording (vercel/ai#2772 on Converse, charmbracelet/crush#946
        # on the Messages endpoint); assumed to be the same on InvokeModel.
        raise validation_error(
            f"The maximum tokens you requested exceeds the model limit of {limit}. "
            f"Try again with a maximum tokens value that is lower than {limit}."
        )


_ROLES: tuple[str, ...] = ("user", "assistant")
_ROLES_WITH_SYSTEM: tuple[str, ...] = ("user", "assistant", "system")

_BASE64_SOURCE_BLOCKS = frozenset({"image", "document"})
"""Block types whose ``source`` may carry base64 ``data``."""


def _choices(values: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``, as pydantic lists the values of a literal."""
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _check_messages(messages: list[Any], roles: tuple[str, ...], checks: RequestChecks) -> None:
    """Roles, content shapes, block types and base64 sources, in one pass.

    The first message may be the assistant's: the Messages API no longer
    documents a user-first rule and a lone assistant turn is a prefill, so it
    is not refused (the old 'first message must use the "user" role' answer
    could not be confirmed for today's API).
    """
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _malformed(f"#/messages/{index}: expected type: JSONObject, found: {_json_type(message)}")
        if message.get("role") not in roles:
            # Pydantic's literal_error, as the Messages API words it.
            raise validation_error(f"messages.{index}.role: Input should be {_choices(roles)}")
        if "content" not in message:
            raise validation_error(f"messages.{index}.content: Field required")
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            # Assumption: worded like the other schema type errors.
            raise _malformed(
                f"#/messages/{index}/content: expected type: String or JSONArray, found: {_json_type(content)}"
            )
        for position, block in enumerate(content):
            _check_block(block, f"messages.{index}.content.{position}", checks)


def _check_block(block: Any, path: str, checks: RequestChecks) -> None:
    if not isinstance(block, dict) or "type" not in block:
        # Pydantic's message for a tagged union without its tag.
        raise validation_error(f"{path}: Unable to extract tag using discriminator 'type'")
    kind = block["type"]
    if kind not in checks.content_block_types:
        # Pydantic's union_tag_invalid wording; Anthropic's list of expected tags
        # may differ from ours (an assumption).
        expected = ", ".join(f"'{tag}'" for tag in checks.content_block_types)
        raise validation_error(
            f"{path}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {expected}"
        )
    if kind in _BASE64_SOURCE_BLOCKS:
        _check_base64_source(block, f"{path}.{kind}")
    elif kind == "tool_result" and isinstance(block.get("content"), list):
        for position, inner in enumerate(block["content"]):
            if isinstance(inner, dict) and inner.get("type") in _BASE64_SOURCE_BLOCKS:
                _check_base64_source(inner, f"{path}.tool_result.content.{position}.{inner['type']}")


def _check_base64_source(block: dict[str, Any], path: str) -> None:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return
    data = source.get("data")
    try:
        # Strict: padding required, nothing outside the alphabet (assumption:
        # the Messages API refuses line breaks inside the data too).
        binascii.a2b_base64(data if isinstance(data, str) else "-", strict_mode=True)
    except (binascii.Error, ValueError):
        # The Messages API's wording (anthropics/anthropic-sdk-typescript#603).
        raise validation_error(f"{path}.source.base64: invalid base64 data") from None


def _check_tools(tools: Any, checks: RequestChecks) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        # Assumption: worded like the other schema type errors.
        raise _malformed(f"#/tools: expected type: JSONArray, found: {_json_type(tools)}")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _malformed(f"#/tools/{index}: expected type: JSONObject, found: {_json_type(tool)}")
        if tool.get("type") not in (None, "custom"):
            # Anthropic-defined tools (bash_20250124, web_search_...) have fixed names.
            continue
        name = tool.get("name")
        if not isinstance(name, str) or checks.tool_name_pattern.fullmatch(name) is None:
            raise validation_error(
                f"tools.{index}.custom.name: String should match pattern '{checks.tool_name_pattern.pattern}'"
            )


def _check_thinking(thinking: Any, max_tokens: int, betas: frozenset[str], checks: RequestChecks) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        # Assumption: worded like the other schema type errors.
        raise _malformed(f"#/thinking: expected type: JSONObject, found: {_json_type(thinking)}")
    if thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise validation_error("thinking.enabled.budget_tokens: Input should be a valid integer")
    if budget < checks.thinking_min_budget:
        # Bedrock's wording (danny-avila/LibreChat#8346).
        raise validation_error(
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to {checks.thinking_min_budget}"
        )
    if budget >= max_tokens and checks.interleaved_thinking_beta not in betas:
        # Bedrock's wording (anthropics/claude-code#8756).
        raise validation_error(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
            "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
        )


ONE_MILLION_BETA = facts.one_million_beta()
"""The beta that opens the million-token window where the model has one."""


def prompt_limit(model: SimModel, body: Mapping[str, Any], checks: RequestChecks, *, counting: bool) -> int:
    """The most prompt tokens ``model`` takes for ``body``.

    Args:
        counting: for CountTokens, which stops at its own limit even where
            the model's window is larger.
    """
    betas = body.get("anthropic_beta")
    window = model.context_window
    if model.one_million and isinstance(betas, list) and ONE_MILLION_BETA in betas:
        window = max(window, checks.one_million_context_window)
    return min(window, checks.count_tokens_max_prompt_tokens) if counting else window


def check_prompt_length(input_tokens: int, limit: int) -> None:
    """Refuse a prompt longer than ``limit`` tokens, as Bedrock does.

    Raises:
        BedrockError: ``ValidationException`` "prompt is too long: N tokens > M maximum"
            (the wording of Bedrock's answers in boto/botocore#3707 and
            daisuke-awaji/moca#254).
    """
    if input_tokens > limit:
        raise validation_error(f"prompt is too long: {input_tokens} tokens > {limit} maximum")


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


def _check_system(system: Any, refuse_billing_header: bool) -> None:
    """``system`` is a string or a list of text blocks (and holds no billing line)."""
    if system is None:
        return
    if isinstance(system, str):
        blocks: list[Any] = [{"type": "text", "text": system}]
    elif isinstance(system, list):
        blocks = system
    else:
        # Assumption: worded like the other schema type errors.
        raise _malformed(f"#/system: expected type: String or JSONArray, found: {_json_type(system)}")
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text":
            # Pydantic's literal_error for the one block type system takes.
            raise validation_error(f"system.{index}.type: Input should be 'text'")
        text = block.get("text")
        if refuse_billing_header and isinstance(text, str) and text.lstrip().startswith(BILLING_HEADER_PREFIX):
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
