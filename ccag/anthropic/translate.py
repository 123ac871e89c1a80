"""Anthropic Messages request body -> Bedrock InvokeModel request body.

Theory of operation. Bedrock's InvokeModel speaks almost the same JSON as
Anthropic's Messages API, with these differences, each handled here:

* ``anthropic_version`` is ``bedrock-2023-05-31`` in the body; ``model`` is in
  the URL and ``stream`` is the choice of endpoint, so neither is sent.
* Betas travel in the body as ``anthropic_beta``. The header list and any body
  list are merged, then filtered by the model's allowlist and by what Bedrock
  has refused lately (:class:`~ccag.anthropic.capabilities.Verdicts`). A beta
  is dropped, never an error: the client's request still runs.
* Bedrock refuses unknown fields ("Extra inputs are not permitted"), so only
  fields it accepts for the model are forwarded; Anthropic-only fields are
  dropped, and ``thinking`` is translated between ``adaptive`` and
  ``enabled`` where the model accepts only one of them.
* Claude Code's first system block (``x-anthropic-billing-header: ...``) is
  attribution for Anthropic's billing and changes every request, so it is
  removed: it would also defeat prompt caching of the system prompt.
* ``cache_control`` keeps only ``type`` and, where the model accepts it,
  ``ttl``; a ttl longer than one earlier in the request (tools, then system,
  then messages) is dropped, because Bedrock refuses that order.
* A ``role: "system"`` message inside ``messages`` (Claude Code's
  mid-conversation system text) is folded, where the model does not accept
  it natively, into the user turn before it (appended) or, when there is
  none, the user turn after it (inserted after any tool results). The text
  goes in unchanged, its blocks keep their cache breakpoints, and
  user/assistant alternation is kept.

Everything else (text, images, documents, thinking and redacted thinking
with their signatures, tool_use, tool_result) is passed through as the very
same Python objects: only the containers that change are copied, shallowly.
"""

from __future__ import annotations

import base64
from typing import Any

import attrs

from ccag.anthropic.capabilities import Verdicts
from ccag.anthropic.models import ResolvedModel
from ccag.anthropic.wirejson import dump_json
from ccag.bedrock import facts as bedrock
from ccag.errors import invalid_request

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"

# When ``adaptive`` thinking must become ``enabled`` (a model without
# adaptive thinking), the budget Claude Code itself uses on such models.
ADAPTIVE_THINKING_BUDGET = 31999
# Anthropic's smallest accepted thinking budget; below it thinking is dropped.
MIN_THINKING_BUDGET = 1024

_TTL_SECONDS = {"5m": 300, "1h": 3600}
_DEFAULT_TTL_SECONDS = 300
_SKIPPED_SILENTLY = frozenset({"model", "stream", "betas", "anthropic_beta", "anthropic_version"})


@attrs.frozen
class BedrockRequest:
    """A request ready for InvokeModel (or its streaming twin).

    Attributes:
        body: the compact JSON body.
        stream: call InvokeModelWithResponseStream rather than InvokeModel.
        model_id: the Bedrock model id for the URL.
        betas_sent: betas in ``anthropic_beta``, in order.
        betas_dropped: betas the client asked for that were left out.
        fields_dropped: request fields (or ``parent.key`` paths) left out.
    """

    body: bytes
    stream: bool
    model_id: str
    betas_sent: tuple[str, ...]
    betas_dropped: tuple[str, ...]
    fields_dropped: tuple[str, ...]


def translate_messages(
    body: Any, beta_header: str | None, model: ResolvedModel, verdicts: Verdicts
) -> BedrockRequest:
    """Translate a ``POST /v1/messages`` body for Bedrock.

    Args:
        body: the parsed JSON body from the client.
        beta_header: the ``anthropic-beta`` header, if any.
        model: the resolved model.
        verdicts: what Bedrock has refused lately for this model and endpoint.

    Raises:
        ApiError: 400 ``invalid_request_error`` naming the field, when the body
            is not an object, ``messages`` is missing or not a list of objects,
            or ``max_tokens`` is missing or not an integer.
    """
    _validate(body)
    translation = _Translation(model, verdicts)
    out = translation.run(body, beta_header)
    return BedrockRequest(
        body=_compact_json(out),
        stream=body.get("stream") is True,
        model_id=model.bedrock_id,
        betas_sent=tuple(translation.betas_sent),
        betas_dropped=tuple(translation.betas_dropped),
        fields_dropped=tuple(translation.fields_dropped),
    )


def translate_count_tokens(
    body: Any, beta_header: str | None, model: ResolvedModel, verdicts: Verdicts
) -> bytes:
    """The Bedrock CountTokens body for a ``count_tokens`` request.

    CountTokens wants ``{"input": {"invokeModel": {"body": <base64>}}}`` where
    the embedded body is a complete InvokeModel body, so a ``max_tokens`` is
    supplied when the client (which need not send one) did not.

    Raises:
        ApiError: 400 as for :func:`translate_messages`.
    """
    if not isinstance(body, dict):
        raise invalid_request("body: must be a JSON object")
    invoke_body = dict(body)
    invoke_body.pop("stream", None)
    if not _is_int(invoke_body.get("max_tokens")):
        invoke_body["max_tokens"] = _count_max_tokens(invoke_body.get("thinking"))
    translated = translate_messages(invoke_body, beta_header, model, verdicts)
    encoded = base64.b64encode(translated.body).decode("ascii")
    return _compact_json({"input": {"invokeModel": {"body": encoded}}})


def _count_max_tokens(thinking: Any) -> int:
    # An enabled thinking budget must stay below max_tokens to be valid.
    if isinstance(thinking, dict) and _is_int(thinking.get("budget_tokens")):
        return int(thinking["budget_tokens"]) + 1
    return bedrock.count_tokens_default_max_tokens()


def _validate(body: Any) -> None:
    if not isinstance(body, dict):
        raise invalid_request("body: must be a JSON object")
    messages = body.get("messages")
    if messages is None:
        raise invalid_request("messages: Field required")
    if not isinstance(messages, list):
        raise invalid_request("messages: must be a list of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_request(f"messages.{index}: must be an object")
        content = message.get("content")
        if not isinstance(content, (str, list)):
            raise invalid_request(f"messages.{index}.content: must be a string or a list")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("stream: must be true or false")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid_request("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise invalid_request("max_tokens: must be an integer")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _compact_json(value: Any) -> bytes:
    return dump_json(value)


class _Translation:
    """One body's translation; collects what was sent and dropped."""

    def __init__(self, model: ResolvedModel, verdicts: Verdicts) -> None:
        self.model = model
        self.facts = model.facts
        self.verdicts = verdicts
        self.betas_sent: list[str] = []
        self.betas_dropped: list[str] = []
        self.fields_dropped: list[str] = []
        # The shortest cache ttl seen so far, in request order.
        self._shortest_ttl = _TTL_SECONDS["1h"]

    def run(self, body: dict[str, Any], beta_header: str | None) -> dict[str, Any]:
        self._choose_betas(body, beta_header)

        # 1. Fields: keep what Bedrock accepts for this model, in client order.
        out: dict[str, Any] = {"anthropic_version": BEDROCK_ANTHROPIC_VERSION}
        for name, value in body.items():
            if name in _SKIPPED_SILENTLY:
                continue
            kept = self._maybe_keep_field(name, value, body)
            if kept is not None:
                out[name] = kept

        # 2. Content, in the order Bedrock reads cache breakpoints.
        if "tools" in out:
            self._translate_tools(out)
        if "system" in out:
            system = self._translate_system(out["system"])
            if system is None:
                del out["system"]
            else:
                out["system"] = system
        out["messages"] = self._translate_messages(body["messages"], body.get("cache_control"))

        if self.betas_sent:
            out["anthropic_beta"] = list(self.betas_sent)
        return out

    # -- betas -------------------------------------------------------------

    def _choose_betas(self, body: dict[str, Any], beta_header: str | None) -> None:
        requested: list[str] = []
        if beta_header:
            requested.extend(beta_header.split(","))
        for key in ("betas", "anthropic_beta"):
            value = body.get(key)
            if isinstance(value, str):
                requested.extend(value.split(","))
            elif isinstance(value, list):
                requested.extend(item for item in value if isinstance(item, str))
        one_million = bedrock.one_million_beta()
        if self.model.one_million:
            requested.append(one_million)

        allowed = self.facts.betas - self.verdicts.betas
        if self.verdicts.drops_all_betas:
            # Bedrock refused some beta without naming it: send only the 1M
            # beta, which the client asked for by name ([1m]) and cannot do without.
            allowed = allowed & {one_million} if self.model.one_million else frozenset()
        seen: set[str] = set()
        for raw in requested:
            beta = raw.strip()
            if not beta or beta in seen:
                continue
            seen.add(beta)
            (self.betas_sent if beta in allowed else self.betas_dropped).append(beta)

    # -- fields ------------------------------------------------------------

    def _maybe_keep_field(self, name: str, value: Any, body: dict[str, Any]) -> Any:
        """The value to send for a top-level field, or None to leave it out."""
        if name in self.verdicts.fields:
            return self._drop(name)
        if name == "thinking":
            return self._translate_thinking(value, body)
        if name in bedrock.core_fields():
            return value
        if name in self.facts.fields:
            if not self._has_needed_beta(name):
                return self._drop(name)
            return value
        subkeys = self._accepted_subkeys(name)
        if subkeys and isinstance(value, dict):
            kept = {k: v for k, v in value.items() if k in subkeys}
            for key in value:
                if key not in kept:
                    self._drop(f"{name}.{key}")
            return kept or None
        # Top-level automatic caching is re-placed on the last message block.
        if name == "cache_control":
            return None
        return self._drop(name)

    def _accepted_subkeys(self, parent: str) -> frozenset[str]:
        """Keys of an object field accepted as ``parent.key`` facts."""
        prefix = parent + "."
        return frozenset(
            path[len(prefix):]
            for path in self.facts.fields
            if path.startswith(prefix)
            and path not in self.verdicts.fields
            and self._has_needed_beta(path)
        )

    def _has_needed_beta(self, path: str) -> bool:
        needed = self.facts.fields.get(path)
        return needed is None or needed in self.betas_sent

    def _drop(self, path: str) -> None:
        self.fields_dropped.append(path)

    def _translate_thinking(self, value: Any, body: dict[str, Any]) -> Any:
        accepted = self.facts.thinking
        if not accepted or not isinstance(value, dict):
            return self._drop("thinking")
        kind = value.get("type")
        if not isinstance(kind, str):
            raise invalid_request("thinking.type: must be a string such as 'enabled'")
        if kind in accepted:
            return self._without_refused_keys("thinking", value)
        if kind == "adaptive" and "enabled" in accepted:
            budget = min(ADAPTIVE_THINKING_BUDGET, int(body["max_tokens"]) - 1)
            if budget < MIN_THINKING_BUDGET:
                return self._drop("thinking")
            return {"type": "enabled", "budget_tokens": budget}
        if kind == "enabled" and "adaptive" in accepted:
            return {"type": "adaptive"}
        return self._drop("thinking")

    def _without_refused_keys(self, parent: str, value: dict[str, Any]) -> dict[str, Any]:
        prefix = parent + "."
        refused = {p[len(prefix):] for p in self.verdicts.fields if p.startswith(prefix)}
        if not refused.intersection(value):
            return value
        for key in refused.intersection(value):
            self._drop(f"{parent}.{key}")
        return {k: v for k, v in value.items() if k not in refused}

    # -- tools -------------------------------------------------------------

    def _translate_tools(self, out: dict[str, Any]) -> None:
        tools = out["tools"]
        if not isinstance(tools, list):
            return
        keys = bedrock.tool_keys()
        custom_keys = keys.allowed | {
            key for key, beta in keys.needs_beta.items() if beta in self.betas_sent
        }
        refused = {p[6:] for p in self.verdicts.fields if p.startswith("tools.")}
        custom_keys = custom_keys - refused

        kept: list[Any] = []
        removed_names: set[str] = set()
        for tool in tools:
            if not isinstance(tool, dict):
                kept.append(tool)
                continue
            kind = tool.get("type")
            if isinstance(kind, str) and kind.startswith(keys.unsupported_type_prefixes):
                name = tool.get("name")
                removed_names.add(name if isinstance(name, str) else kind)
                self._drop(f"tools.{name if isinstance(name, str) else kind}")
                continue
            if kind is None or kind == "custom":
                extra = [key for key in tool if key not in custom_keys]
            else:
                # Anthropic-defined tools (bash, text editor, computer...) keep
                # their own parameters; only refused keys go.
                extra = [key for key in tool if key in refused]
            if extra:
                for key in extra:
                    if f"tools.{key}" not in self.fields_dropped:
                        self._drop(f"tools.{key}")
                tool = {k: v for k, v in tool.items() if k not in extra}
            kept.append(self._with_cache_control_fixed(tool))

        if kept:
            out["tools"] = kept
        else:
            del out["tools"]
        choice = out.get("tool_choice")
        if isinstance(choice, dict) and (
            not kept or (choice.get("type") == "tool" and _is_removed(choice.get("name"), removed_names))
        ):
            del out["tool_choice"]
            self._drop("tool_choice")

    # -- system ------------------------------------------------------------

    def _translate_system(self, system: Any) -> Any:
        if isinstance(system, str):
            return None if system.startswith(BILLING_HEADER_PREFIX) else system
        if not isinstance(system, list):
            return system
        blocks = system
        first = blocks[0] if blocks else None
        if isinstance(first, dict) and str(first.get("text", "")).startswith(
            BILLING_HEADER_PREFIX
        ):
            blocks = blocks[1:]
        fixed = self._blocks_with_cache_control_fixed(blocks)
        return fixed if fixed else None

    # -- messages ----------------------------------------------------------

    def _translate_messages(self, messages: list[Any], automatic_cache: Any) -> list[Any]:
        if not self.facts.system_role_message:
            messages = _fold_system_messages(messages)
        if isinstance(automatic_cache, dict):
            messages = _place_automatic_breakpoint(messages, automatic_cache)

        out: list[Any] = messages
        for index, message in enumerate(messages):
            content = message.get("content")
            if not isinstance(content, list):
                continue
            fixed = self._blocks_with_cache_control_fixed(content)
            if fixed is not content:
                if out is messages:
                    out = list(messages)
                out[index] = {**message, "content": fixed}
        return out

    # -- cache control -----------------------------------------------------

    def _blocks_with_cache_control_fixed(self, blocks: list[Any]) -> list[Any]:
        """``blocks``, or a shallow copy where some breakpoint had to change.

        A ``tool_result``'s own content blocks may carry breakpoints too; they
        come before the tool_result's own one in the cached prefix, so they
        are fixed first and count in the ttl order like any other.
        """
        out = blocks
        for index, block in enumerate(blocks):
            if not isinstance(block, dict):
                continue
            fixed = block
            nested = block.get("content")
            if isinstance(nested, list) and block.get("type") == "tool_result":
                nested_fixed = self._blocks_with_cache_control_fixed(nested)
                if nested_fixed is not nested:
                    fixed = {**block, "content": nested_fixed}
            if "cache_control" in fixed:
                fixed = self._with_cache_control_fixed(fixed)
            if fixed is not block:
                if out is blocks:
                    out = list(blocks)
                out[index] = fixed
        return out

    def _with_cache_control_fixed(self, block: dict[str, Any]) -> dict[str, Any]:
        control = block.get("cache_control")
        if not isinstance(control, dict):
            return block
        fixed: dict[str, Any] = {"type": control.get("type", "ephemeral")}
        ttl = control.get("ttl")
        seconds = _DEFAULT_TTL_SECONDS
        if (
            self.facts.cache_ttl_1h
            and ttl in _TTL_SECONDS
            and _TTL_SECONDS[ttl] <= self._shortest_ttl
        ):
            fixed["ttl"] = ttl
            seconds = _TTL_SECONDS[ttl]
        elif ttl is not None:
            self.fields_dropped.append("cache_control.ttl")
        self._shortest_ttl = min(self._shortest_ttl, seconds)
        if fixed == control:
            return block
        return {**block, "cache_control": fixed}


def _is_removed(name: Any, removed: set[str]) -> bool:
    return isinstance(name, str) and name in removed


def _fold_system_messages(messages: list[Any]) -> list[Any]:
    """Fold ``role: system`` messages into an adjacent user turn (see module doc)."""
    if not any(message.get("role") == "system" for message in messages):
        return messages

    out: list[dict[str, Any]] = []
    waiting: list[Any] = []
    for message in messages:
        if message.get("role") == "system":
            blocks = _as_blocks(message.get("content"))
            if out and out[-1].get("role") == "user":
                previous = out[-1]
                out[-1] = {**previous, "content": _as_blocks(previous.get("content")) + blocks}
            else:
                waiting.extend(blocks)
            continue
        if waiting and message.get("role") == "user":
            message = {**message, "content": _insert_after_tool_results(
                _as_blocks(message.get("content")), waiting
            )}
            waiting = []
        out.append(message)
    if waiting:
        out.append({"role": "user", "content": waiting})
    return out


def _as_blocks(content: Any) -> list[Any]:
    if isinstance(content, list):
        return list(content)
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return []


def _insert_after_tool_results(blocks: list[Any], inserted: list[Any]) -> list[Any]:
    # Tool results must open a user turn that answers tool calls.
    split = 0
    while split < len(blocks) and isinstance(blocks[split], dict) and (
        blocks[split].get("type") == "tool_result"
    ):
        split += 1
    return blocks[:split] + inserted + blocks[split:]


def _place_automatic_breakpoint(messages: list[Any], control: dict[str, Any]) -> list[Any]:
    """Put top-level ``cache_control`` on the last block, as Anthropic would."""
    if not messages:
        return messages
    last = messages[-1]
    blocks = _as_blocks(last.get("content"))
    if not blocks or not isinstance(blocks[-1], dict) or "cache_control" in blocks[-1]:
        return messages
    blocks[-1] = {**blocks[-1], "cache_control": control}
    return [*messages[:-1], {**last, "content": blocks}]
