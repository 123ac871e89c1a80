"""Small helpers that answer a request with JSON or an Anthropic error."""

from __future__ import annotations

import json
from typing import Any

from ccag.errors import ApiError
from ccag.server.types import Request, Responder

JSON_HEADERS = (("content-type", "application/json"),)
SSE_HEADERS = (
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
)


async def send_json_bytes(
    responder: Responder,
    status: int,
    body: bytes,
    extra_headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> None:
    await send_json_head_and_body(responder, status, body, extra_headers)
    await responder.end_response()


async def send_json_head_and_body(
    responder: Responder,
    status: int,
    body: bytes,
    extra_headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> None:
    """Head and whole body of a JSON response; the caller ends it."""
    headers = [*JSON_HEADERS, ("content-length", str(len(body))), *extra_headers]
    await responder.start_response(status, headers)
    await responder.send_data(body)


async def send_json(
    responder: Responder,
    status: int,
    document: Any,
    extra_headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> None:
    await send_json_bytes(responder, status, json.dumps(document).encode(), extra_headers)


# Statuses no retry can change. Saying so stops clients built on Anthropic's
# SDKs (Claude Code among them) from retrying a wrong key for minutes.
NOT_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 413})
NOT_RETRYABLE_HEADER = ("x-should-retry", "false")


async def send_error(request: Request, responder: Responder, error: ApiError) -> None:
    """Answer with ``error`` as plain JSON, if the response has not started."""
    if responder.is_started:
        return
    headers = error.headers
    if error.status in NOT_RETRYABLE_STATUSES:
        headers = [*headers, NOT_RETRYABLE_HEADER]
    await send_json_bytes(responder, error.status, error.body(request.request_id), headers)


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON (RFC 8259) does not
    # have; passed on, they reach Bedrock as numbers no client meant.
    raise ValueError(f"{name} is not a JSON value")


def parse_json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    content_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip()
    if content_type and content_type.lower() != "application/json":
        raise ApiError(
            400,
            f"content-type must be application/json, not {content_type[:100]!r}",
            "invalid_request_error",
        )
    if not request.body:
        raise ApiError(400, "the request body is empty; a JSON object is required")
    try:
        document = json.loads(request.body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return document
