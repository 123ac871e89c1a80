"""The error families of ccag.

Every error a client can see is an :class:`ApiError`: it carries the HTTP status
and the Anthropic error type it implies, renders itself as Anthropic's JSON
envelope for a response that has not started, and as one SSE ``error`` event
for a stream that has. Errors raised by our own parsers are
:class:`ProtocolError` subclasses; foreign exceptions (botocore, trio, h11, h2)
are translated into these once, at the module that talks to the foreign code.
"""

from __future__ import annotations

import json


class CcagError(Exception):
    """The root of every exception ccag raises on purpose."""


class ProtocolError(CcagError):
    """Bytes from a peer do not follow the protocol they claim to follow."""


class EventStreamError(ProtocolError):
    """An AWS event-stream frame is malformed (length, CRC, header)."""


class SSEError(ProtocolError):
    """A Server-Sent Events stream is malformed."""


class ConfigError(CcagError):
    """The configuration is invalid; the message says which setting and why."""


class ClientDisconnected(CcagError):
    """The client went away before the response was complete."""


class AbortConnection(CcagError):
    """Raised by a handler: drop the connection now, with no response.

    The HTTP/1.1 shell closes the socket with a TCP reset (what a crashed or
    cut-off peer looks like); the bundled simulator uses it to play Bedrock
    resetting a connection before any response. HTTP/2 resets the stream.
    """


class InternalError(CcagError):
    """Something that cannot happen happened: a bug in ccag."""


# Anthropic's error types and the statuses they go with.
ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ApiError(CcagError):
    """An error the client receives, in Anthropic's shape.

    Args:
        status: the HTTP status of the response.
        message: what went wrong, in words a developer can act on.
        error_type: Anthropic's error type; derived from ``status`` if omitted.
        headers: extra response headers, such as ``retry-after``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPE_BY_STATUS.get(status, "api_error")
        self.headers = list(headers or ())

    def envelope(self, request_id: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {
            "type": "error",
            "error": {"type": self.error_type, "message": self.message},
        }
        if request_id is not None:
            body["request_id"] = request_id
        return body

    def body(self, request_id: str | None = None) -> bytes:
        """The JSON envelope of a plain (non-stream) error response."""
        return json.dumps(self.envelope(request_id)).encode()

    def sse_event(self) -> bytes:
        """The one SSE ``error`` event that ends a stream already under way."""
        data = json.dumps(self.envelope(), separators=(",", ":")).encode()
        return b"event: error\ndata: " + data + b"\n\n"

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.error_type!r}, {self.message!r})"


def invalid_request(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error")


def not_found(message: str) -> ApiError:
    return ApiError(404, message, "not_found_error")
