"""Bedrock's errors, as the Anthropic errors a client receives.

Bedrock reports a failure either as a non-2xx answer (exception name in the
``x-amzn-ErrorType`` header, ``{"message": ...}`` body) or, once a stream is
under way, as an event-stream exception frame. Both become an
:class:`UpstreamApiError`: the status and Anthropic error type come from the
facts file (``ccag/data/bedrock.json``), and the error also carries the
bounded ``error_type`` label of the ``ccag.errors.total`` metric.

Bedrock's messages are passed on, minus what belongs to our AWS account:
account ids and ARNs are replaced by placeholders.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ccag.bedrock.facts import bedrock_facts, error_fact
from ccag.errors import ERROR_TYPE_BY_STATUS, ApiError

# When Bedrock throttles without saying how long to wait: long enough for a
# per-minute quota bucket to regain some room, short enough that a client
# honouring it is not stalled for long.
DEFAULT_RETRY_AFTER_SECONDS = 5

# A Retry-After from Bedrock longer than this is clamped: a client told to
# wait an hour by a garbled header is worse off than one that retries.
MAX_RETRY_AFTER_SECONDS = 600

# Real error bodies are a few hundred bytes; anything much larger is not one,
# and is not worth parsing.
MAX_ERROR_BODY_BYTES = 64 * 1024

# Messages go to clients and logs; keep them readable and bounded.
MAX_MESSAGE_CHARS = 2000

# ARNs first, since they contain account ids.
_ARN = re.compile(r"arn:aws[a-zA-Z-]*:[^\s\"'<>(){}\[\],;]*")
_ACCOUNT_ID = re.compile(r"(?<!\d)\d{12}(?!\d)")

# The metric label of an error whose Bedrock exception we do not know,
# by the status the client gets.
_METRIC_BY_STATUS = {
    400: "validation",
    401: "access_denied",
    403: "access_denied",
    404: "not_found",
    408: "timeout",
    413: "validation",
    429: "throttled",
    504: "timeout",
}

# Anthropic error type -> status and metric label, for ``error`` events that
# arrive inside a Bedrock chunk in Anthropic's own shape.
_STATUS_BY_ERROR_TYPE = {
    error_type: status
    for status, error_type in sorted(ERROR_TYPE_BY_STATUS.items(), reverse=True)
}
_STATUS_BY_ERROR_TYPE["api_error"] = 500
_STATUS_BY_ERROR_TYPE["overloaded_error"] = 529
_STATUS_BY_ERROR_TYPE["timeout_error"] = 504

# Metric labels this module itself produces, beyond the facts file.
METRIC_STREAM_ERROR = "stream_error"
METRIC_BAD_RESPONSE = "bad_response"
METRIC_SERVER_ERROR = "server_error"


class UpstreamApiError(ApiError):
    """An :class:`ApiError` caused by Bedrock, with its metric label.

    Attributes:
        metric_error_type: the ``error_type`` label of ``ccag.errors.total``.
        upstream_exception: Bedrock's exception name, when it gave one
            (for logs; it is not shown to clients).
        detail: what failed on the way to Bedrock (a refused connect, a
            proxy's answer, a timeout's phase), for the operator's log; not
            shown to clients, whose message stays generic.
    """

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        *,
        metric_error_type: str,
        upstream_exception: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(status, message, error_type, headers)
        self.metric_error_type = metric_error_type
        self.upstream_exception = upstream_exception
        self.detail = detail

    @property
    def is_throttle(self) -> bool:
        """Bedrock throttled us (counted in ``ccag.bedrock.throttles.total``)."""
        return self.metric_error_type == "throttled"


def error_from_response(
    status: int, headers: list[tuple[str, str]], body: bytes
) -> UpstreamApiError:
    """The client's error for a non-2xx answer from Bedrock.

    Args:
        status: Bedrock's HTTP status.
        headers: Bedrock's response headers (any case).
        body: Bedrock's response body, possibly empty or not JSON.
    """
    fields = _json_fields(body)
    header_name = _header(headers, "x-amzn-errortype")
    body_name = fields.get("__type") if isinstance(fields.get("__type"), str) else None
    exception = _exception_name(header_name or body_name or "")

    fact = error_fact(exception) if exception else None
    if fact is not None:
        client_status = int(fact["status"])
        error_type = str(fact["type"])
        metric = str(fact["metric"])
    else:
        client_status = _fallback_status(status)
        error_type = ERROR_TYPE_BY_STATUS.get(client_status, "api_error")
        metric = _METRIC_BY_STATUS.get(client_status, METRIC_SERVER_ERROR)

    message = _message(fields) or _default_message(status, exception)
    extra_headers = []
    if client_status == 429:
        extra_headers.append(("retry-after", _retry_after(headers)))
    return UpstreamApiError(
        client_status,
        message,
        error_type,
        extra_headers,
        metric_error_type=metric,
        upstream_exception=exception or None,
    )


def error_from_exception_frame(exception_type: str, payload: bytes) -> UpstreamApiError:
    """The SSE error for an exception frame that arrived mid-stream.

    Args:
        exception_type: the frame's ``:exception-type``, such as
            ``throttlingException``.
        payload: the frame's payload, normally ``{"message": ...}``.
    """
    exception = _exception_name(exception_type)
    fact = error_fact(exception) if exception else None
    if fact is not None:
        status, error_type, metric = (
            int(fact["status"]),
            str(fact["type"]),
            str(fact["metric"]),
        )
    else:
        status, error_type, metric = 500, "api_error", METRIC_STREAM_ERROR

    message = _message(_json_fields(payload)) or _default_message(None, exception)
    extra_headers = (
        [("retry-after", str(DEFAULT_RETRY_AFTER_SECONDS))] if status == 429 else []
    )
    return UpstreamApiError(
        status,
        message,
        error_type,
        extra_headers,
        metric_error_type=metric,
        upstream_exception=exception or None,
    )


def error_from_error_event(event: dict[str, Any]) -> UpstreamApiError:
    """The error for an Anthropic-shaped ``error`` event inside the stream."""
    error = event.get("error")
    error = error if isinstance(error, dict) else {}
    error_type = error.get("type")
    if not isinstance(error_type, str) or error_type not in _STATUS_BY_ERROR_TYPE:
        error_type = "api_error"
    status = _STATUS_BY_ERROR_TYPE[error_type]
    message = _message(error) or "Bedrock reported an error in the stream"
    metric = _METRIC_BY_STATUS.get(status, METRIC_STREAM_ERROR)
    extra_headers = (
        [("retry-after", str(DEFAULT_RETRY_AFTER_SECONDS))] if status == 429 else []
    )
    return UpstreamApiError(
        status, message, error_type, extra_headers, metric_error_type=metric
    )


def malformed_stream_error() -> UpstreamApiError:
    """The error for an event stream we cannot read."""
    return UpstreamApiError(
        502,
        "Bedrock sent a malformed event stream",
        "api_error",
        metric_error_type=METRIC_BAD_RESPONSE,
    )


def truncated_stream_error() -> UpstreamApiError:
    """The error for a stream that ended before ``message_stop``."""
    return UpstreamApiError(
        502,
        "Bedrock ended the stream before the message was complete",
        "api_error",
        metric_error_type=METRIC_STREAM_ERROR,
    )


def malformed_body_error() -> UpstreamApiError:
    """The error for a non-streamed reply that is not a JSON message."""
    return UpstreamApiError(
        502,
        "Bedrock sent a malformed response body",
        "api_error",
        metric_error_type=METRIC_BAD_RESPONSE,
    )


def scrub_message(message: str) -> str:
    """``message`` without ARNs or account ids, bounded in length."""
    message = _ARN.sub("<arn>", message[: MAX_MESSAGE_CHARS * 2])
    message = _ACCOUNT_ID.sub("<account-id>", message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return message


def _json_fields(body: bytes) -> dict[str, Any]:
    if not body or len(body) > MAX_ERROR_BODY_BYTES:
        return {}
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return fields if isinstance(fields, dict) else {}


def _message(fields: dict[str, Any]) -> str:
    for key in ("message", "Message"):
        value = fields.get(key)
        if isinstance(value, str) and value.strip():
            return scrub_message(value.strip())
    return ""


def _exception_name(raw: str) -> str:
    # ``ValidationException:http://internal...`` in headers,
    # ``com.amazon.coral.validate#ValidationException`` in bodies.
    name = raw.split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return name if name.isascii() and name.replace("_", "").isalnum() else ""


def _fallback_status(upstream_status: int) -> int:
    table: dict[str, Any] = bedrock_facts()["error_status_fallback"]
    mapped = table.get(str(upstream_status))
    if isinstance(mapped, int):
        return mapped
    if 400 <= upstream_status < 500 and upstream_status in ERROR_TYPE_BY_STATUS:
        return upstream_status
    if 400 <= upstream_status < 500:
        return 400
    return 502


def _default_message(status: int | None, exception: str) -> str:
    if exception:
        return f"Bedrock returned {exception}"
    if status is not None:
        return f"Bedrock returned HTTP {status}"
    return "Bedrock reported an error"


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _retry_after(headers: list[tuple[str, str]]) -> str:
    value = (_header(headers, "retry-after") or "").strip()
    if value.isascii() and value.isdigit() and len(value) <= 6:
        return str(min(int(value), MAX_RETRY_AFTER_SECONDS))
    return str(DEFAULT_RETRY_AFTER_SECONDS)
