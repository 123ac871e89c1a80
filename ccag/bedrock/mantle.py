"""The Anthropic-native Messages API on ``bedrock-mantle``, as an upstream.

``POST https://bedrock-mantle.<region>.api.aws/anthropic/v1/messages`` takes
Anthropic's own request (the model in the body, ``anthropic-version`` as a
header, betas in ``anthropic-beta``) signed with SigV4 for the service
``bedrock-mantle`` or sent with a Bedrock API key, and answers Anthropic's
own JSON or SSE. So translation shrinks to undoing what the InvokeModel
translation put in the body, and the stream is forwarded as it arrives, seen
by the same :class:`~ccag.anthropic.observe.ResponseObserver` on the way and
changed only where ``message_start`` names the model.

Token counts go to Anthropic's ``count_tokens`` on the same endpoint (AWS
sends the counts of models that ``bedrock-runtime`` CountTokens does not
serve there); its ``{"input_tokens": N}`` is read back as CountTokens'
``{"inputTokens": N}``.

:class:`MantleUpstream` has the interface of
:class:`~ccag.bedrock.upstream.Upstream`, so the messages route, the count
route and the failover loop treat both kinds alike.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs

from ccag.anthropic.errors import (
    UpstreamApiError,
    error_from_error_event,
    truncated_stream_error,
)
from ccag.anthropic.models import ResolvedModel
from ccag.anthropic.observe import ResponseObserver
from ccag.anthropic.stream import TranslatedChunk, dump_json
from ccag.anthropic.translate import BedrockRequest
from ccag.bedrock import facts
from ccag.bedrock.client import BedrockClient, UpstreamResponse
from ccag.errors import ApiError, ProtocolError, SSEError
from ccag.sse import SSEDecoder, encode_event

MANTLE_SIGNING_NAME = "bedrock-mantle"
MESSAGES_PATH = "/anthropic/v1/messages"

# The Anthropic API version mantle is documented to take as a header.
ANTHROPIC_VERSION = "2023-06-01"

_NOTHING = TranslatedChunk(b"")


def mantle_body(request: BedrockRequest) -> tuple[bytes, dict[str, str]]:
    """The mantle body and extra headers for a translated InvokeModel request.

    The InvokeModel translation is kept (it already knows what Bedrock takes
    per model); only the InvokeModel-specific keys change place: the version
    becomes a header, ``anthropic_beta`` the ``anthropic-beta`` header, and
    the model and ``stream`` go into the body.
    """
    body: dict[str, Any] = json.loads(request.body)
    body.pop("anthropic_version", None)
    betas = body.pop("anthropic_beta", None)
    headers = {
        "content-type": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
        "accept": "text/event-stream" if request.stream else "application/json",
    }
    if betas:
        headers["anthropic-beta"] = ",".join(betas)
    out = {"model": request.model_id, **body}
    if request.stream:
        out["stream"] = True
    return dump_json(out), headers


def mantle_count_body(model_id: str, counted_body: bytes) -> tuple[bytes, dict[str, str]]:
    """Mantle's ``count_tokens`` body and headers for a CountTokens body.

    The count route builds Bedrock's CountTokens body (``{"input":
    {"invokeModel": {"body": <base64>}}}``, the embedded body a translated
    InvokeModel body); it is unwrapped, moved into mantle's shape as a
    Messages call would be, and cut to the fields ``count_tokens`` takes
    (``max_tokens``, which CountTokens needed, is one it refuses).

    Args:
        model_id: the model as the endpoint names it.
        counted_body: the CountTokens body.

    Raises:
        ValueError: the body is not a CountTokens body of that shape.
    """
    wrapper = json.loads(counted_body)
    encoded = wrapper["input"]["invokeModel"]["body"]
    invoke_body = base64.b64decode(encoded, validate=True)
    request = BedrockRequest(invoke_body, False, model_id, (), (), ())
    body, headers = mantle_body(request)
    taken = facts.mantle_count_tokens_fields()
    counted = {key: value for key, value in json.loads(body).items() if key in taken}
    return dump_json(counted), headers


def runtime_count_body(raw: bytes) -> bytes:
    """Mantle's ``{"input_tokens": N}`` as CountTokens' ``{"inputTokens": N}``.

    Anything else is returned as it came, for the caller to refuse.
    """
    try:
        document = json.loads(raw)
    except ValueError:
        return raw
    count = document.get("input_tokens") if isinstance(document, dict) else None
    if isinstance(count, int) and not isinstance(count, bool):
        return dump_json({"inputTokens": count})
    return raw


class MantleCountResponse:
    """A 200 from mantle's ``count_tokens``, read as a CountTokens answer."""

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def read_all(self, limit: int) -> bytes:
        return runtime_count_body(await self._response.read_all(limit))

    async def receive_some(self) -> bytes:
        return await self._response.receive_some()


class MantleErrorResponse:
    """A non-2xx mantle answer whose body reads as a Bedrock error body.

    Mantle errors use Anthropic's envelope (``{"type": "error", "error":
    {"type", "message"}}``); the messages route reads Bedrock's flat
    ``{"message"}``, so the envelope is flattened here and the status says
    the rest.
    """

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def read_all(self, limit: int) -> bytes:
        raw = await self._response.read_all(limit)
        try:
            document = json.loads(raw)
        except ValueError:
            return raw
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return dump_json({"message": error["message"]})
        return raw

    async def receive_some(self) -> bytes:
        return await self._response.receive_some()


class MantleStreamTranslator:
    """Anthropic SSE from mantle, forwarded; same interface as the Bedrock one.

    Args:
        requested_model: the client's model name, put into ``message_start``.
        observer: sees every event.
    """

    def __init__(self, requested_model: str, observer: ResponseObserver) -> None:
        self._requested_model = requested_model
        self._observer = observer
        self._decoder = SSEDecoder()
        self._finished = False

    def feed(self, raw: bytes) -> TranslatedChunk:
        """The SSE of one read, ready for the client."""
        if self._finished:
            return TranslatedChunk(b"", None, True)
        try:
            events = self._decoder.feed(raw)
        except SSEError:
            return self._end_with(b"", _malformed())

        out: list[bytes] = []
        for event in events:
            name = event.event.encode()
            data = event.data
            try:
                if name == b"message_start":
                    data = self._renamed(data)
                if name == b"error":
                    parsed = json.loads(data)
                    self._observer.observe_event_object(name, parsed)
                    return self._end_with(b"".join(out), error_from_error_event(parsed))
                self._observer.observe_event(name, data)
            except (ValueError, ProtocolError, RecursionError, AttributeError):
                return self._end_with(b"".join(out), _malformed())
            out.append(encode_event(name, data))
            if name == b"message_stop":
                self._finished = True
                return TranslatedChunk(b"".join(out), None, True)
        return TranslatedChunk(b"".join(out)) if out else _NOTHING

    def close(self) -> ApiError | None:
        """The error for a stream that ended before ``message_stop``, if so."""
        if self._finished:
            return None
        self._finished = True
        return truncated_stream_error()

    def _renamed(self, data: bytes) -> bytes:
        event = json.loads(data)
        message = event.get("message")
        if not isinstance(message, dict):
            raise ProtocolError("message_start carries no message")
        message["model"] = self._requested_model
        return dump_json(event)

    def _end_with(self, sse: bytes, error: ApiError) -> TranslatedChunk:
        self._finished = True
        return TranslatedChunk(sse + error.sse_event(), error, True)


def _malformed() -> UpstreamApiError:
    return UpstreamApiError(
        502, "Bedrock sent a malformed event stream", "api_error", metric_error_type="bad_response"
    )


@attrs.define
class MantleUpstream:
    """A ``bedrock-mantle`` endpoint and the client that reaches it."""

    endpoint_id: str
    region: str
    geo_prefix: str
    client: BedrockClient
    first_byte_timeout: float
    api: str = "mantle"

    def capability_key(self, model_id: str) -> str:
        return f"{self.endpoint_id}/{model_id}"

    def stream_translator(self, requested_model: str, observer: ResponseObserver) -> MantleStreamTranslator:
        return MantleStreamTranslator(requested_model, observer)

    @asynccontextmanager
    async def invoke(self, request: BedrockRequest) -> AsyncIterator[Any]:
        """Send the Messages call; yield the response (errors flattened)."""
        body, headers = mantle_body(request)
        async with self.client.post(
            MESSAGES_PATH, body, headers=headers, first_byte_timeout=self.first_byte_timeout
        ) as response:
            yield response if response.status == 200 else MantleErrorResponse(response)

    @asynccontextmanager
    async def count_tokens(self, model: ResolvedModel, body: bytes) -> AsyncIterator[Any]:
        """Send Anthropic's ``count_tokens``; yield the answer read as CountTokens'.

        Args:
            model: the model as this endpoint resolves it (its id goes in the body).
            body: the CountTokens body the count route built.
        """
        counted, headers = mantle_count_body(model.bedrock_id, body)
        async with self.client.post(
            facts.mantle_count_tokens_path(),
            counted,
            headers=headers,
            first_byte_timeout=self.first_byte_timeout,
        ) as response:
            yield MantleCountResponse(response) if response.status == 200 else MantleErrorResponse(response)
