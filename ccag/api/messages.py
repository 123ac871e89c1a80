"""``POST /v1/messages``: authenticate, translate, call Bedrock, stream back.

The flow of one request:

1. authenticate the key (in memory), parse the body, resolve the model and
   translate the body for Bedrock; any failure here is a plain JSON error and
   no upstream call is made;
2. call Bedrock. A non-2xx answer becomes the matching Anthropic error as
   plain JSON; a ValidationException that names a beta or a field we sent is
   remembered, the offender removed, and the call retried once;
3. on 2xx, streaming: send the SSE head, then every decoded frame as soon as it
   lands, ``ping`` events while Bedrock is silent, and one ``error`` event if
   the stream breaks. Non-streaming: the message as JSON.

The response head goes out only after Bedrock answered 2xx, so that every
setup error is still a plain error response.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ccag.anthropic.capabilities import parse_validation_rejection
from ccag.anthropic.errors import UpstreamApiError, error_from_response
from ccag.anthropic.models import ResolvedModel
from ccag.anthropic.stream import translate_message_body
from ccag.anthropic.translate import BedrockRequest, translate_messages
from ccag.api.body_log import LoggingResponder, bodies_wanted, log_request_body
from ccag.api.outcome import CLIENT_CLOSED_STATUS, Outcome
from ccag.api.relay import end_stream_with, relay_stream
from ccag.api.responses import (
    SSE_HEADERS,
    parse_json_body,
    send_error,
    send_json_head_and_body,
)
from ccag.bedrock.errors import UpstreamError
from ccag.bedrock.failover import run_with_failover
from ccag.bedrock.upstream import upstream_failure
from ccag.errors import ApiError, ClientDisconnected
from ccag.server.types import Request, Responder
from ccag.services import Services
from ccag.websearch.loop import handle_web_search, needs_interception

logger = logging.getLogger("ccag.messages")

# A Bedrock error body is a short JSON document; anything longer is not one,
# and reading it whole would let a broken upstream make us buffer without end.
MAX_ERROR_BODY_BYTES = 64 * 1024

# Bedrock's non-streaming answer holds one whole message: its size is bounded
# by the model's output limit, far below this.
MAX_MESSAGE_BODY_BYTES = 64 * 1024 * 1024


class MessagesRoute:
    """The handler of ``POST /v1/messages``."""

    # Services.finish writes this route's access line, with model and tokens.
    logs_access = True

    def __init__(self, services: Services) -> None:
        self.services = services
        self.log_bodies = bodies_wanted(services.config.log_bodies)

    async def __call__(self, request: Request, responder: Responder) -> None:
        services = self.services
        if self.log_bodies:
            log_request_body(request)
            responder = LoggingResponder(responder, request.request_id)
        outcome = Outcome(request_id=request.request_id, started_at=request.started_at)
        services.telemetry.request_started()
        try:
            await self._handle(request, responder, outcome)
        except ApiError as error:
            outcome.status = error.status
            if outcome.error_type is None:
                outcome.error_type = getattr(error, "metric_error_type", None)
            if not responder.is_started:
                await send_error(request, responder, error)
                outcome.completed_at = trio.current_time()
        except ClientDisconnected:
            if not _answer_delivered(outcome, responder):
                outcome.status = CLIENT_CLOSED_STATUS
        except BaseException as exc:
            if _is_cancellation(exc):
                # The shell cancels us when the client goes away (or at
                # shutdown): the response is incomplete whatever status it
                # started with, unless its last byte was already sent (a
                # client that closes as soon as it read the end must not
                # turn a finished answer into 499). A cancellation that went
                # through a nursery (connecting to Bedrock opens one)
                # arrives as a group of Cancelled.
                if not _answer_delivered(outcome, responder):
                    outcome.status = CLIENT_CLOSED_STATUS
            elif not outcome.status or not responder.is_started:
                # A bug: the shell answers 500 (or cuts a started response).
                outcome.status = 500
            raise
        finally:
            services.finish(outcome)

    def refused(self, request: Request, error: ApiError) -> None:
        """Count a request the server refused before this route ran (413).

        Its body was not read, so model and streaming are unknown: it counts
        as model ``other``, not streaming, with the status the client got.
        """
        outcome = Outcome(request_id=request.request_id, started_at=request.started_at)
        outcome.status = error.status
        outcome.completed_at = trio.current_time()
        self.services.telemetry.request_started()
        self.services.finish(outcome)

    async def _handle(self, request: Request, responder: Responder, outcome: Outcome) -> None:
        services = self.services
        principal = services.authenticate(request)
        outcome.key_id = principal.key_id
        outcome.key_name = principal.key_name
        outcome.user = principal.user
        outcome.team = principal.team

        body = parse_json_body(request)
        outcome.streaming = body.get("stream") is True
        model_name = _model_name(body)
        beta_header = request.headers.get("anthropic-beta")
        outcome.model_label = services.upstream.model_label(model_name)
        outcome.requested_model = model_name
        intercept = needs_interception(body)

        # Budgets and rate limits (ccag.spend), from memory: 429 when over.
        # After the body is parsed, so that a refusal is counted under its model.
        if services.spend is not None:
            outcome.response_headers = services.spend.admit(principal)

        async def attempt(upstream: Any, model: ResolvedModel) -> None:
            outcome.model_label = model.canonical
            outcome.endpoint_id = upstream.endpoint_id
            outcome.bedrock_model_id = model.bedrock_id
            if intercept:
                # Anthropic's web_search server tool, run by ccag (ccag.websearch).
                await handle_web_search(
                    services, request, responder, outcome, body, model, beta_header, upstream
                )
                return
            await self._call_with_validation_retry(
                request, responder, outcome, upstream, body, beta_header, model
            )

        # Several endpoints (ccag.bedrock.failover): throttles, 5xx and
        # connection failures before the head move the request on.
        await run_with_failover(
            services.upstream,
            team=principal.team,
            user=principal.user or principal.key_id,
            model_name=model_name,
            attempt=attempt,
            response_started=lambda: responder.is_started,
        )

    async def _call_with_validation_retry(
        self,
        request: Request,
        responder: Responder,
        outcome: Outcome,
        upstream: Any,
        body: dict[str, Any],
        beta_header: str | None,
        model: ResolvedModel,
    ) -> None:
        services = self.services
        memory_key = upstream.capability_key(model.bedrock_id)
        translated = translate_messages(
            body, beta_header, model, services.verdicts(memory_key)
        )

        for attempt in range(2):
            try:
                await self._call_bedrock(
                    request, responder, outcome, upstream, translated, model.requested
                )
                return
            except UpstreamApiError as error:
                rejection = None
                if attempt == 0 and error.status == 400:
                    rejection = parse_validation_rejection(error.message, translated)
                if rejection is None:
                    raise
                services.remember_rejection(memory_key, rejection)
                outcome.retried_without.append(f"{rejection.kind}:{rejection.name}")
                logger.warning(
                    "%s: Bedrock refused %s %r for %s; retrying without it",
                    request.request_id, rejection.kind, rejection.name, model.bedrock_id,
                )
                translated = translate_messages(
                    body, beta_header, model, services.verdicts(memory_key)
                )

    async def _call_bedrock(
        self,
        request: Request,
        responder: Responder,
        outcome: Outcome,
        upstream: Any,
        translated: BedrockRequest,
        requested_model: str,
    ) -> None:
        services = self.services
        try:
            async with upstream.invoke(translated) as response:
                if response.status != 200:
                    raw = await response.read_all(MAX_ERROR_BODY_BYTES)
                    error = error_from_response(response.status, response.headers, raw)
                    outcome.error_type = error.metric_error_type
                    services.count_upstream_error(outcome, error)
                    raise error
                outcome.error_type = None
                if translated.stream:
                    await self._relay_stream(
                        responder, outcome, upstream, response, requested_model
                    )
                else:
                    raw = await response.read_all(MAX_MESSAGE_BODY_BYTES)
                    message = translate_message_body(raw, requested_model, outcome.observer)
                    outcome.first_content_at = trio.current_time()
                    outcome.status = 200
                    outcome.final_write = True
                    await send_json_head_and_body(
                        responder, 200, message, outcome.response_headers
                    )
                    # The whole body (its content-length) is out: a client
                    # that closes before the end-of-stream marker (curl over
                    # HTTP/2 does) has the full answer, so it is a 200.
                    outcome.completed_at = trio.current_time()
                    await responder.end_response()
        except UpstreamError as exc:
            error = upstream_failure(exc)
            outcome.error_type = error.metric_error_type
            services.count_upstream_error(outcome, error)
            if responder.is_started:
                # No failover after the head: the cause is logged here.
                logger.warning(
                    "%s: the stream from %s broke: %s",
                    request.request_id, outcome.endpoint_id or "Bedrock", error.detail,
                )
                await end_stream_with(responder, outcome, error)
            else:
                raise error from None

    async def _relay_stream(
        self,
        responder: Responder,
        outcome: Outcome,
        upstream: Any,
        response: Any,
        requested_model: str,
    ) -> None:
        """Forward Bedrock's event stream as SSE, frame by frame, as it lands."""
        # InvokeModel's event stream or mantle's SSE (ccag.bedrock.mantle).
        translator = upstream.stream_translator(requested_model, outcome.observer)
        await responder.start_response(200, [*SSE_HEADERS, *outcome.response_headers])
        outcome.status = 200
        await relay_stream(
            responder,
            outcome,
            response,
            translator,
            watch=self.services.silence_watch,
            on_error=lambda error: self.services.count_upstream_error(outcome, error),
        )


def _is_cancellation(exc: BaseException) -> bool:
    """A trio.Cancelled, or an exception group of nothing else."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return rest is None
    return False


def _answer_delivered(outcome: Outcome, responder: Responder) -> bool:
    """Whether the client had the whole answer before it went away.

    Either the route noted the end (completed_at), or the write of the end
    was under way and the shell had already flushed it: over HTTP/2 another
    task's flush may carry our last frame while we wait for the write lock,
    and a client that reads it and closes gets our task cancelled there.
    """
    if outcome.completed_at is not None:
        return True
    return outcome.final_write and responder.body_flushed


def _model_name(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: a model name is required", "invalid_request_error")
    return model
