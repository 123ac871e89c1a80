"""Several model calls presented as one Anthropic response.

Theory of operation. The interception loop calls the model, runs the
searches it asked for, and calls it again. The client must see one message:

* one ``message_start``, the first call's (its usage is the first call's);
* every content block of every call, re-numbered so that indices keep
  counting up across calls; the model's ``tool_use`` of the search tool is
  shown as a ``server_tool_use`` with a ``srvtoolu_`` id, its input streamed
  as the model writes it;
* after each search, a ``web_search_tool_result`` block (start and stop; the
  content is whole in the start event, as Anthropic sends it);
* one ``message_delta`` carrying the last call's stop reason and the usage
  of all calls added up (the ``cache_creation`` breakdown by TTL too, when
  some call reported one), with ``server_tool_use.web_search_requests``;
  then one ``message_stop``.

The merger is pure: events in, events out. The loop decides what to do
between calls from :meth:`ResponseMerger.end_call`.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import attrs

from ccag.websearch.assemble import MessageAssembler
from ccag.websearch.tool import server_tool_id

Event = dict[str, Any]

# Usage fields that add up across calls.
SUMMED_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

# The ``cache_creation`` breakdown of cache writes by TTL; Anthropic's usage
# has both keys, and their sum is ``cache_creation_input_tokens``.
CACHE_WRITE_5M_FIELD = "ephemeral_5m_input_tokens"
CACHE_WRITE_1H_FIELD = "ephemeral_1h_input_tokens"


@attrs.frozen
class SearchCall:
    """One search the model asked for.

    Attributes:
        tool_use_id: the model's own ``toolu_`` id (for the tool_result).
        server_id: the ``srvtoolu_`` id the client sees.
        input: the tool input the model wrote.
    """

    tool_use_id: str
    server_id: str
    input: Any


@attrs.frozen
class CallSummary:
    """What one model call produced.

    Attributes:
        blocks: its content blocks, as the model wrote them (to send back).
        searches: the search calls among them, in order.
        client_tool_calls: names of other tools it called (for the client).
        stop_reason: why it stopped.
        stop_sequence: the stop sequence that ended it, if one did.
        usage: its own token usage.
    """

    blocks: list[dict[str, Any]]
    searches: list[SearchCall]
    client_tool_calls: list[str]
    stop_reason: str | None
    stop_sequence: str | None
    usage: dict[str, Any]


class ResponseMerger:
    """Turns the events of successive calls into one response's events.

    Args:
        search_tool_name: the tool name the model calls to search.
    """

    def __init__(self, search_tool_name: str) -> None:
        self._search_tool_name = search_tool_name
        self._next_index = 0
        self._index_map: dict[int, int] = {}
        self._started = False
        self._call = MessageAssembler()
        self.usage: dict[str, int] = {field: 0 for field in SUMMED_USAGE_FIELDS}
        # Summed like ``usage``; None until a call reports a breakdown, and
        # the writes of calls before that, all 5-minute ones.
        self.cache_creation: dict[str, int] | None = None
        self._unbroken_writes = 0
        self.searches_run = 0

    def begin_call(self) -> None:
        """Start taking the events of the next model call."""
        self._index_map = {}
        self._call = MessageAssembler()

    def feed(self, event: Event) -> list[Event]:
        """One event of the current call; the events for the client.

        Raises:
            ProtocolError: the event does not fit the call so far.
        """
        self._call.apply(event)
        kind = event.get("type")
        if kind == "message_start":
            if self._started:
                return []
            self._started = True
            return [event]
        if kind == "content_block_start":
            index = self._next_index
            self._next_index += 1
            self._index_map[event["index"]] = index
            block = event["content_block"]
            if self._is_search_call(block):
                block = {
                    "type": "server_tool_use",
                    "id": server_tool_id(str(block.get("id", ""))),
                    "name": "web_search",
                    "input": {},
                }
            return [{**event, "index": index, "content_block": block}]
        if kind in ("content_block_delta", "content_block_stop"):
            return [{**event, "index": self._index_map[event["index"]]}]
        if kind == "ping":
            return [event]
        # message_delta and message_stop of a call are not the response's:
        # the loop decides the response's end (see finish).
        return []

    def end_call(self) -> CallSummary:
        """Close the current call: its blocks, searches and usage."""
        message = self._call.message or {}
        blocks = self._call.blocks
        usage = dict(message.get("usage") or {})
        for field in SUMMED_USAGE_FIELDS:
            value = usage.get(field)
            if _is_count(value):
                self.usage[field] += value
        self._add_cache_creation(usage)

        searches: list[SearchCall] = []
        client_tools: list[str] = []
        for block in blocks:
            if self._is_search_call(block):
                tool_id = str(block.get("id", ""))
                searches.append(
                    SearchCall(tool_id, server_tool_id(tool_id), block.get("input"))
                )
            elif block.get("type") == "tool_use":
                client_tools.append(str(block.get("name")))
        return CallSummary(
            blocks=blocks,
            searches=searches,
            client_tool_calls=client_tools,
            stop_reason=message.get("stop_reason"),
            stop_sequence=message.get("stop_sequence"),
            usage=usage,
        )

    def result_events(self, call: SearchCall, content: Any) -> list[Event]:
        """A ``web_search_tool_result`` block answering ``call``.

        Args:
            content: a list of ``web_search_result`` objects, or one
                ``web_search_tool_result_error`` object.
        """
        index = self._next_index
        self._next_index += 1
        block = {
            "type": "web_search_tool_result",
            "tool_use_id": call.server_id,
            "content": content,
        }
        return [
            {"type": "content_block_start", "index": index, "content_block": block},
            {"type": "content_block_stop", "index": index},
        ]

    def finish(
        self, stop_reason: str | None, stop_sequence: str | None = None
    ) -> list[Event]:
        """The response's closing ``message_delta`` and ``message_stop``."""
        usage: dict[str, Any] = dict(self.usage)
        if self.cache_creation is not None:
            usage["cache_creation"] = dict(self.cache_creation)
        usage["server_tool_use"] = {"web_search_requests": self.searches_run}
        return [
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            },
            {"type": "message_stop"},
        ]

    def _add_cache_creation(self, usage: dict[str, Any]) -> None:
        """Add one call's cache writes by TTL to the response's.

        A call that reports its writes without a breakdown wrote them for the
        default 5 minutes; it only counts once some call has a breakdown, so
        the sums still add up to ``cache_creation_input_tokens``.
        """
        breakdown = usage.get("cache_creation")
        written = usage.get("cache_creation_input_tokens")
        written = written if _is_count(written) else 0
        if not isinstance(breakdown, dict):
            if self.cache_creation is None:
                self._unbroken_writes += written
            else:
                self.cache_creation[CACHE_WRITE_5M_FIELD] += written
            return

        if self.cache_creation is None:
            self.cache_creation = {
                CACHE_WRITE_5M_FIELD: self._unbroken_writes,
                CACHE_WRITE_1H_FIELD: 0,
            }
        for field in (CACHE_WRITE_5M_FIELD, CACHE_WRITE_1H_FIELD):
            value = breakdown.get(field)
            if _is_count(value):
                self.cache_creation[field] += value

    def _is_search_call(self, block: Any) -> bool:
        return (
            isinstance(block, dict)
            and block.get("type") == "tool_use"
            and block.get("name") == self._search_tool_name
        )


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
