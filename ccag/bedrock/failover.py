"""The failover loop: one request, tried on endpoint after endpoint.

The messages route hands over an ``attempt(upstream, model)`` that resolves,
translates, signs and sends the request to one endpoint and relays the
answer. This loop walks the router's plan: for each endpoint it resolves the
model under that endpoint's prefix (an endpoint that does not offer the
model is skipped, not tried), runs the attempt, and moves on only when the
attempt failed BEFORE anything reached the client with a throttle, a 5xx or
a connection failure. A validation error, any other client error, and
anything after the response head go to the client as they are. Each
endpoint is tried at most once per request, at most :data:`MAX_ATTEMPTS`
times in all, and no new attempt starts after :data:`FAILOVER_BUDGET_SECONDS`.

When nothing could be tried, or everything tried failed while endpoints of
other geographies were held back, the client gets a 503 that names every
endpoint's fate; otherwise the last endpoint's own error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ccag.anthropic.errors import UpstreamApiError
from ccag.anthropic.models import ResolvedModel
from ccag.bedrock.router import EndpointRouter
from ccag.errors import ApiError

logger = logging.getLogger(__name__)

# Endpoints tried for one request: enough to get past one throttled and one
# broken endpoint, few enough that a client is not kept waiting for long.
MAX_ATTEMPTS = 3

# No attempt starts this long after the first began: past this the client
# is better served by an error it can retry than by a longer wait.
FAILOVER_BUDGET_SECONDS = 60.0

# The metric labels of failures that move a request to the next endpoint.
FAILOVER_ERROR_TYPES = frozenset(
    {"throttled", "server_error", "connect_error", "timeout", "model_not_ready", "stream_error",
     "bad_response"}
)

Attempt = Callable[[Any, ResolvedModel], Awaitable[None]]


def should_fail_over(error: ApiError) -> bool:
    """A failure of the endpoint rather than of the request."""
    if not isinstance(error, UpstreamApiError):
        return False
    if error.status == 429 or error.status >= 500:
        return True
    return error.metric_error_type in FAILOVER_ERROR_TYPES and error.status != 400


def no_endpoint_error(reasons: list[str], retry_after: float | None) -> ApiError:
    """The 503 of a request no endpoint may (or could) serve."""
    headers = []
    if retry_after is not None:
        headers.append(("retry-after", str(max(1, math.ceil(retry_after)))))
    return ApiError(
        503,
        "no Bedrock endpoint could serve this request: " + "; ".join(reasons),
        "api_error",
        headers,
    )


async def run_with_failover(
    router: EndpointRouter,
    *,
    team: str | None,
    user: str | None,
    model_name: str,
    attempt: Attempt,
    response_started: Callable[[], bool],
) -> None:
    """Run ``attempt`` on the planned endpoints until one serves the request.

    Raises:
        ApiError: the request's own error, the last endpoint's error, the
            model's 404, or a 503 naming why no endpoint could serve it.
    """
    started = trio.current_time()
    plan = router.plan(team, user, model_name, started)
    reasons = [f"{endpoint_id}: {why}" for endpoint_id, why in plan.refused]
    tried: set[str] = set()
    last_error: ApiError | None = None
    not_offered: ApiError | None = None

    for spec in plan.order:
        if len(tried) >= MAX_ATTEMPTS or trio.current_time() - started > FAILOVER_BUDGET_SECONDS:
            reasons.append(f"{spec.id}: not tried (failover limit reached)")
            continue
        if spec.id in tried:
            continue
        try:
            model = await router.resolve(spec.id, model_name)
        except ApiError as error:
            if error.status not in (400, 404):
                raise
            not_offered = not_offered or error
            reasons.append(f"{spec.id}: {error.message}")
            continue

        tried.add(spec.id)
        upstream = router.attempt_upstream(spec.id, plan.model_key)
        try:
            await attempt(upstream, model)
            return
        except ApiError as error:
            if response_started() or not should_fail_over(error):
                raise
            last_error = error
            reasons.append(f"{spec.id}: {error.status} {getattr(error, 'metric_error_type', '')}".rstrip())
            detail = getattr(error, "detail", None)
            logger.warning(
                "endpoint %s failed for %s (%d %s)%s",
                spec.id, model_name[:80], error.status, getattr(error, "metric_error_type", ""),
                f": {detail}" if detail else "",
            )

    if last_error is not None and not plan.refused:
        raise last_error
    if last_error is None and not_offered is not None:
        raise not_offered
    if not plan.order and not plan.refused:
        reasons.append("the team has no endpoints")
    retry_after = min(plan.cooling.values()) if plan.cooling else None
    raise no_endpoint_error(reasons, retry_after)
