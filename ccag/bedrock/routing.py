"""Which endpoint a request goes to: eligibility, strategies and health.

Theory of operation. For each request the router takes the team's endpoints
(all endpoints when the team has no set), drops those in another geography
unless the operator allows crossing, and orders the rest by the team's
strategy:

* ``priority``: lowest priority number first, the others as fallbacks;
* ``round_robin``: smooth weighted round robin picks the first, the others
  follow by priority;
* ``sticky``: rendezvous hashing of the user id over the endpoints, so a
  user keeps one endpoint (and its Bedrock prompt cache) while it is healthy
  and only that user's share moves when it is not.

The failover loop then walks that order, skipping endpoints whose health for
the model is cooling down. Health is kept per (endpoint, model): a throttle,
a 5xx or a connection failure starts a cool-down that doubles with each
consecutive failure up to a ceiling; when it ends the endpoint is eligible
again and the next real request is the probe (there is no background probe:
a probe costs a model call). A success resets the count.

Pure: every method takes ``now`` from the caller.
"""

from __future__ import annotations

import collections
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import attrs

from ccag.bedrock.endpoints import PRIORITY, ROUND_ROBIN, STICKY, EndpointSpec

# The first cool-down after a failure: long enough to let a throttled
# account's token bucket refill a little, short enough to recover quickly.
COOLDOWN_BASE_SECONDS = 2.0

# The longest cool-down: an endpoint that keeps failing is still retried
# about once a minute so that its recovery is noticed.
COOLDOWN_MAX_SECONDS = 60.0

# How far back "recent" error and throttle counts look.
RECENT_WINDOW_SECONDS = 300.0

# Recent events kept per (endpoint, model); older ones are counted out anyway
# and the bound stops an outage from growing memory.
MAX_RECENT_EVENTS = 1000

# Weight of the newest sample in the time-to-first-byte average: about the
# last ten requests matter.
EWMA_ALPHA = 0.2

# (endpoint, model) states kept; past this the least recently used goes, so
# a client cycling model names cannot grow memory.
MAX_HEALTH_STATES = 4096

HEALTHY = "healthy"
COOLING = "cooling"


@attrs.define
class ModelHealth:
    """The health of one (endpoint, model)."""

    consecutive_failures: int = 0
    cooled_until: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    successes: int = 0
    failures: int = 0
    throttles: int = 0
    ttfb_ewma: float | None = None
    recent_errors: collections.deque[float] = attrs.Factory(
        lambda: collections.deque(maxlen=MAX_RECENT_EVENTS)
    )
    recent_throttles: collections.deque[float] = attrs.Factory(
        lambda: collections.deque(maxlen=MAX_RECENT_EVENTS)
    )
    last_used: float = 0.0


def _recent(events: collections.deque[float], now: float) -> int:
    while events and events[0] < now - RECENT_WINDOW_SECONDS:
        events.popleft()
    return len(events)


class HealthBoard:
    """Health per (endpoint id, model), with cool-downs and latency.

    Args:
        base_cooldown: seconds of the first cool-down.
        max_cooldown: the ceiling the doubling stops at.
    """

    def __init__(
        self,
        base_cooldown: float = COOLDOWN_BASE_SECONDS,
        max_cooldown: float = COOLDOWN_MAX_SECONDS,
    ) -> None:
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self._states: dict[tuple[str, str], ModelHealth] = {}

    def _state(self, endpoint_id: str, model: str, now: float) -> ModelHealth:
        key = (endpoint_id, model)
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= MAX_HEALTH_STATES:
                oldest = min(self._states, key=lambda k: self._states[k].last_used)
                del self._states[oldest]
            state = self._states[key] = ModelHealth()
        state.last_used = now
        return state

    def cooling_left(self, endpoint_id: str, model: str, now: float) -> float:
        """Seconds until the endpoint may be tried for ``model``; 0 if now."""
        state = self._states.get((endpoint_id, model))
        if state is None:
            return 0.0
        return max(0.0, state.cooled_until - now)

    def is_healthy(self, endpoint_id: str, model: str, now: float) -> bool:
        return self.cooling_left(endpoint_id, model, now) == 0.0

    def record_success(self, endpoint_id: str, model: str, ttfb: float, now: float) -> None:
        """A response head arrived with 2xx after ``ttfb`` seconds."""
        state = self._state(endpoint_id, model, now)
        state.consecutive_failures = 0
        state.cooled_until = 0.0
        state.successes += 1
        if state.ttfb_ewma is None:
            state.ttfb_ewma = ttfb
        else:
            state.ttfb_ewma += EWMA_ALPHA * (ttfb - state.ttfb_ewma)

    def record_failure(self, endpoint_id: str, model: str, error_type: str, now: float) -> float:
        """A throttle, 5xx or connection failure; returns the cool-down set."""
        state = self._state(endpoint_id, model, now)
        state.consecutive_failures += 1
        state.failures += 1
        state.last_error = error_type
        state.last_error_at = now
        state.recent_errors.append(now)
        if error_type == "throttled":
            state.throttles += 1
            state.recent_throttles.append(now)
        exponent = min(state.consecutive_failures - 1, 30)
        cooldown = min(self.max_cooldown, self.base_cooldown * 2.0**exponent)
        state.cooled_until = now + cooldown
        return cooldown

    def snapshot(self, now: float) -> dict[str, dict[str, dict[str, Any]]]:
        """endpoint id -> model -> state, for the admin view."""
        view: dict[str, dict[str, dict[str, Any]]] = {}
        for (endpoint_id, model), state in sorted(self._states.items()):
            left = max(0.0, state.cooled_until - now)
            view.setdefault(endpoint_id, {})[model] = {
                "state": COOLING if left > 0 else HEALTHY,
                "cooling_seconds_left": round(left, 3),
                "consecutive_failures": state.consecutive_failures,
                "last_error": state.last_error,
                "last_error_seconds_ago": (
                    None if state.last_error_at is None else round(now - state.last_error_at, 3)
                ),
                "successes": state.successes,
                "errors": state.failures,
                "throttles": state.throttles,
                "recent_errors": _recent(state.recent_errors, now),
                "recent_throttles": _recent(state.recent_throttles, now),
                "ttfb_ewma_ms": None if state.ttfb_ewma is None else round(state.ttfb_ewma * 1000, 1),
            }
        return view


# -- eligibility ------------------------------------------------------------


@attrs.frozen
class Candidates:
    """The endpoints a request may use, and why the others may not."""

    endpoints: tuple[EndpointSpec, ...]
    refused: tuple[tuple[str, str], ...]


def eligible(
    endpoints: Sequence[EndpointSpec],
    *,
    allowed_ids: Sequence[str],
    geography: str,
    allow_cross_geography: bool,
) -> Candidates:
    """The endpoints a team may use for its geography.

    Args:
        endpoints: every configured endpoint.
        allowed_ids: the team's endpoint ids; empty for all.
        geography: where the team's data must stay.
        allow_cross_geography: ignore ``geography``.
    """
    chosen: list[EndpointSpec] = []
    refused: list[tuple[str, str]] = []
    for endpoint in endpoints:
        if allowed_ids and endpoint.id not in allowed_ids:
            continue
        if not allow_cross_geography and endpoint.geography != geography:
            reason = (
                f"in geography {endpoint.geography!r}, not {geography!r}, "
                "and cross-geography routing is off"
            )
            refused.append((endpoint.id, reason))
            continue
        chosen.append(endpoint)
    return Candidates(tuple(chosen), tuple(refused))


# -- strategies -------------------------------------------------------------


def by_priority(endpoints: Sequence[EndpointSpec]) -> list[EndpointSpec]:
    return sorted(endpoints, key=lambda e: (e.priority, e.id))


def rendezvous_order(endpoints: Sequence[EndpointSpec], user: str) -> list[EndpointSpec]:
    """Endpoints by weighted rendezvous score for ``user``, best first.

    Each endpoint scores ``-weight / ln(u)`` with ``u`` a uniform draw from a
    hash of (user, endpoint): removing one endpoint only moves the users it
    held, and weights bias the shares.
    """

    def score(endpoint: EndpointSpec) -> float:
        digest = hashlib.sha256(f"{user}\x00{endpoint.id}".encode()).digest()
        uniform = (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64
        return -endpoint.weight / math.log(uniform)

    return sorted(endpoints, key=lambda e: (-score(e), e.id))


class RoundRobin:
    """Smooth weighted round robin, one rotation per set of endpoints.

    Every pick adds each endpoint's weight to its counter, picks the largest
    and subtracts the total from it: picks interleave in proportion to the
    weights instead of coming in bursts.
    """

    def __init__(self) -> None:
        self._counters: dict[tuple[str, ...], dict[str, int]] = {}

    def order(self, endpoints: Sequence[EndpointSpec]) -> list[EndpointSpec]:
        if not endpoints:
            return []
        key = tuple(sorted(e.id for e in endpoints))
        counters = self._counters.setdefault(key, {e.id: 0 for e in endpoints})
        total = 0
        for endpoint in endpoints:
            counters[endpoint.id] += endpoint.weight
            total += endpoint.weight
        picked = max(endpoints, key=lambda e: (counters[e.id], -e.priority, e.id))
        counters[picked.id] -= total
        return [picked, *(e for e in by_priority(endpoints) if e.id != picked.id)]


def order_for(
    strategy: str,
    endpoints: Sequence[EndpointSpec],
    *,
    user: str | None,
    round_robin: RoundRobin,
) -> list[EndpointSpec]:
    """Endpoints in the order the strategy tries them."""
    if strategy == ROUND_ROBIN:
        return round_robin.order(endpoints)
    if strategy == STICKY and user:
        return rendezvous_order(endpoints, user)
    assert strategy in (PRIORITY, STICKY)
    return by_priority(endpoints)
