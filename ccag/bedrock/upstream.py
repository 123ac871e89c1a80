"""One Bedrock endpoint as the request path sees it.

An :class:`Upstream` knows which endpoint it talks to (id, region, geographic
prefix) and how to send a translated request there. Routing over several
endpoints builds on this seam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs

from ccag.anthropic.errors import UpstreamApiError
from ccag.anthropic.models import ResolvedModel
from ccag.anthropic.translate import BedrockRequest
from ccag.bedrock.client import BedrockClient, UpstreamResponse
from ccag.bedrock.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccag.bedrock.signing import model_path

_STREAM_HEADERS = {
    "content-type": "application/json",
    "x-amzn-bedrock-accept": "application/json",
}
_INVOKE_HEADERS = {"content-type": "application/json", "accept": "application/json"}


@attrs.define
class Upstream:
    """A Bedrock Runtime endpoint and the client that reaches it."""

    endpoint_id: str
    region: str
    geo_prefix: str
    client: BedrockClient
    first_byte_timeout: float

    def capability_key(self, model_id: str) -> str:
        """The key under which what this endpoint accepts for a model is kept."""
        return f"{self.endpoint_id}/{model_id}"

    @asynccontextmanager
    async def invoke(self, request: BedrockRequest) -> AsyncIterator[UpstreamResponse]:
        """Send InvokeModel or InvokeModelWithResponseStream; yield the response."""
        if request.stream:
            path = model_path(request.model_id, "invoke-with-response-stream")
            headers = _STREAM_HEADERS
        else:
            path = model_path(request.model_id, "invoke")
            headers = _INVOKE_HEADERS
        async with self.client.post(
            path, request.body, headers=headers, first_byte_timeout=self.first_byte_timeout
        ) as response:
            yield response

    @asynccontextmanager
    async def count_tokens(self, model: ResolvedModel, body: bytes) -> AsyncIterator[UpstreamResponse]:
        """Send CountTokens for ``model`` (at its base id: profiles are refused)."""
        path = model_path(model.base_model_id, "count-tokens")
        async with self.client.post(
            path, body, headers=_INVOKE_HEADERS, first_byte_timeout=self.first_byte_timeout
        ) as response:
            yield response


# Why Bedrock could not be reached -> status, words, Anthropic type, metric label.
# Order matters: the first class the exception is an instance of wins.
_FAILURES: tuple[tuple[type[UpstreamError], int, str, str, str], ...] = (
    (UpstreamTimeout, 504, "Bedrock did not answer in time", "timeout_error", "timeout"),
    (UpstreamConnectError, 502, "could not connect to Bedrock", "api_error", "connect_error"),
    (UpstreamClosed, 502, "the connection to Bedrock broke", "api_error", "stream_error"),
    (UpstreamProtocolError, 502, "Bedrock sent a malformed response", "api_error", "bad_response"),
)


def upstream_failure(exc: UpstreamError) -> UpstreamApiError:
    """The Anthropic error a client gets when Bedrock could not be reached."""
    detail = f"{type(exc).__name__}: {exc}"
    for kind, status, message, error_type, metric in _FAILURES:
        if isinstance(exc, kind):
            return UpstreamApiError(
                status, message, error_type, metric_error_type=metric, detail=detail
            )
    return UpstreamApiError(
        502, "Bedrock failed", "api_error", metric_error_type="server_error", detail=detail
    )
