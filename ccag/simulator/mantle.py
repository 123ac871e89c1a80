"""The simulator's ``bedrock-mantle`` routes: Anthropic's Messages API.

``POST /anthropic/v1/messages`` takes Anthropic's own request (``model`` and
``stream`` in the body, ``anthropic-version`` and ``anthropic-beta`` as
headers), signed with SigV4 for the service ``bedrock-mantle`` or carrying a
Bedrock API key, and answers Anthropic's JSON or SSE. The body is checked
and the answer built by the same machinery as InvokeModel's, so scripted
scenarios work the same on both; errors come in Anthropic's envelope.

``POST /anthropic/v1/messages/count_tokens`` takes the same request cut to
the fields Anthropic's ``count_tokens`` takes and answers ``{"input_tokens":
N}`` with the estimate and limits of the simulator's own CountTokens;
scenarios scripted for ``count-tokens`` calls apply to it too.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ccag.anthropic.wirejson import dump_json
from ccag.bedrock import facts
from ccag.server.types import Request, Responder
from ccag.simulator.directives import default_scenario
from ccag.simulator.errors import BedrockError
from ccag.simulator.events import build_events, message_from_events
from ccag.simulator.scenarios import Fail, StreamException, answer_of
from ccag.simulator.sigv4 import verify_sigv4
from ccag.simulator.tokens import estimate_input_tokens
from ccag.simulator.validate import check_prompt_length, parse_invoke_body, prompt_limit

if TYPE_CHECKING:
    from ccag.simulator.handler import BedrockSimulator, ReceivedRequest

MANTLE_PATH = "/anthropic/v1/messages"
MANTLE_COUNT_TOKENS_PATH = facts.mantle_count_tokens_path()
MANTLE_SIGNING_NAME = "bedrock-mantle"
MANTLE_ANTHROPIC_VERSIONS = frozenset({"2023-06-01"})

# The kinds a received mantle request is recorded under.
MANTLE = "mantle"
MANTLE_COUNT_TOKENS = "mantle-count-tokens"
MANTLE_KINDS = frozenset({MANTLE, MANTLE_COUNT_TOKENS})
_KIND_BY_PATH = {MANTLE_PATH: MANTLE, MANTLE_COUNT_TOKENS_PATH: MANTLE_COUNT_TOKENS}

# The scenario queue's kinds (see BedrockSimulator.script), as handler.py names them.
_INVOKE, _STREAM, _COUNT_TOKENS = "invoke", "invoke-with-response-stream", "count-tokens"

# Anthropic's error type for an HTTP status, as the Messages API names them.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _envelope(status: int, message: str) -> bytes:
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    return json.dumps({"type": "error", "error": error}, separators=(",", ":")).encode()


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + dump_json(event) + b"\n\n"


def mantle_kind(method: str, path: str) -> str | None:
    """The mantle kind of a request (:data:`MANTLE_KINDS`), or None if it is none."""
    return _KIND_BY_PATH.get(path) if method == "POST" else None


async def serve_mantle(
    simulator: BedrockSimulator, request: Request, responder: Responder, record: ReceivedRequest
) -> None:
    """Answer one mantle call: Messages, or count_tokens by ``record.kind``."""
    try:
        sent = _checked_request(simulator, request)
        if record.kind == MANTLE_COUNT_TOKENS:
            await _count(simulator, request, responder, record, sent)
        else:
            await _answer(simulator, request, responder, record, sent)
    except BedrockError as error:
        record.status, record.error = error.status, error.name
        if responder.is_started:
            raise
        body = _envelope(error.status, error.message)
        await responder.start_response(
            error.status,
            [("content-type", "application/json"), ("content-length", str(len(body)))],
        )
        await responder.send_data(body)
        await responder.end_response()


def _checked_request(simulator: BedrockSimulator, request: Request) -> dict[str, Any]:
    """The request's JSON body, once authentication and headers pass.

    Raises:
        BedrockError: as mantle's front end refuses.
    """
    authorization = request.headers.get("authorization") or ""
    if authorization.startswith("Bearer "):
        if authorization[len("Bearer ") :] not in simulator.options.api_keys:
            raise BedrockError("AccessDeniedException", "Authentication failed.", status=403)
    elif simulator.options.verify_signatures:
        verify_sigv4(
            method=request.method,
            target=request.target,
            headers=request.headers,
            body=request.body,
            secrets=simulator.options.credentials,
            region=simulator.options.region,
            now=simulator.options.clock(),
            service=MANTLE_SIGNING_NAME,
        )
    if request.headers.get("anthropic-version") not in MANTLE_ANTHROPIC_VERSIONS:
        raise BedrockError("ValidationException", "anthropic-version: header required", status=400)
    try:
        sent = json.loads(request.body)
    except ValueError:
        raise BedrockError("ValidationException", "body: not JSON", status=400) from None
    if not isinstance(sent, dict) or not isinstance(sent.get("model"), str):
        raise BedrockError("ValidationException", "model: required", status=400)
    return sent


def _invoke_body(request: Request, sent: dict[str, Any]) -> dict[str, Any]:
    """The InvokeModel body a mantle body stands for (model and stream taken out)."""
    invoke_body = {"anthropic_version": "bedrock-2023-05-31", **sent}
    betas = request.headers.get("anthropic-beta")
    if betas:
        invoke_body["anthropic_beta"] = [beta.strip() for beta in betas.split(",") if beta.strip()]
    return invoke_body


async def _count(
    simulator: BedrockSimulator,
    request: Request,
    responder: Responder,
    record: ReceivedRequest,
    sent: dict[str, Any],
) -> None:
    # 1. The fields count_tokens takes, then the body as CountTokens checks it
    # (with the max_tokens an InvokeModel body needs and a count does not).
    extra = sorted(set(sent) - facts.mantle_count_tokens_fields())
    if extra:
        raise BedrockError("ValidationException", f"{extra[0]}: Extra inputs are not permitted", status=400)
    model_id = sent.pop("model")
    record.model_id = model_id
    invoke_body = _invoke_body(request, sent)
    invoke_body["max_tokens"] = _count_max_tokens(sent.get("thinking"))
    model = simulator._resolve(quote(model_id, safe=""), _INVOKE)
    body = parse_invoke_body(json.dumps(invoke_body).encode(), model, simulator._rules)
    input_tokens = estimate_input_tokens(body)
    check_prompt_length(input_tokens, prompt_limit(model, body, simulator._rules.checks, counting=True))

    # 2. A scripted failure, else the count.
    scenario = simulator._next_scenario(model_id, _COUNT_TOKENS)
    record.scenario = scenario
    if isinstance(scenario, Fail):
        raise BedrockError(scenario.name, scenario.message, scenario.status)
    record.status = 200
    whole = dump_json({"input_tokens": input_tokens})
    await responder.start_response(
        200, [("content-type", "application/json"), ("content-length", str(len(whole)))]
    )
    await responder.send_data(whole)
    await responder.end_response()


def _count_max_tokens(thinking: Any) -> int:
    # An enabled thinking budget must stay below max_tokens to be valid.
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if isinstance(budget, int) and not isinstance(budget, bool):
        return budget + 1
    return facts.count_tokens_default_max_tokens()


async def _answer(
    simulator: BedrockSimulator,
    request: Request,
    responder: Responder,
    record: ReceivedRequest,
    sent: dict[str, Any],
) -> None:
    # 1. The body as InvokeModel checks it.
    model_id = sent.pop("model")
    stream = sent.pop("stream", False) is True
    record.model_id = model_id
    invoke_body = _invoke_body(request, sent)
    kind = _STREAM if stream else _INVOKE
    model = simulator._resolve(quote(model_id, safe=""), kind)
    body = parse_invoke_body(json.dumps(invoke_body).encode(), model, simulator._rules)
    input_tokens = estimate_input_tokens(body)
    check_prompt_length(input_tokens, prompt_limit(model, body, simulator._rules.checks, counting=False))

    # 2. The scenario, then the answer.
    scenario = simulator._next_scenario(model_id, kind) or default_scenario(body)
    record.scenario = scenario
    if isinstance(scenario, Fail):
        raise BedrockError(scenario.name, scenario.message, scenario.status)
    answer = answer_of(scenario)
    assert answer is not None
    events = build_events(answer, simulator._reply_context(model, body, input_tokens))
    record.status = 200
    if not stream:
        whole = json.dumps(message_from_events(events), separators=(",", ":")).encode()
        await responder.start_response(
            200, [("content-type", "application/json"), ("content-length", str(len(whole)))]
        )
        await responder.send_data(whole)
        await responder.end_response()
        return

    await responder.start_response(200, [("content-type", "text/event-stream")])
    for index, event in enumerate(events):
        if isinstance(scenario, StreamException) and index == scenario.after_events:
            error = {"type": "error", "error": {"type": "api_error", "message": scenario.message}}
            await responder.send_data(_sse(error))
            break
        await responder.send_data(_sse(event))
    await responder.end_response()
