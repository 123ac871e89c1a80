"""Find Anthropic's web search tool in a request and rewrite it for Bedrock.

Pure: dicts in, dicts out. Three rewrites:

* the server tool (``{"type": "web_search_20250305", "name": "web_search",
  "max_uses": 8}``) becomes an ordinary tool of the same name whose input is
  ``{"query": string}``, so a ``tool_choice`` that names it stays valid;
* earlier turns holding ``server_tool_use`` and ``web_search_tool_result``
  blocks become ``tool_use`` / ``tool_result`` pairs (an assistant turn is
  split around each result, since results must come from the user side), or
  plain text when the request offers no search tool to pair them with;
* ``web_search_result_location`` citations in earlier text are dropped:
  Bedrock cannot check their ``encrypted_index``.

Results ccag produced carry their snippet in ``encrypted_content`` (see
:func:`encode_snippet`), so a conversation sent back gives the model the same
text it saw; Anthropic's own opaque values are left out.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs

from ccag.anthropic.wirejson import dump_json
from ccag.errors import invalid_request

SEARCH_TOOL_TYPE_PREFIX = "web_search_"
SERVER_TOOL_ID_PREFIX = "srvtoolu_"
SNIPPET_PREFIX = "ccag1."

# Anthropic refuses longer queries with ``query_too_long``; its limit is not
# published, and real queries are a few words, so this only stops a runaway.
MAX_QUERY_CHARS = 400

# Text kept from one result's snippet: enough for the model to judge the
# page, small enough that eight results stay a modest tool result.
MAX_SNIPPET_CHARS = 1200

TOOL_DESCRIPTION = (
    "Search the web for current information. Returns result titles, URLs, "
    "page ages and text snippets. Use it when the answer depends on facts "
    "that may be newer than your training data; cite the URLs you rely on."
)

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "The search query"}},
    "required": ["query"],
}

_FORCING_CHOICES = frozenset({"tool", "any"})


@attrs.frozen
class UserLocation:
    """The approximate place results should suit (all parts optional)."""

    city: str | None = None
    region: str | None = None
    country: str | None = None
    timezone: str | None = None


@attrs.frozen
class SearchToolSpec:
    """The client's web search tool, as it asked for it.

    Attributes:
        name: the tool's name (always ``web_search`` today).
        tool_type: e.g. ``web_search_20250305``.
        max_uses: searches allowed in this request; None for no limit.
        allowed_domains: only results from these domains.
        blocked_domains: never results from these domains.
        user_location: where results should be local to.
        cache_control: the tool's cache breakpoint, carried over.
    """

    name: str
    tool_type: str
    max_uses: int | None = None
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    user_location: UserLocation | None = None
    cache_control: Any = None


def is_search_tool(tool: Any) -> bool:
    kind = tool.get("type") if isinstance(tool, dict) else None
    return isinstance(kind, str) and kind.startswith(SEARCH_TOOL_TYPE_PREFIX)


def find_search_tool(body: dict[str, Any]) -> SearchToolSpec | None:
    """The request's web search tool, or None when it offers none.

    Raises:
        ApiError: 400 when the tool's fields are malformed, or when both
            domain lists are given (Anthropic refuses that too).
    """
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    found = [tool for tool in tools if is_search_tool(tool)]
    if not found:
        return None
    if len(found) > 1:
        raise invalid_request("tools: only one web_search tool may be given")
    tool = found[0]

    name = tool.get("name", "web_search")
    if not isinstance(name, str) or not name:
        raise invalid_request("tools.web_search.name: must be a non-empty string")
    max_uses = tool.get("max_uses")
    if max_uses is not None and (
        not isinstance(max_uses, int) or isinstance(max_uses, bool) or max_uses < 1
    ):
        raise invalid_request(
            "tools.web_search.max_uses: must be an integer of at least 1"
        )
    allowed = _domains(tool, "allowed_domains")
    blocked = _domains(tool, "blocked_domains")
    if allowed and blocked:
        raise invalid_request(
            "tools.web_search: allowed_domains and blocked_domains cannot be used together"
        )
    return SearchToolSpec(
        name=name,
        tool_type=tool["type"],
        max_uses=max_uses,
        allowed_domains=allowed,
        blocked_domains=blocked,
        user_location=_user_location(tool.get("user_location")),
        cache_control=tool.get("cache_control"),
    )


def has_search_history(body: dict[str, Any]) -> bool:
    """Whether earlier turns hold web search blocks Bedrock would refuse."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            _is_search_block(block) for block in content
        ):
            return True
    return False


def rewrite_request(
    body: dict[str, Any], spec: SearchToolSpec | None
) -> dict[str, Any]:
    """The body to send to Bedrock: an ordinary search tool, history converted.

    With ``spec`` None (no search tool offered) earlier search blocks become
    text, since tool_use blocks need their tool declared.
    """
    out = dict(body)
    if spec is not None:
        tool: dict[str, Any] = {
            "name": spec.name,
            "description": TOOL_DESCRIPTION,
            "input_schema": INPUT_SCHEMA,
        }
        if spec.cache_control is not None:
            tool["cache_control"] = spec.cache_control
        out["tools"] = [
            tool if is_search_tool(item) else item for item in body["tools"]
        ]
    messages = body.get("messages")
    if isinstance(messages, list):
        out["messages"] = _convert_history(messages, as_pairs=spec is not None)
    return out


def relax_tool_choice(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with a forcing ``tool_choice`` made ``auto``.

    After the first round the model has done what was forced; forcing it
    again would make it search until ``max_uses`` runs out.
    """
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") not in _FORCING_CHOICES:
        return body
    relaxed: dict[str, Any] = {"type": "auto"}
    if "disable_parallel_tool_use" in choice:
        relaxed["disable_parallel_tool_use"] = choice["disable_parallel_tool_use"]
    return {**body, "tool_choice": relaxed}


def server_tool_id(model_tool_id: str) -> str:
    """The ``srvtoolu_`` id shown to the client for the model's tool call."""
    for prefix in ("toolu_bdrk_", "toolu_"):
        if model_tool_id.startswith(prefix):
            return SERVER_TOOL_ID_PREFIX + model_tool_id[len(prefix) :]
    return SERVER_TOOL_ID_PREFIX + model_tool_id


def encode_snippet(snippet: str) -> str:
    """The ``encrypted_content`` of a result ccag produced: its snippet, opaque."""
    data = dump_json({"snippet": snippet[:MAX_SNIPPET_CHARS]})
    return SNIPPET_PREFIX + base64.urlsafe_b64encode(data).decode("ascii")


def decode_snippet(encrypted_content: Any) -> str | None:
    """The snippet inside an ``encrypted_content`` ccag made, else None."""
    if not isinstance(encrypted_content, str) or not encrypted_content.startswith(
        SNIPPET_PREFIX
    ):
        return None
    try:
        raw = base64.urlsafe_b64decode(encrypted_content[len(SNIPPET_PREFIX) :])
        snippet = json.loads(raw).get("snippet")
    except (binascii.Error, ValueError, AttributeError, RecursionError):
        return None
    return snippet if isinstance(snippet, str) else None


def render_results(content: Any) -> str:
    """A ``web_search_tool_result``'s content as the text the model reads."""
    if isinstance(content, dict):
        return f"Web search error: {content.get('error_code', 'unavailable')}"
    if not isinstance(content, list) or not content:
        return "No results."
    lines: list[str] = []
    for number, result in enumerate(content, 1):
        if not isinstance(result, dict):
            continue
        lines.append(f"{number}. {result.get('title') or '(untitled)'}")
        lines.append(f"URL: {result.get('url', '')}")
        if result.get("page_age"):
            lines.append(f"Age: {result['page_age']}")
        snippet = decode_snippet(result.get("encrypted_content"))
        if snippet:
            lines.append(snippet)
        lines.append("")
    return "\n".join(lines).strip()


# -- helpers -----------------------------------------------------------------


def _domains(tool: dict[str, Any], field: str) -> tuple[str, ...]:
    value = tool.get(field)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_request(
            f"tools.web_search.{field}: must be a list of domain names"
        )
    return tuple(item.strip().lower() for item in value if item.strip())


def _user_location(value: Any) -> UserLocation | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_request("tools.web_search.user_location: must be an object")
    parts = {}
    for field in ("city", "region", "country", "timezone"):
        part = value.get(field)
        if part is not None and not isinstance(part, str):
            raise invalid_request(
                f"tools.web_search.user_location.{field}: must be a string"
            )
        parts[field] = part
    return UserLocation(**parts)


def _is_search_block(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    if kind == "web_search_tool_result":
        return True
    if kind == "server_tool_use" and block.get("name") == "web_search":
        return True
    return kind == "text" and _has_search_citations(block)


def _has_search_citations(block: dict[str, Any]) -> bool:
    citations = block.get("citations")
    return isinstance(citations, list) and any(
        isinstance(item, dict) and item.get("type") == "web_search_result_location"
        for item in citations
    )


def _convert_history(messages: list[Any], *, as_pairs: bool) -> list[Any]:
    if not any(
        isinstance(message, dict)
        and isinstance(message.get("content"), list)
        and any(_is_search_block(block) for block in message["content"])
        for message in messages
    ):
        return messages

    out: list[Any] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not any(
            _is_search_block(b) for b in content
        ):
            out.append(message)
            continue
        if message.get("role") != "assistant" or not as_pairs:
            out.append({**message, "content": [_as_plain(block) for block in content]})
            continue
        out.extend(_split_assistant_turn(message, content))
    return _merge_same_roles(out)


def _as_plain(block: Any) -> Any:
    """A search block as text; other blocks unchanged (citations dropped)."""
    if not isinstance(block, dict):
        return block
    kind = block.get("type")
    if kind == "server_tool_use" and block.get("name") == "web_search":
        query = (
            block.get("input", {}).get("query")
            if isinstance(block.get("input"), dict)
            else None
        )
        return {"type": "text", "text": f"[web search: {query}]"}
    if kind == "web_search_tool_result":
        return {
            "type": "text",
            "text": "[web search results]\n" + render_results(block.get("content")),
        }
    if kind == "text" and _has_search_citations(block):
        return {key: value for key, value in block.items() if key != "citations"}
    return block


def _split_assistant_turn(
    message: dict[str, Any], content: list[Any]
) -> list[dict[str, Any]]:
    """Assistant blocks with search results moved into user turns between."""
    turns: list[dict[str, Any]] = []
    assistant: list[Any] = []
    results: list[Any] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "web_search_tool_result":
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": block.get("tool_use_id"),
                    "content": render_results(block.get("content")),
                    **(
                        {"is_error": True}
                        if isinstance(block.get("content"), dict)
                        else {}
                    ),
                }
            )
            continue
        if results:
            turns.append({**message, "content": assistant})
            turns.append({"role": "user", "content": results})
            assistant, results = [], []
        if kind == "server_tool_use" and block.get("name") == "web_search":
            assistant.append(
                {
                    "type": "tool_use",
                    "id": block.get("id"),
                    "name": "web_search",
                    "input": block.get("input", {}),
                }
            )
        else:
            assistant.append(_as_plain(block))
    if assistant:
        turns.append({**message, "content": assistant})
    if results:
        turns.append({"role": "user", "content": results})
    return [turn for turn in turns if turn["content"]]


def _merge_same_roles(messages: list[Any]) -> list[Any]:
    """Join neighbouring turns of one role (a split may leave two user turns)."""
    out: list[Any] = []
    for message in messages:
        if (
            out
            and isinstance(message, dict)
            and isinstance(out[-1], dict)
            and out[-1].get("role") == message.get("role") == "user"
        ):
            out[-1] = {
                **out[-1],
                "content": _blocks(out[-1].get("content"))
                + _blocks(message.get("content")),
            }
            continue
        out.append(message)
    return out


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, list):
        return list(content)
    if isinstance(content, str) and content:
        return [{"type": "text", "text": content}]
    return []
