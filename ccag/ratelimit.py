"""Requests and tokens per minute, per key and per team, in memory.

Theory of operation: every limited subject (a key, a team, a throttled
budget) has a sliding window of the last :data:`WINDOW_SECONDS`. The request
window is a log of admission times, so it never holds more entries than its
limit; a request is admitted while fewer than ``limit`` admissions lie inside
the window, and a refused one may retry when the oldest of them leaves it.
The token window is a log of (finish time, tokens) of finished requests: a
new request is refused while the tokens inside the window reach the limit,
and may retry when enough of them have left for the total to fall below it.
A request's tokens are only known when it ends, so one request may overshoot
the token limit; the next ones then wait.

A limit of ``None`` means unlimited; ``0`` refuses every request (and says
so) rather than dividing by it anywhere.

Several gateways on one store do not share windows: each enforces its share,
``ceil(limit / instances)`` (the ``gateway_instances`` setting), so the whole
fleet admits at most about the limit when traffic is spread evenly, and a
single busy gateway admits only its share.

Pure: times come in as arguments (monotonic seconds); no trio, no clock.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping

import attrs

# The window the per-minute limits count over.
WINDOW_SECONDS = 60.0

# Retry-After never says 0: a client told "0" retries at once and is refused
# again when the window edge is a fraction of a second away.
MIN_RETRY_AFTER_SECONDS = 1


@attrs.frozen
class Limits:
    """Requests and tokens per minute; ``None`` is unlimited."""

    rpm: int | None = None
    tpm: int | None = None

    def share(self, instances: int) -> Limits:
        """This gateway's share when ``instances`` gateways enforce the limit."""
        if instances <= 1:
            return self
        return Limits(_share(self.rpm, instances), _share(self.tpm, instances))


def _share(limit: int | None, instances: int) -> int | None:
    if limit is None:
        return None
    return math.ceil(limit / instances)


UNLIMITED = Limits()


@attrs.frozen
class Refusal:
    """Why a request may not go now, and when it may.

    Attributes:
        subject: what is limited, such as ``key 'ci'`` or ``team 'web'``.
        unit: ``requests`` or ``tokens``.
        limit: the per-minute limit that refused it.
        retry_after: whole seconds until the window admits the request.
    """

    subject: str
    unit: str
    limit: int
    retry_after: int

    @property
    def message(self) -> str:
        if self.limit == 0:
            return f"rate limit: {self.subject} may send no requests (its {self.unit} per minute limit is 0)"
        return (
            f"rate limit: {self.subject} is over its {self.limit} {self.unit} per minute; "
            f"retry in {self.retry_after} s"
        )


def whole_seconds(delay: float) -> int:
    """A delay as Retry-After seconds: rounded up, never below the minimum."""
    return max(MIN_RETRY_AFTER_SECONDS, math.ceil(delay - 1e-9))


class RequestWindow:
    """Admission times of the last minute, at most ``limit`` of them."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def _expire(self, now: float) -> None:
        times = self._times
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()

    def wait(self, limit: int, now: float) -> float | None:
        """Seconds until one more request fits, or None if it fits now."""
        if limit <= 0:
            return WINDOW_SECONDS
        self._expire(now)
        times = self._times
        if len(times) < limit:
            return None
        # The window holds ``limit`` or more (after a lowered limit): the
        # request fits when all but ``limit - 1`` of them have left.
        # min(): a time admitted at ``now`` gives 60 plus a rounding error.
        return min(WINDOW_SECONDS, times[len(times) - limit] + WINDOW_SECONDS - now)

    def admit(self, now: float) -> None:
        self._times.append(now)

    def is_idle(self, now: float) -> bool:
        self._expire(now)
        return not self._times


class TokenWindow:
    """Tokens of the requests that finished in the last minute."""

    def __init__(self) -> None:
        self._entries: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0][0] <= now - WINDOW_SECONDS:
            self._total -= entries.popleft()[1]

    def wait(self, limit: int, now: float) -> float | None:
        """Seconds until the total falls below ``limit``, or None if it is."""
        if limit <= 0:
            return WINDOW_SECONDS
        self._expire(now)
        if self._total < limit:
            return None
        remaining = self._total
        for finished_at, tokens in self._entries:
            remaining -= tokens
            if remaining < limit:
                return min(WINDOW_SECONDS, finished_at + WINDOW_SECONDS - now)
        return WINDOW_SECONDS  # unreachable: the total drops to 0

    def add(self, tokens: int, now: float) -> None:
        if tokens > 0:
            self._entries.append((now, tokens))
            self._total += tokens

    def is_idle(self, now: float) -> bool:
        self._expire(now)
        return not self._entries


@attrs.define
class _Subject:
    requests: RequestWindow = attrs.Factory(RequestWindow)
    tokens: TokenWindow = attrs.Factory(TokenWindow)


# A gateway with many keys keeps a window for each active one; idle windows
# are dropped this often so keys that stopped sending cost no memory.
SWEEP_EVERY_CHECKS = 10_000


class RateLimiter:
    """Per-key and per-team windows with defaults and overrides.

    Args:
        key_default: limits of a key without an override.
        team_default: limits of a team without an override.
        instances: gateways sharing the limits (see the module docstring).
    """

    def __init__(
        self,
        key_default: Limits = Limits(),
        team_default: Limits = Limits(),
        instances: int = 1,
    ) -> None:
        self.key_default = key_default
        self.team_default = team_default
        self.instances = max(1, instances)
        self._overrides: Mapping[tuple[str, str], Limits] = {}
        self._subjects: dict[tuple[str, str], _Subject] = {}
        self._checks = 0

    def set_overrides(self, overrides: Mapping[tuple[str, str], Limits]) -> None:
        """Replace the overrides: ``("key", key_id)`` or ``("team", name)``."""
        self._overrides = dict(overrides)

    def limits_for(self, scope: str, name: str) -> Limits:
        """The limits this gateway enforces for one key or team."""
        default = self.key_default if scope == "key" else self.team_default
        return self._overrides.get((scope, name), default).share(self.instances)

    def check(
        self,
        key_id: str | None,
        key_name: str | None,
        team: str | None,
        now: float,
        extra_rpm: Mapping[str, tuple[str, int]] | None = None,
    ) -> Refusal | None:
        """Admit one request (and count it), or say why not.

        Args:
            key_id: the key's id (its limits and window).
            key_name: the key's name, for messages.
            team: the key's team, if any.
            now: monotonic seconds.
            extra_rpm: further request limits by window id, each with the
                subject for messages (a throttled budget's lower limit).

        Returns:
            None when admitted; otherwise the refusal with the longest wait
            (the request fits only when every window admits it).
        """
        self._checks += 1
        if self._checks % SWEEP_EVERY_CHECKS == 0:
            self._sweep(now)

        # Subjects for messages are (scope, name) until a refusal needs words.
        checks: list[tuple[tuple[str, str], tuple[str, str], Limits]] = []
        if key_id is not None:
            limits = self.limits_for("key", key_id)
            if limits != UNLIMITED:
                checks.append((("key", key_id), ("key", key_name or key_id), limits))
        if team is not None:
            limits = self.limits_for("team", team)
            if limits != UNLIMITED:
                checks.append((("team", team), ("team", team), limits))
        for window_id, (extra_subject, rpm) in (extra_rpm or {}).items():
            checks.append((("extra", window_id), ("", extra_subject), Limits(rpm=rpm)))
        if not checks:
            return None

        worst: Refusal | None = None
        admitted: list[_Subject] = []
        for window_key, subject, limits in checks:
            if limits.rpm is None and limits.tpm is None:
                continue
            state = self._subjects.get(window_key)
            if state is None:
                state = self._subjects[window_key] = _Subject()
            for unit, limit, window in (
                ("requests", limits.rpm, state.requests),
                ("tokens", limits.tpm, state.tokens),
            ):
                if limit is None:
                    continue
                wait = window.wait(limit, now)
                if wait is not None:
                    scope, name = subject
                    words = f"{scope} {name!r}" if scope else name
                    refusal = Refusal(words, unit, limit, whole_seconds(wait))
                    if worst is None or refusal.retry_after > worst.retry_after:
                        worst = refusal
            if limits.rpm is not None:
                admitted.append(state)

        if worst is not None:
            return worst
        for state in admitted:
            state.requests.admit(now)
        return None

    def record_tokens(
        self, key_id: str | None, team: str | None, tokens: int, now: float
    ) -> None:
        """Count a finished request's tokens against its key and team."""
        subjects = [("key", key_id), ("team", team)]
        for scope, name in subjects:
            if name is None or self.limits_for(scope, name).tpm is None:
                continue
            state = self._subjects.get((scope, name))
            if state is None:
                state = self._subjects[(scope, name)] = _Subject()
            state.tokens.add(tokens, now)

    def _sweep(self, now: float) -> None:
        idle = [
            key
            for key, state in self._subjects.items()
            if state.requests.is_idle(now) and state.tokens.is_idle(now)
        ]
        for key in idle:
            del self._subjects[key]
