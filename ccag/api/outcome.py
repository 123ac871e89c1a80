"""What happened to one model request, recorded once when it ends.

Every `/v1/messages` request, whatever its fate (rejected, failed, cancelled,
streamed to the end), ends in exactly one :class:`Outcome`. Metrics, the
access log and spend records are all derived from it at one point, so the
counting rules hold for every path alike.
"""

from __future__ import annotations

import attrs

from ccag.anthropic.observe import ResponseObserver

# A client that went away before the response was complete, in the style of
# nginx: there is no real HTTP status for it, and METRICS.md names 499.
CLIENT_CLOSED_STATUS = 499


@attrs.define
class Outcome:
    """The facts about one request that telemetry, logs and spend need.

    ``completed_at`` is when the last response byte was handed to the
    transport. Once it is set the client has its whole answer: a cancel that
    comes later (the client closing its side as soon as it read the end,
    while the upstream call is still being torn down) does not make it a 499,
    and the duration ends there, not when the clean-up does.
    """

    request_id: str
    started_at: float
    endpoint: str = "messages"
    model_label: str = "other"
    requested_model: str | None = None
    bedrock_model_id: str | None = None
    endpoint_id: str | None = None
    streaming: bool = False
    status: int = 0
    first_content_at: float | None = None
    completed_at: float | None = None
    # The write under way carries the end of the answer (a non-streamed
    # body, or the stream's message_stop): if the client then goes away
    # after the shell flushed it (responder.body_flushed), it had it all.
    final_write: bool = False
    key_id: str | None = None
    key_name: str | None = None
    user: str | None = None
    team: str | None = None
    error_type: str | None = None
    observer: ResponseObserver = attrs.Factory(ResponseObserver)
    retried_without: list[str] = attrs.Factory(list)
    response_headers: list[tuple[str, str]] = attrs.Factory(list)  # budget status (ccag.spend)
    model_calls: list[ResponseObserver] = attrs.Factory(list)  # one per Bedrock call when a request makes several (web search rounds); usage, tools, stop reason each
    web_searches: int = 0  # searches ccag ran for this request (ccag.websearch)
