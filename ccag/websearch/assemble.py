"""Anthropic stream events added up into the message they describe.

Used twice by web search: each internal model call's events become that
call's message (to see which tools it called and to send its turn back), and
the merged events of a non-streaming request become the client's answer. The
rules are the Messages API's: a block opens with ``content_block_start``,
grows by deltas (text, tool input JSON, thinking, signature, citations) and
is complete at ``content_block_stop``; ``message_delta`` sets the stop reason
and updates usage.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ccag.errors import ProtocolError


class MessageAssembler:
    """Applies events in order; :attr:`message` is the result so far."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json_parts: dict[int, list[str]] = {}
        self.finished = False

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """The content blocks, in index order."""
        return [self._blocks[index] for index in sorted(self._blocks)]

    def apply(self, event: dict[str, Any]) -> None:
        """Add one event.

        Raises:
            ProtocolError: the event does not fit the stream so far (a delta
                for a block never started, no message_start first).
        """
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                raise ProtocolError("message_start carries no message")
            self.message = copy.deepcopy(message)
            self.message["content"] = []
            return
        if kind in ("ping", None):
            return
        if self.message is None:
            raise ProtocolError(f"{kind} before message_start")

        if kind == "content_block_start":
            block = event.get("content_block")
            if not isinstance(block, dict):
                raise ProtocolError("content_block_start carries no block")
            self._blocks[self._index(event)] = copy.deepcopy(block)
        elif kind == "content_block_delta":
            self._apply_delta(
                self._block(event), self._index(event), event.get("delta")
            )
        elif kind == "content_block_stop":
            index = self._index(event)
            block = self._block(event)
            parts = self._json_parts.pop(index, None)
            if parts is not None:
                block["input"] = _parse_input("".join(parts))
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for key in ("stop_reason", "stop_sequence"):
                    if key in delta:
                        self.message[key] = delta[key]
            usage = event.get("usage")
            if isinstance(usage, dict):
                merged = dict(self.message.get("usage") or {})
                merged.update(usage)
                self.message["usage"] = merged
        elif kind == "message_stop":
            self.finished = True
        self.message["content"] = self.blocks

    def _index(self, event: dict[str, Any]) -> int:
        index = event.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ProtocolError("a content block event has no index")
        return index

    def _block(self, event: dict[str, Any]) -> dict[str, Any]:
        block = self._blocks.get(self._index(event))
        if block is None:
            raise ProtocolError("an event for a content block that never started")
        return block

    def _apply_delta(self, block: dict[str, Any], index: int, delta: Any) -> None:
        if not isinstance(delta, dict):
            raise ProtocolError("content_block_delta carries no delta")
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "input_json_delta":
            self._json_parts.setdefault(index, []).append(
                str(delta.get("partial_json", ""))
            )
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(
                delta.get("thinking", "")
            )
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))


def _parse_input(text: str) -> Any:
    # A call cut short (max_tokens) leaves half a JSON document; the call is
    # then not run, and an empty input is what the turn records.
    if not text:
        return {}
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return {}
