"""The services one request uses, wired once at start and shared by routes.

Routes receive a :class:`Services` and nothing else: the key cache, the model
catalog, the capability memory, the upstream, telemetry and the places a
finished request is reported to (access log, spend).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ccag.anthropic.capabilities import CapabilityMemory
from ccag.anthropic.models import ModelCatalog
from ccag.api.outcome import Outcome
from ccag.api.silence import SilenceWatch
from ccag.bedrock.router import EndpointRouter
from ccag.config import Config
from ccag.errors import ApiError
from ccag.server.types import Request

access_log = logging.getLogger("ccag.access")

OutcomeSink = Callable[[Outcome], None]


@attrs.define
class Services:
    """Everything the routes need, built by :mod:`ccag.app`."""

    config: Config
    catalog: ModelCatalog
    capabilities: CapabilityMemory
    upstream: EndpointRouter
    keys: Any
    telemetry: Any
    geo_prefix: str
    sinks: list[OutcomeSink] = attrs.Factory(list)
    wall_clock: Callable[[], float] = time.time
    spend: Any = None  # ccag.spend.SpendSystem: rate limits, budgets, spend records
    # Pings and idle timeouts of every relayed stream; app.py runs its task.
    silence_watch: SilenceWatch = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.silence_watch = SilenceWatch(
            self.config.ping_interval, self.config.upstream_idle_timeout
        )

    def authenticate(self, request: Request) -> Any:
        """The key's principal, or the 401 that tells the client why not."""
        try:
            return self.keys.authenticate(request.headers, self.wall_clock())
        except ApiError as error:
            self.telemetry.auth_failure(getattr(error, "reason", "invalid_key"))
            raise

    def verdicts(self, key: str) -> Any:
        return self.capabilities.verdicts(key, self.wall_clock())

    def remember_rejection(self, key: str, rejection: Any) -> None:
        self.capabilities.remember(key, rejection.kind, rejection.name, self.wall_clock())

    def count_upstream_error(self, outcome: Outcome, error: ApiError) -> None:
        error_type = getattr(error, "metric_error_type", None) or "server_error"
        endpoint_id = outcome.endpoint_id or self.upstream.endpoint_id
        self.telemetry.upstream_error(error_type, endpoint_id)
        if error_type == "throttled":
            self.telemetry.throttle(outcome.model_label, endpoint_id)

    def finish(self, outcome: Outcome) -> None:
        """Report a finished request once: metrics, access log, spend."""
        ended_at = outcome.completed_at
        if ended_at is None:
            ended_at = trio.current_time()
        duration_ms = (ended_at - outcome.started_at) * 1000.0
        ttft_ms = None
        if outcome.first_content_at is not None:
            ttft_ms = (outcome.first_content_at - outcome.started_at) * 1000.0
        usage = outcome.observer.usage
        telemetry = self.telemetry
        telemetry.request_finished(
            outcome.model_label, outcome.streaming, outcome.status, duration_ms, ttft_ms
        )
        telemetry.usage(
            outcome.model_label,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        if outcome.observer.tool_calls:
            telemetry.tool_calls(outcome.observer.tool_calls)

        access_log.info(
            "%s POST /v1/messages %d model=%s stream=%s key=%s in=%d out=%d %.1fms",
            outcome.request_id,
            outcome.status,
            outcome.requested_model or "-",
            "true" if outcome.streaming else "false",
            outcome.key_name or "-",
            usage.input_tokens,
            usage.output_tokens,
            duration_ms,
        )
        for sink in self.sinks:
            sink(outcome)
