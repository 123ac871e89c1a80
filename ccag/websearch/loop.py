"""The interception loop: call the model, run its searches, call it again.

One client request becomes several Bedrock calls, each a streamed call
(InvokeModelWithResponseStream, whatever the client asked), their events
merged by :class:`~ccag.websearch.merge.ResponseMerger` into one response:

1. call the model with the rewritten request (:mod:`ccag.websearch.tool`);
   every event goes to the client as it arrives (a streaming client) or into
   the message being assembled (a non-streaming one);
2. if the call ended in ``tool_use`` with searches among its tool calls, run
   each search (or answer ``max_uses_exceeded``, ``invalid_tool_input``...),
   send its ``web_search_tool_result`` block, and append the model's turn and
   the results (as ``tool_result``) to the conversation;
3. if the model also called a client tool, or called no search, the response
   ends there with the call's stop reason; otherwise go to 1 with a
   ``tool_choice`` that no longer forces a search.

After :data:`MAX_MODEL_CALLS` calls the response ends with ``pause_turn``,
as Anthropic's API does when its own server-tool loop runs long: the client
may send the turn back to continue.

The SSE head goes out only once the first call answered 2xx, so errors
before that are plain JSON errors; later failures end the stream with one
``error`` event.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from ccag.anthropic.capabilities import parse_validation_rejection
from ccag.anthropic.errors import error_from_response
from ccag.anthropic.models import ResolvedModel
from ccag.anthropic.observe import ResponseObserver
from ccag.anthropic.stream import BedrockStreamTranslator, dump_json
from ccag.anthropic.translate import BedrockRequest, translate_messages
from ccag.api.outcome import Outcome
from ccag.api.responses import SSE_HEADERS, send_json_bytes
from ccag.api.silence import PING_EVENT
from ccag.bedrock.errors import UpstreamError
from ccag.bedrock.upstream import upstream_failure
from ccag.errors import ApiError, ConfigError, ProtocolError
from ccag.server.types import Request, Responder
from ccag.sse import SSEDecoder, encode_event
from ccag.websearch.assemble import MessageAssembler
from ccag.websearch.merge import ResponseMerger, SearchCall
from ccag.websearch.providers.base import SearchFailed, SearchQuery
from ccag.websearch.search import error_block, result_blocks, run_search
from ccag.websearch.settings import ProviderChoice, SearchSettings, search_settings
from ccag.websearch.tool import (
    MAX_QUERY_CHARS,
    SearchToolSpec,
    find_search_tool,
    has_search_history,
    relax_tool_choice,
    render_results,
    rewrite_request,
)

logger = logging.getLogger(__name__)

# Model calls one request may make. Each search round is one call; Claude
# Code allows eight searches, and a model rarely needs more than a few, so
# this only stops a model that never stops searching.
MAX_MODEL_CALLS = 12

# As in ccag.api.messages: a Bedrock error body is a short JSON document.
MAX_ERROR_BODY_BYTES = 64 * 1024

# What the model reads when a search did not run, by error code.
_ERROR_ADVICE = {
    "max_uses_exceeded": "No more searches are allowed in this turn; answer with what you have.",
    "invalid_tool_input": 'The search input must be {"query": "<text>"}.',
    "query_too_long": f"The query is too long; keep it under {MAX_QUERY_CHARS} characters.",
    "too_many_requests": "The search service is busy; answer without searching again.",
    "unavailable": "The search service is unavailable; answer without searching again.",
}


def needs_interception(body: dict[str, Any]) -> bool:
    """Whether a request takes the web search path.

    Raises:
        ApiError: 400 for a malformed web search tool.
    """
    return find_search_tool(body) is not None or has_search_history(body)


async def handle_web_search(
    services: Any,
    request: Request,
    responder: Responder,
    outcome: Outcome,
    body: dict[str, Any],
    model: ResolvedModel,
    beta_header: str | None,
    upstream: Any = None,
) -> None:
    """Answer a ``/v1/messages`` request that offers the web search tool.

    Every model call of the request goes to ``upstream`` (an
    :class:`~ccag.bedrock.upstream.Upstream`; ``services.upstream`` when not
    given), so that a failover loop can hand one endpoint to the whole
    exchange: the first call's errors are raised before anything is sent.

    Raises:
        ApiError: 400 when interception is off (globally or for this key's
            owner); any error of the first model call, before the response
            started.
    """
    spec = find_search_tool(body)
    try:
        settings = search_settings(services.config)
    except ConfigError as exc:
        raise ApiError(
            500, f"web search is misconfigured: {exc}", "api_error"
        ) from None
    choice: ProviderChoice | None = None
    if spec is not None:
        if not settings.enabled:
            raise ApiError(
                400,
                f"tools: {spec.tool_type} ({spec.name!r}) is Anthropic's server-side web search, "
                "which Bedrock does not run, and this gateway's web search interception is off; "
                "enable it with the web_search setting (CCAG_WEB_SEARCH=true, --web-search, or web_search = true in the config file)",
                "invalid_request_error",
            )
        choice = settings.choice_for(outcome.user, outcome.team)
        if choice is None:
            raise ApiError(
                400,
                f"tools: {spec.tool_type} ({spec.name!r}) is turned off for this key's user or "
                "team by the gateway's web_search_by_owner setting",
                "invalid_request_error",
            )

    working = rewrite_request(body, spec)
    working["stream"] = True
    run = _SearchRun(
        services,
        request,
        responder,
        outcome,
        model,
        beta_header,
        spec,
        choice,
        settings,
        upstream=upstream if upstream is not None else services.upstream,
        streaming=body.get("stream") is True,
    )
    await run.run(working)


class _SearchRun:
    """One intercepted request: its calls, searches and response."""

    def __init__(
        self,
        services: Any,
        request: Request,
        responder: Responder,
        outcome: Outcome,
        model: ResolvedModel,
        beta_header: str | None,
        spec: SearchToolSpec | None,
        choice: ProviderChoice | None,
        settings: SearchSettings,
        *,
        upstream: Any,
        streaming: bool,
    ) -> None:
        self.services = services
        self.request = request
        self.responder = responder
        self.outcome = outcome
        self.model = model
        self.beta_header = beta_header
        self.spec = spec
        self.choice = choice
        self.settings = settings
        self.upstream = upstream
        self.streaming = streaming
        self.merger = ResponseMerger(spec.name if spec is not None else "")
        self.assembled = MessageAssembler()
        self.uses = 0

    async def run(self, working: dict[str, Any]) -> None:
        for _ in range(MAX_MODEL_CALLS):
            self.merger.begin_call()
            if not await self._call_model(working):
                return
            summary = self.merger.end_call()
            if not summary.searches or summary.stop_reason != "tool_use":
                await self._finish(summary.stop_reason, summary.stop_sequence)
                return

            results = [await self._search(call) for call in summary.searches]
            if summary.client_tool_calls:
                # The client runs its own tools; the searches of this turn
                # are answered above, as Anthropic's API would.
                await self._finish(summary.stop_reason, summary.stop_sequence)
                return
            working = relax_tool_choice(
                {
                    **working,
                    "messages": [
                        *working["messages"],
                        {"role": "assistant", "content": summary.blocks},
                        {"role": "user", "content": results},
                    ],
                }
            )
        await self._finish("pause_turn")

    # -- one model call ------------------------------------------------------

    async def _call_model(self, working: dict[str, Any]) -> bool:
        """One Bedrock call relayed through the merger; False if it failed."""
        services = self.services
        upstream = self.upstream
        memory_key = upstream.capability_key(self.model.bedrock_id)
        translated = self._translate(working, memory_key)
        for attempt in range(2):
            try:
                async with upstream.invoke(translated) as response:
                    if response.status == 200:
                        return await self._relay(response)
                    raw = await response.read_all(MAX_ERROR_BODY_BYTES)
            except UpstreamError as exc:
                await self._fail(upstream_failure(exc))
                return False

            error = error_from_response(response.status, response.headers, raw)
            rejection = None
            if attempt == 0 and error.status == 400:
                rejection = parse_validation_rejection(error.message, translated)
            if rejection is None:
                await self._fail(error)
                return False
            services.remember_rejection(memory_key, rejection)
            self.outcome.retried_without.append(f"{rejection.kind}:{rejection.name}")
            translated = self._translate(working, memory_key)
        return False

    def _translate(self, working: dict[str, Any], memory_key: str) -> BedrockRequest:
        verdicts = self.services.verdicts(memory_key)
        return translate_messages(working, self.beta_header, self.model, verdicts)

    async def _relay(self, response: Any) -> bool:
        config = self.services.config
        observer = ResponseObserver()
        self.outcome.model_calls.append(observer)
        # An endpoint that streams in another format brings its own translator.
        make_translator = getattr(self.upstream, "stream_translator", None)
        if make_translator is not None:
            translator = make_translator(self.model.requested, observer)
        else:
            translator = BedrockStreamTranslator(self.model.requested, observer)
        decoder = SSEDecoder()
        silent_for = 0.0
        while True:
            with trio.move_on_after(config.ping_interval) as waiting:
                data = await response.receive_some()
            if waiting.cancelled_caught:
                silent_for += config.ping_interval
                if silent_for >= config.upstream_idle_timeout:
                    self.outcome.error_type = "timeout"
                    await self._fail(
                        ApiError(
                            504,
                            f"Bedrock sent nothing for {silent_for:.0f} seconds; the stream was ended",
                            "timeout_error",
                        )
                    )
                    return False
                if self.responder.is_started:
                    await self.responder.send_data(PING_EVENT)
                continue
            silent_for = 0.0

            if not data:
                error = translator.close()
                if error is not None:
                    self.outcome.error_type = "stream_error"
                    await self._fail(error)
                    return False
                return True

            chunk = translator.feed(data)
            events: list[dict[str, Any]] = []
            for sse in decoder.feed(chunk.sse):
                if sse.event != "error":
                    events.append(json.loads(sse.data))
            try:
                await self._emit(
                    [out for event in events for out in self.merger.feed(event)]
                )
            except ProtocolError:
                await self._fail(
                    ApiError(502, "Bedrock sent an inconsistent stream", "api_error")
                )
                return False
            if chunk.error is not None:
                await self._fail(chunk.error)
                return False
            if chunk.finished:
                # The client pools the connection once the body's end is read
                # (off this request's path: ccag.bedrock.drainer).
                response.reader_done = True
                return True

    # -- searches --------------------------------------------------------------

    async def _search(self, call: SearchCall) -> dict[str, Any]:
        """Run one search, send its result block; the tool_result for the model."""
        assert self.spec is not None and self.choice is not None
        spec = self.spec
        query = call.input.get("query") if isinstance(call.input, dict) else None
        content: Any
        if not isinstance(query, str) or not query.strip():
            content = error_block("invalid_tool_input")
        elif len(query) > MAX_QUERY_CHARS:
            content = error_block("query_too_long")
        elif spec.max_uses is not None and self.uses >= spec.max_uses:
            content = error_block("max_uses_exceeded")
        else:
            self.uses += 1
            content = await self._ask_provider(query, spec, self.choice)

        await self._emit(self.merger.result_events(call, content))
        # TODO: results reach the model as plain text, so its answer carries no
        # web_search_result_location citations; sending them as search_result
        # blocks and mapping the citations back would give cited answers.
        tool_result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": call.tool_use_id,
            "content": render_results(content),
        }
        if isinstance(content, dict):
            code = content["error_code"]
            tool_result["content"] += "\n" + _ERROR_ADVICE.get(code, "")
            tool_result["is_error"] = True
        return tool_result

    async def _ask_provider(
        self, query: str, spec: SearchToolSpec, choice: ProviderChoice
    ) -> Any:
        search_query = SearchQuery(
            text=query.strip(),
            max_results=self.settings.max_results,
            allowed_domains=spec.allowed_domains,
            blocked_domains=spec.blocked_domains,
            user_location=spec.user_location,
        )
        try:
            hits = await run_search(choice, search_query, timeout=self.settings.timeout)
        except SearchFailed as exc:
            logger.warning(
                "%s: web search through %s failed: %s",
                self.request.request_id,
                choice.name,
                exc,
            )
            return error_block(exc.error_code)
        self.merger.searches_run += 1
        self.outcome.web_searches = self.merger.searches_run
        self.services.telemetry.web_search()
        return result_blocks(hits)

    # -- the response ----------------------------------------------------------

    async def _emit(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        outcome = self.outcome
        pieces: list[bytes] = []
        for event in events:
            name = str(event["type"]).encode()
            outcome.observer.observe_event_object(name, event)
            if self.streaming:
                pieces.append(encode_event(name, dump_json(event)))
            else:
                self.assembled.apply(event)
        if outcome.first_content_at is None and outcome.observer.content_started:
            outcome.first_content_at = trio.current_time()
        if not self.streaming:
            return
        if not self.responder.is_started:
            await self.responder.start_response(
                200, [*SSE_HEADERS, *outcome.response_headers]
            )
            outcome.status = 200
        await self.responder.send_data(b"".join(pieces))

    async def _finish(
        self, stop_reason: str | None, stop_sequence: str | None = None
    ) -> None:
        await self._emit(self.merger.finish(stop_reason, stop_sequence))
        if self.streaming:
            await self.responder.end_response()
        else:
            message = self.assembled.message or {}
            await send_json_bytes(
                self.responder, 200, dump_json(message), self.outcome.response_headers
            )
            self.outcome.status = 200
        self.outcome.completed_at = trio.current_time()

    async def _fail(self, error: ApiError) -> None:
        """End with ``error``: an SSE error event if the stream began, else raise it."""
        outcome = self.outcome
        if outcome.error_type is None:
            outcome.error_type = (
                getattr(error, "metric_error_type", None) or "server_error"
            )
        self.services.count_upstream_error(outcome, error)
        if not self.responder.is_started:
            raise error
        outcome.status = error.status
        await self.responder.send_data(error.sse_event())
        await self.responder.end_response()
        outcome.completed_at = trio.current_time()
