"""What the live view shows of one finished request, and who may see it.

A :class:`LiveEvent` is built from an :class:`~ccag.api.outcome.Outcome`'s
fields only. The outcome carries no prompt or response text, and neither does
the event: names, counts, times and statuses. Pure: no trio, no clock reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs

from ccag.api.outcome import Outcome

# Statuses the live view counts as throttling rather than failure: the
# gateway's own rate limits and budgets, and Bedrock's throttling, all 429.
THROTTLE_STATUS = 429
# A client that left is neither an error nor a success of the gateway.
CLIENT_CLOSED_STATUS = 499

Pricer = Callable[[str, int, int, int, int, int], float]
"""``price(model_label, input, output, cache_read, cache_write, cache_write_1h)
-> USD``; ``cache_write_1h`` is the 1-hour part of ``cache_write``."""


@attrs.define(slots=True)
class LiveEvent:
    """One finished request as the live view shows it (no content, ever)."""

    seq: int
    at: float
    request_id: str
    key_id: str | None
    key_name: str | None
    user: str | None
    team: str | None
    model: str
    requested_model: str | None
    endpoint: str
    endpoint_id: str | None
    streaming: bool
    status: int
    error_type: str | None
    ttft_ms: float | None
    duration_ms: float
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    tool_calls: int
    cost_usd: float
    # The JSON form, made once by the first viewer that sends it.
    encoded: str | None = None

    @property
    def is_throttle(self) -> bool:
        return self.status == THROTTLE_STATUS or self.error_type == "throttled"

    @property
    def is_error(self) -> bool:
        return (
            self.status >= 400
            and self.status != CLIENT_CLOSED_STATUS
            and not self.is_throttle
        )

    def document(self) -> dict[str, Any]:
        """The fields a viewer receives (the key id stays on the server)."""
        return {
            "seq": self.seq,
            "at": round(self.at, 3),
            "request_id": self.request_id,
            "key": self.key_name,
            "user": self.user,
            "team": self.team,
            "model": self.model,
            "requested_model": self.requested_model,
            "endpoint": self.endpoint,
            "endpoint_id": self.endpoint_id,
            "streaming": self.streaming,
            "status": self.status,
            "error_type": self.error_type,
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "duration_ms": round(self.duration_ms, 1),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "tool_calls": self.tool_calls,
            "cost_usd": round(self.cost_usd, 6),
        }

    def message(self) -> str:
        """The ``event`` message for a viewer, encoded once."""
        if self.encoded is None:
            self.encoded = json.dumps(
                {"type": "event", "event": self.document()}, separators=(",", ":")
            )
        return self.encoded


def event_from_outcome(
    outcome: Outcome, seq: int, wall_now: float, trio_now: float, price: Pricer
) -> LiveEvent:
    """The live event of a finished request.

    Args:
        outcome: the finished request.
        seq: its place in the hub's sequence.
        wall_now: Unix time now, when the request is reported.
        trio_now: the Trio clock now, to place the end on the wall clock.
        price: what the tokens cost.
    """
    ended_at = outcome.completed_at if outcome.completed_at is not None else trio_now
    ttft_ms = None
    if outcome.first_content_at is not None:
        ttft_ms = (outcome.first_content_at - outcome.started_at) * 1000.0
    usage = outcome.observer.usage
    return LiveEvent(
        seq=seq,
        at=wall_now - (trio_now - ended_at),
        request_id=outcome.request_id,
        key_id=outcome.key_id,
        key_name=outcome.key_name,
        user=outcome.user,
        team=outcome.team,
        model=outcome.model_label,
        requested_model=outcome.requested_model,
        endpoint=outcome.endpoint,
        endpoint_id=outcome.endpoint_id,
        streaming=outcome.streaming,
        status=outcome.status,
        error_type=outcome.error_type,
        ttft_ms=ttft_ms,
        duration_ms=(ended_at - outcome.started_at) * 1000.0,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        tool_calls=len(outcome.observer.tool_calls),
        cost_usd=price(
            outcome.model_label,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.cache_write_1h_tokens,
        ),
    )


@attrs.frozen
class Visibility:
    """Which requests one viewer may see.

    An admin sees every request. A member sees the requests of their user,
    or, for a key owned only by a team, of that key.
    """

    is_admin: bool
    user: str | None = None
    key_id: str | None = None

    @property
    def scope(self) -> str:
        """A name shared by every viewer who sees the same requests."""
        if self.is_admin:
            return "*"
        if self.user is not None:
            return "user:" + self.user
        return "key:" + str(self.key_id)

    def sees(self, event: LiveEvent) -> bool:
        if self.is_admin:
            return True
        if self.user is not None:
            return event.user == self.user
        return self.key_id is not None and event.key_id == self.key_id


def scopes_of(event: LiveEvent) -> tuple[str, ...]:
    """The member scopes (see :attr:`Visibility.scope`) that see ``event``."""
    scopes = []
    if event.user is not None:
        scopes.append("user:" + event.user)
    if event.key_id is not None:
        scopes.append("key:" + event.key_id)
    return tuple(scopes)
