"""The simulator's request handler: Bedrock's routes, checks and answers.

One :class:`BedrockSimulator` serves, on one port:

* ``POST /model/{modelId}/invoke``, ``.../invoke-with-response-stream`` and
  ``.../count-tokens`` (bedrock-runtime), ``GET /inference-profiles`` (the
  control plane's ListInferenceProfiles);
* ``/_sim/...``, the control API for out-of-process users: ``POST
  /_sim/script`` queues scenarios (a JSON list, or ``{"scenarios": [...],
  "model": ..., "kind": ...}``), ``GET /_sim/requests`` lists what arrived,
  ``POST /_sim/reset`` forgets both, ``POST /_sim/search`` answers web
  searches with made-up results in ccag's custom provider protocol. It needs
  no signature.

A model call is checked in Bedrock's order: signature (or a Bedrock API key
as ``Authorization: Bearer``), model id, body. Then the first queued scenario
that matches the call runs, or the default one (:mod:`ccag.simulator.directives`).
Every request is recorded, refused or not, so tests can assert what the
gateway sent.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import attrs
import trio

from ccag.anthropic.wirejson import dump_json
from ccag.errors import AbortConnection
from ccag.server.types import Headers, Request, Responder
from ccag.simulator import catalog
from ccag.simulator.directives import default_scenario, default_text
from ccag.simulator.errors import BedrockError, exception_frame
from ccag.simulator.events import (
    ReplyContext,
    build_events,
    invocation_metrics,
    message_from_events,
)
from ccag.simulator.mantle import MANTLE_KINDS, mantle_kind, serve_mantle
from ccag.simulator.profiles import all_profiles, list_inference_profiles
from ccag.simulator.scenarios import (
    Answer,
    Fail,
    Garbage,
    Reset,
    Scenario,
    Stall,
    StreamException,
    Truncate,
    answer_of,
    scenario_from_json,
)
from ccag.simulator.sigv4 import verify_sigv4
from ccag.simulator.tokens import estimate_input_tokens, five_minute_tail_tokens
from ccag.simulator.validate import (
    BodyRules,
    check_prompt_length,
    parse_count_tokens_body,
    parse_invoke_body,
    prompt_limit,
    resolve_model_id,
)
from ccag.simulator.wire import chunk_frame, corrupt_crc, padding

logger = logging.getLogger(__name__)

DEFAULT_ACCESS_KEY = "AKIDSIMULATOR0000001"
DEFAULT_SECRET_KEY = "simulator-secret-access-key"
DEFAULT_REGION = "us-east-1"

INVOKE = "invoke"
STREAM = "invoke-with-response-stream"
COUNT_TOKENS = "count-tokens"
MODEL_KINDS = (INVOKE, STREAM, COUNT_TOKENS)

REPLY_ID_CHARS = 24
"""Hex characters after ``msg_bdrk_`` / ``toolu_bdrk_`` in the ids answers carry."""

GARBAGE_BYTES = 48
"""How much junk a :class:`Garbage` fault sends: more than a frame prelude."""


@attrs.frozen
class SimulatorOptions:
    """How a simulator behaves.

    Attributes:
        region: the region it stands in for (signatures must be scoped to it).
        credentials: access key id -> secret access key accepted in SigV4.
        api_keys: Bedrock API keys accepted as ``Authorization: Bearer``.
        verify_signatures: check SigV4 (off: any or no auth is accepted).
        models: the served models (default: every model of the facts file).
        betas: if given, every model accepts exactly these betas.
        reject_betas: betas no model accepts.
        reject_fields: optional body fields (``name``/``parent.child``) refused.
        all_in_region: bare model ids may be invoked on demand.
        anthropic_versions: accepted ``anthropic_version`` values.
        refuse_billing_header: refuse Claude Code's billing line in ``system``.
        application_profiles: application inference profile id or ARN ->
            foundation model id.
        seed: seed of the padding and id generator (for replayable runs).
        clock: the current UTC time, for signature freshness.
    """

    region: str = DEFAULT_REGION
    credentials: Mapping[str, str] = attrs.field(factory=lambda: {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY})
    api_keys: frozenset[str] = frozenset()
    verify_signatures: bool = True
    models: Mapping[str, catalog.SimModel] | None = None
    betas: frozenset[str] | None = None
    reject_betas: frozenset[str] = frozenset()
    reject_fields: frozenset[str] = frozenset()
    all_in_region: bool = False
    anthropic_versions: frozenset[str] = catalog.ANTHROPIC_VERSIONS
    refuse_billing_header: bool = True
    application_profiles: Mapping[str, str] = attrs.field(factory=dict)
    seed: int | None = None
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)


@attrs.define
class ReceivedRequest:
    """One request as the simulator received it, and how it answered.

    Attributes:
        method, target, path, query, headers: as received.
        kind: ``invoke``, ``invoke-with-response-stream``, ``count-tokens``,
            ``inference-profiles`` or ``other``.
        model_id: the path's model id, percent-decoded (None off the model routes).
        body: the parsed JSON body (for count-tokens: the wrapped InvokeModel
            body), or None when it is not JSON.
        raw_body: the body bytes.
        status: the response status, once decided.
        error: the Bedrock exception name of a refusal.
        scenario: the scenario that answered a model call.
    """

    method: str
    target: str
    path: str
    query: str
    headers: Headers
    kind: str
    model_id: str | None
    body: Any
    raw_body: bytes
    status: int | None = None
    error: str | None = None
    scenario: Scenario | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "target": self.target,
            "kind": self.kind,
            "model_id": self.model_id,
            "headers": [list(item) for item in self.headers.items],
            "body": self.body,
            "status": self.status,
            "error": self.error,
        }


@attrs.frozen
class _Scripted:
    scenario: Scenario
    model: str | None
    kind: str | None

    def matches(self, model_id: str, kind: str) -> bool:
        if self.model is not None and self.model != model_id:
            return False
        if self.kind is None:
            return kind in (INVOKE, STREAM)
        return self.kind == kind


def _try_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


class BedrockSimulator:
    """A Bedrock stand-in, as a :data:`ccag.server.types.Handler`.

    Args:
        options: behaviour; defaults are Bedrock's.
    """

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        self.requests: list[ReceivedRequest] = []
        self._queue: list[_Scripted] = []
        self._rng = random.Random(self.options.seed)
        base_models = self.options.models if self.options.models is not None else catalog.models_from_facts()
        self.models = catalog.narrowed(
            base_models,
            betas=self.options.betas,
            reject_betas=self.options.reject_betas,
            reject_fields=self.options.reject_fields,
            all_in_region=self.options.all_in_region,
        )
        self._geo_prefixes = catalog.all_geo_prefixes()
        self._rules = BodyRules(
            core_fields=catalog.core_fields(),
            anthropic_versions=self.options.anthropic_versions,
            refuse_billing_header=self.options.refuse_billing_header,
        )

    # -- The Python control API ---------------------------------------------

    def script(self, *scenarios: Scenario, model: str | None = None, kind: str | None = None) -> None:
        """Queue scenarios for the next matching model calls, first in first out.

        Args:
            scenarios: what the next calls do, in order.
            model: only calls whose path names this model id (as decoded).
            kind: only calls of this kind (``invoke``,
                ``invoke-with-response-stream``, ``count-tokens``); by default
                invoke and stream calls, not count-tokens.
        """
        if kind is not None and kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}")
        self._queue.extend(_Scripted(scenario, model, kind) for scenario in scenarios)

    @property
    def pending(self) -> list[Scenario]:
        """Scenarios queued and not yet used."""
        return [item.scenario for item in self._queue]

    def reset(self) -> None:
        """Forget queued scenarios and recorded requests."""
        self._queue.clear()
        self.requests.clear()

    def _next_scenario(self, model_id: str, kind: str) -> Scenario | None:
        for index, item in enumerate(self._queue):
            if item.matches(model_id, kind):
                del self._queue[index]
                return item.scenario
        return None

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _reply_context(
        self, model: catalog.SimModel, body: dict[str, Any], input_tokens: int | None = None
    ) -> ReplyContext:
        """The ids, token count and fallback text one answer to ``body`` uses.

        ``input_tokens`` is the body's estimate when the caller already has it.
        """
        return ReplyContext(
            message_id="msg_bdrk_" + self._short_id(),
            model_id=model.bedrock_id,
            input_tokens=estimate_input_tokens(body) if input_tokens is None else input_tokens,
            default_text=default_text(body),
            tool_id="toolu_bdrk_" + self._short_id(),
            five_minute_tail=five_minute_tail_tokens(body),
        )

    def _short_id(self) -> str:
        return self._new_id().replace("-", "")[:REPLY_ID_CHARS]

    # -- Dispatch -----------------------------------------------------------

    async def __call__(self, request: Request, responder: Responder) -> None:
        if request.path.startswith("/_sim/"):
            await self._control(request, responder)
            return

        kind, encoded_model = self._route(request)
        kind = mantle_kind(request.method, request.path) or kind
        record = ReceivedRequest(
            method=request.method,
            target=request.target,
            path=request.path,
            query=request.query,
            headers=request.headers,
            kind=kind,
            model_id=None,
            body=_try_json(request.body),
            raw_body=request.body,
        )
        self.requests.append(record)
        if len(self.requests) > MAX_RECORDED_REQUESTS:
            # A demo gateway left running must not keep every prompt forever.
            del self.requests[: len(self.requests) - MAX_RECORDED_REQUESTS]
        if kind in MANTLE_KINDS:
            await serve_mantle(self, request, responder, record)
            return
        request_id = self._new_id()
        try:
            if kind == "other":
                raise BedrockError("UnknownOperationException", "Unknown operation", status=404)
            self._authenticate(request)
            if kind == "inference-profiles":
                await self._list_profiles(request, responder, request_id, record)
            else:
                assert encoded_model is not None
                await self._model_call(request, responder, request_id, record, kind, encoded_model)
        except BedrockError as error:
            record.status, record.error = error.status, error.name
            if responder.is_started:
                raise
            await responder.start_response(error.status, error.response_headers(request_id))
            await responder.send_data(error.body())
            await responder.end_response()

    def _route(self, request: Request) -> tuple[str, str | None]:
        if request.method == "GET" and request.path == "/inference-profiles":
            return "inference-profiles", None
        if request.method == "POST" and request.path.startswith("/model/"):
            encoded_model, _, action = request.path[len("/model/") :].rpartition("/")
            if encoded_model and action in MODEL_KINDS:
                return action, encoded_model
        return "other", None

    def _authenticate(self, request: Request) -> None:
        authorization = request.headers.get("authorization") or ""
        if authorization.startswith("Bearer "):
            if authorization[len("Bearer ") :] not in self.options.api_keys:
                raise BedrockError("AccessDeniedException", "Authentication failed: Please make sure your API Key is valid.")
            return
        if not self.options.verify_signatures:
            return
        verify_sigv4(
            method=request.method,
            target=request.target,
            headers=request.headers,
            body=request.body,
            secrets=self.options.credentials,
            region=self.options.region,
            now=self.options.clock(),
        )

    async def _list_profiles(
        self, request: Request, responder: Responder, request_id: str, record: ReceivedRequest
    ) -> None:
        profiles = all_profiles(self.models.values(), self.options.region, self.options.application_profiles)
        page = list_inference_profiles(request.query, profiles)
        record.status = 200
        await _send_json(responder, 200, page, [("x-amzn-requestid", request_id)])

    # -- Model calls --------------------------------------------------------

    async def _model_call(
        self,
        request: Request,
        responder: Responder,
        request_id: str,
        record: ReceivedRequest,
        kind: str,
        encoded_model: str,
    ) -> None:
        # 1. The model, then the body, checked as Bedrock checks them.
        model = self._resolve(encoded_model, kind)
        record.model_id = resolve_model_name(encoded_model)
        if kind == COUNT_TOKENS:
            body = parse_count_tokens_body(request.body, model, self._rules)
            record.body = body
        else:
            body = parse_invoke_body(request.body, model, self._rules)
        input_tokens = estimate_input_tokens(body)
        check_prompt_length(input_tokens, prompt_limit(model, body, self._rules.checks, counting=kind == COUNT_TOKENS))

        # 2. The scenario: scripted, else decided by the conversation.
        scenario = self._next_scenario(record.model_id, kind)
        if scenario is None and kind != COUNT_TOKENS:
            scenario = default_scenario(body)
        record.scenario = scenario
        if isinstance(scenario, Fail):
            raise BedrockError(scenario.name, scenario.message, scenario.status)

        if kind == COUNT_TOKENS:
            record.status = 200
            count = {"inputTokens": input_tokens}
            await _send_json(responder, 200, count, [("x-amzn-requestid", request_id)])
            return

        # 3. The answer's events, delivered whole or spoiled by the fault.
        assert scenario is not None
        answer = answer_of(scenario)
        assert answer is not None
        events = build_events(answer, self._reply_context(model, body, input_tokens))
        record.status = 200
        if kind == STREAM:
            await self._stream(responder, request_id, scenario, answer, events)
        else:
            await self._answer_whole(responder, request_id, scenario, events)

    def _resolve(self, encoded_model: str, kind: str) -> catalog.SimModel:
        if kind == COUNT_TOKENS:
            # CountTokens takes the foundation model id, never a profile.
            name = resolve_model_name(encoded_model)
            if name.partition(".")[0] in self._geo_prefixes or ":inference-profile/" in name or (
                ":application-inference-profile/" in name
            ):
                raise BedrockError("ValidationException", "The provided model doesn't support counting tokens.")
            models = {key: attrs.evolve(model, in_region=True) for key, model in self.models.items()}
            return resolve_model_id(encoded_model, models, {}, self._geo_prefixes)
        return resolve_model_id(encoded_model, self.models, self.options.application_profiles, self._geo_prefixes)

    async def _answer_whole(
        self, responder: Responder, request_id: str, scenario: Scenario, events: list[dict[str, Any]]
    ) -> None:
        if isinstance(scenario, Stall):
            await trio.sleep(scenario.seconds)

        metrics = invocation_metrics(events)
        body = dump_json(message_from_events(events))
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("x-amzn-requestid", request_id),
            ("x-amzn-bedrock-invocation-latency", str(metrics["invocationLatency"])),
            ("x-amzn-bedrock-input-token-count", str(metrics["inputTokenCount"])),
            ("x-amzn-bedrock-output-token-count", str(metrics["outputTokenCount"])),
            ("x-amzn-bedrock-cache-read-input-token-count", str(metrics["cacheReadInputTokenCount"])),
            ("x-amzn-bedrock-cache-write-input-token-count", str(metrics["cacheWriteInputTokenCount"])),
        ]
        if isinstance(scenario, Reset):
            # after_events None is a reset before the head; any number, one
            # after a head and part of the body.
            await _reset(responder, body if scenario.after_events is not None else b"", headers)
        await responder.start_response(200, headers)
        await responder.send_data(body)
        await responder.end_response()

    async def _stream(
        self,
        responder: Responder,
        request_id: str,
        scenario: Scenario,
        answer: Answer,
        events: list[dict[str, Any]],
    ) -> None:
        # 1. Faults before the head.
        if isinstance(scenario, Stall) and scenario.after_events is None:
            await trio.sleep(scenario.seconds)
        if isinstance(scenario, Reset) and scenario.after_events is None:
            await _reset(responder, b"", [])

        # 2. The head, then one frame per event until a fault cuts in.
        await responder.start_response(
            200,
            [
                ("content-type", "application/vnd.amazon.eventstream"),
                ("x-amzn-bedrock-content-type", "application/json"),
                ("x-amzn-requestid", request_id),
            ],
        )
        cut = getattr(scenario, "after_events", None)
        for index, event in enumerate(events):
            if index == cut and await self._spoil(responder, scenario, event):
                return
            if index > 0 and answer.delay:
                await trio.sleep(answer.delay)
            await responder.send_data(chunk_frame(event, padding(self._rng)))
        await responder.end_response()

    async def _spoil(self, responder: Responder, scenario: Scenario, event: dict[str, Any]) -> bool:
        """Apply the fault due before ``event``; True when the stream is over."""
        if isinstance(scenario, Stall):
            await trio.sleep(scenario.seconds)
            return False
        if isinstance(scenario, StreamException):
            await responder.send_data(exception_frame(scenario.exception_type, scenario.message))
        elif isinstance(scenario, Truncate):
            if scenario.mid_frame:
                frame = chunk_frame(event, padding(self._rng))
                await responder.send_data(frame[: len(frame) // 2])
        elif isinstance(scenario, Garbage):
            if scenario.kind == "crc":
                await responder.send_data(corrupt_crc(chunk_frame(event, padding(self._rng))))
            else:
                await responder.send_data(self._rng.randbytes(GARBAGE_BYTES))
        elif isinstance(scenario, Reset):
            raise AbortConnection("scripted connection reset")
        await responder.end_response()
        return True

    # -- The HTTP control API -------------------------------------------------

    async def _control(self, request: Request, responder: Responder) -> None:
        if request.method == "GET" and request.path == "/_sim/requests":
            await _send_json(responder, 200, [record.to_json() for record in self.requests])
        elif request.method == "POST" and request.path == "/_sim/reset":
            self.reset()
            await _send_json(responder, 200, {"reset": True})
        elif request.method == "POST" and request.path == SEARCH_PATH:
            await _send_json(responder, 200, simulated_search(_try_json(request.body)))
        elif request.method == "POST" and request.path == "/_sim/script":
            try:
                queued = self._script_from_json(_try_json(request.body))
            except ValueError as exc:
                await _send_json(responder, 400, {"message": str(exc)})
                return
            await _send_json(responder, 200, {"queued": queued})
        else:
            await _send_json(responder, 404, {"message": "unknown simulator control route"})

    def _script_from_json(self, data: Any) -> int:
        if isinstance(data, list):
            data = {"scenarios": data}
        if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
            # A wrongly shaped JSON document is a bad value to callers, not a type bug.
            raise ValueError('expected a list of scenarios or {"scenarios": [...], "model": ..., "kind": ...}')  # noqa: TRY004
        scenarios = [scenario_from_json(item) for item in data["scenarios"]]
        model, kind = data.get("model"), data.get("kind")
        if model is not None and not isinstance(model, str):
            raise ValueError("model must be a string")
        if kind is not None and kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}")
        self.script(*scenarios, model=model, kind=kind)
        return len(scenarios)


# Requests kept for tests and GET /_sim/requests; older ones are forgotten.
MAX_RECORDED_REQUESTS = 1000

# A stand-in search service in ccag's "custom" provider protocol, so that web
# search works in simulator mode without a query leaving the machine.
SEARCH_PATH = "/_sim/search"
SIMULATED_RESULTS = 3


def simulated_search(request: Any) -> dict[str, Any]:
    """Deterministic results for a query (ccag.websearch.providers.custom)."""
    query = request.get("query") if isinstance(request, dict) else None
    query = query if isinstance(query, str) else ""
    slug = "-".join(query.lower().split())[:60] or "empty"
    return {
        "results": [
            {
                "url": f"https://example.com/simulated/{slug}/{rank}",
                "title": f"Simulated result {rank} for {query[:100]}",
                "snippet": f"A simulated search result about {query[:100]} (simulator mode).",
                "page_age": "2026-01-01",
            }
            for rank in range(1, SIMULATED_RESULTS + 1)
        ]
    }


def resolve_model_name(encoded_model: str) -> str:
    """The model id of a path segment, percent-decoded."""
    return unquote(encoded_model)


async def _send_json(
    responder: Responder, status: int, document: Any, headers: list[tuple[str, str]] | None = None
) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()
    await responder.start_response(
        status,
        [("content-type", "application/json"), ("content-length", str(len(body))), *(headers or [])],
    )
    await responder.send_data(body)
    await responder.end_response()


async def _reset(responder: Responder, body: bytes, headers: list[tuple[str, str]]) -> None:
    """Drop the connection with a TCP reset (AbortConnection).

    With no ``body`` and no response started, nothing was sent before it.
    Otherwise a head promising more body than comes goes first, and part of
    the body.
    """
    if not responder.is_started and not body:
        # Before any response: the connection is reset with nothing sent.
        raise AbortConnection("scripted connection reset before the response")
    if not responder.is_started:
        promised = [(name, value) for name, value in headers if name != "content-length"]
        await responder.start_response(200, promised + [("content-length", str(len(body) + 1024))])
        await responder.send_data(body[: len(body) // 2])
    raise AbortConnection("scripted connection reset")


__all__ = [
    "BedrockSimulator",
    "ReceivedRequest",
    "SimulatorOptions",
]
