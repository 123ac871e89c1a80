"""Budgets: dollars per user or team per day, week or month, and their policy.

Theory of operation: the budgets and what each has spent in its current
period live in memory, so checking a request is a few dict lookups. Totals
are rebuilt from the store at start and every refresh (which also brings in
what other gateways on the same store recorded), and this gateway's own
records are added as they are made, so a gateway sees its own spending at
once and the others' within one refresh interval.

Periods are calendar periods in UTC: a day from midnight, a week from
Monday midnight, a month from the first. A new period starts from zero
without any reset job: totals are kept per (budget, period start).

Policies:
- ``notify``: log and send a webhook when spending crosses each threshold
  (by default 80% and 100%), once per budget and period;
- ``throttle``: as notify, and above ``throttle_at`` (a fraction of the limit,
  default 1.0) the user or team gets at most ``throttle_rpm`` requests a
  minute;
- ``block``: as notify, and at 100% requests are refused with 429 naming the
  budget and when it resets.
"""

from __future__ import annotations

import calendar
import datetime
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ccag.auth.keys import format_time
from ccag.errors import ApiError
from ccag.store import Connection

logger = logging.getLogger(__name__)

PERIODS = ("daily", "weekly", "monthly")
POLICIES = ("notify", "throttle", "block")
SCOPES = ("user", "team")
DEFAULT_THRESHOLDS = (0.8, 1.0)

REMAINING_HEADER = "x-ccag-budget-remaining-usd"
RESETS_AT_HEADER = "x-ccag-budget-resets-at"
LIMIT_HEADER = "x-ccag-budget-limit-usd"
BUDGET_HEADER = "x-ccag-budget"


def rfc3339(timestamp: float) -> str:
    """Unix seconds as RFC 3339 UTC (four-digit year; never fails)."""
    return format_time(timestamp)


# Header amounts: exact to a nano-dollar, far below any single call's cost
# (float sums carry noise past that). Always this many places, so every amount
# in the headers has one format and a client never mistakes a rounded figure
# for an exact one.
EXACT_USD_DECIMALS = 9
# Amounts below $1 shown to people keep this many significant digits, so a
# $0.0001 budget does not read "$0.00".
SIGNIFICANT_USD_DIGITS = 4


def _at_least_cents(text: str) -> str:
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def format_usd(amount: float) -> str:
    """Dollars for people (messages, logs): cents from $1 up, else
    :data:`SIGNIFICANT_USD_DIGITS` significant digits (``0.0001``)."""
    if amount == 0 or abs(amount) >= 1 or not math.isfinite(amount):
        return f"{amount:.2f}"
    decimals = SIGNIFICANT_USD_DIGITS - 1 - math.floor(math.log10(abs(amount)))
    return _at_least_cents(f"{amount:.{decimals}f}")


def exact_usd(amount: float) -> str:
    """Dollars for machines (headers): a plain decimal with exactly
    :data:`EXACT_USD_DECIMALS` places (``500.000000000``, ``499.999877000``)."""
    # Adding 0.0 turns a negative zero into "0.000000000", not "-0.000000000".
    return f"{amount + 0.0:.{EXACT_USD_DECIMALS}f}"


def period_bounds(period: str, at: float) -> tuple[float, float]:
    """The UTC calendar period holding ``at``: (start, end) in Unix seconds."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start = day
        end = start + datetime.timedelta(days=1)
    elif period == "weekly":
        start = day - datetime.timedelta(days=day.weekday())
        end = start + datetime.timedelta(days=7)
    elif period == "monthly":
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + datetime.timedelta(days=days)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return start.timestamp(), end.timestamp()


@attrs.frozen
class Budget:
    """One budget as the admin set it."""

    id: str
    scope: str
    name: str
    period: str
    limit_usd: float
    policy: str
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    throttle_at: float | None = None
    throttle_rpm: int | None = None
    webhook_url: str | None = None

    @property
    def label(self) -> str:
        return f"{self.period} budget of {self.scope} {self.name!r}"

    def document(self) -> dict[str, Any]:
        document = attrs.asdict(self)
        document["thresholds"] = list(self.thresholds)
        return document


@attrs.frozen
class BudgetStatus:
    budget: Budget
    spent_usd: float
    period_start: float
    period_end: float

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.budget.limit_usd - self.spent_usd)

    @property
    def fraction(self) -> float:
        if self.budget.limit_usd <= 0:
            return float("inf") if self.spent_usd > 0 else 1.0
        return self.spent_usd / self.budget.limit_usd

    @property
    def is_exhausted(self) -> bool:
        return self.spent_usd >= self.budget.limit_usd

    def document(self) -> dict[str, Any]:
        return {
            **self.budget.document(),
            "spent_usd": round(self.spent_usd, 6),
            "remaining_usd": round(self.remaining_usd, 6),
            "period_start": rfc3339(self.period_start),
            "resets_at": rfc3339(self.period_end),
        }


@attrs.frozen
class Notice:
    """A threshold crossed: what the log line and webhook report."""

    budget: Budget
    threshold: float
    spent_usd: float
    period_start: float
    period_end: float

    def payload(self) -> dict[str, Any]:
        return {
            "type": "ccag.budget.threshold",
            "budget_id": self.budget.id,
            "scope": self.budget.scope,
            "name": self.budget.name,
            "period": self.budget.period,
            "policy": self.budget.policy,
            "limit_usd": self.budget.limit_usd,
            "threshold": self.threshold,
            "spent_usd": round(self.spent_usd, 6),
            "period_start": rfc3339(self.period_start),
            "resets_at": rfc3339(self.period_end),
        }


@attrs.frozen
class Admission:
    """What the budgets say about one request.

    Attributes:
        extra_rpm: request limits of throttled budgets, for the rate limiter.
        headers: the budget headers for the response.
        refusal_headers: by ``extra_rpm`` subject, the headers of that
            throttled budget, for a 429 that budget's limit causes.
    """

    extra_rpm: Mapping[str, tuple[str, int]]
    headers: list[tuple[str, str]]
    refusal_headers: Mapping[str, list[tuple[str, str]]] = attrs.field(factory=dict)


NO_BUDGET = Admission({}, [])


class BudgetTracker:
    """Budgets and their current totals, in memory.

    Args:
        clock: Unix time (tests replace it to move between periods).
        notify: called with each :class:`Notice` (must not block).
    """

    def __init__(
        self, clock: Callable[[], float], notify: Callable[[Notice], None]
    ) -> None:
        self.clock = clock
        self._notify = notify
        self._by_subject: dict[tuple[str, str], list[Budget]] = {}
        self._spent: dict[tuple[str, float], float] = {}
        self._notified: set[tuple[str, float, float]] = set()

    @property
    def budgets(self) -> list[Budget]:
        return [budget for group in self._by_subject.values() for budget in group]

    def replace(
        self, budgets: Iterable[Budget], spent: Mapping[tuple[str, float], float]
    ) -> None:
        """Install budgets and their totals (from the store and pending records)."""
        by_subject: dict[tuple[str, str], list[Budget]] = {}
        for budget in budgets:
            by_subject.setdefault((budget.scope, budget.name), []).append(budget)
        self._by_subject = by_subject
        self._spent = dict(spent)
        now = self.clock()
        for budget in self.budgets:
            self._check_thresholds(self.status(budget, now))

    def add(
        self, user: str | None, team: str | None, cost_usd: float, at: float
    ) -> None:
        """Count one of this gateway's own records."""
        if cost_usd <= 0:
            return
        for budget in self._matching(user, team):
            start, _ = period_bounds(budget.period, at)
            key = (budget.id, start)
            self._spent[key] = self._spent.get(key, 0.0) + cost_usd
            self._check_thresholds(self.status(budget, self.clock()))

    def status(self, budget: Budget, now: float) -> BudgetStatus:
        start, end = period_bounds(budget.period, now)
        return BudgetStatus(
            budget, self._spent.get((budget.id, start), 0.0), start, end
        )

    def statuses(self, user: str | None, team: str | None) -> list[BudgetStatus]:
        now = self.clock()
        return [self.status(budget, now) for budget in self._matching(user, team)]

    def admit(self, user: str | None, team: str | None) -> Admission:
        """Check a request against its user's and team's budgets.

        Raises:
            ApiError: 429 ``rate_limit_error`` from a blocking budget that is
                used up, naming it and when it resets.
        """
        if not self._by_subject:
            return NO_BUDGET
        statuses = self.statuses(user, team)
        if not statuses:
            return NO_BUDGET
        now = self.clock()
        headers = budget_headers(statuses)

        extra_rpm: dict[str, tuple[str, int]] = {}
        refusal_headers: dict[str, list[tuple[str, str]]] = {}
        for status in statuses:
            budget = status.budget
            if budget.policy == "block" and status.is_exhausted:
                retry_after = max(1, int(status.period_end - now + 0.999))
                raise ApiError(
                    429,
                    f"budget exceeded: the {budget.label} (${format_usd(budget.limit_usd)}) is "
                    f"used up (${format_usd(status.spent_usd)} spent); it resets at "
                    f"{rfc3339(status.period_end)}",
                    "rate_limit_error",
                    # The headers describe the budget that refused, not the tightest.
                    # A spent budget comes back only at the reset: a client
                    # retrying sooner would be refused for nothing.
                    [
                        ("retry-after", str(retry_after)),
                        ("x-should-retry", "false"),
                        *budget_headers([status]),
                    ],
                )
            if budget.policy == "throttle" and budget.throttle_rpm is not None:
                throttle_at = 1.0 if budget.throttle_at is None else budget.throttle_at
                if status.fraction >= throttle_at:
                    subject = f"the throttled {budget.label}"
                    extra_rpm["budget:" + budget.id] = (subject, budget.throttle_rpm)
                    refusal_headers[subject] = budget_headers([status])
        return Admission(extra_rpm, headers, refusal_headers)

    def _matching(self, user: str | None, team: str | None) -> list[Budget]:
        found: list[Budget] = []
        if user is not None:
            found += self._by_subject.get(("user", user), ())
        if team is not None:
            found += self._by_subject.get(("team", team), ())
        return found

    def _check_thresholds(self, status: BudgetStatus) -> None:
        for threshold in status.budget.thresholds:
            if status.fraction < threshold:
                continue
            key = (status.budget.id, status.period_start, threshold)
            if key in self._notified:
                continue
            self._notified.add(key)
            logger.warning(
                "%s reached %d%% of $%s ($%s spent; resets at %s)",
                status.budget.label,
                round(threshold * 100),
                format_usd(status.budget.limit_usd),
                format_usd(status.spent_usd),
                rfc3339(status.period_end),
            )
            self._notify(
                Notice(
                    status.budget,
                    threshold,
                    status.spent_usd,
                    status.period_start,
                    status.period_end,
                )
            )


def budget_headers(statuses: list[BudgetStatus]) -> list[tuple[str, str]]:
    """Headers for the tightest budget: least remaining, then soonest reset."""
    tightest = min(
        statuses, key=lambda status: (status.remaining_usd, status.period_end)
    )
    return [
        (REMAINING_HEADER, exact_usd(tightest.remaining_usd)),
        (RESETS_AT_HEADER, rfc3339(tightest.period_end)),
        (LIMIT_HEADER, exact_usd(tightest.budget.limit_usd)),
        (
            BUDGET_HEADER,
            f"{tightest.budget.scope}:{tightest.budget.name}:{tightest.budget.period}",
        ),
    ]


# -- the store --------------------------------------------------------------

_BUDGET_COLUMNS = "id, scope, name, period, limit_usd, policy, thresholds, throttle_at, throttle_rpm, webhook_url"


def _budget(row: tuple[Any, ...]) -> Budget:
    return Budget(
        id=row[0],
        scope=row[1],
        name=row[2],
        period=row[3],
        limit_usd=float(row[4]),
        policy=row[5],
        thresholds=tuple(float(value) for value in json.loads(row[6])),
        throttle_at=None if row[7] is None else float(row[7]),
        throttle_rpm=None if row[8] is None else int(row[8]),
        webhook_url=row[9],
    )


def load_budgets(connection: Connection) -> list[Budget]:
    rows = connection.query(
        f"SELECT {_BUDGET_COLUMNS} FROM budgets ORDER BY scope, name, period"
    )
    return [_budget(row) for row in rows]


def get_budget(connection: Connection, budget_id: str) -> Budget | None:
    rows = connection.query(
        f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE id = ?", (budget_id,)
    )
    return _budget(rows[0]) if rows else None


def save_budget(connection: Connection, budget: Budget, now: float) -> None:
    """Insert or replace a budget (by id)."""
    connection.execute("DELETE FROM budgets WHERE id = ?", (budget.id,))
    connection.execute(
        f"INSERT INTO budgets ({_BUDGET_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            budget.id,
            budget.scope,
            budget.name,
            budget.period,
            budget.limit_usd,
            budget.policy,
            json.dumps(list(budget.thresholds)),
            budget.throttle_at,
            budget.throttle_rpm,
            budget.webhook_url,
            now,
        ),
    )


def delete_budget(connection: Connection, budget_id: str) -> int:
    connection.execute("DELETE FROM budget_notices WHERE budget_id = ?", (budget_id,))
    return connection.execute("DELETE FROM budgets WHERE id = ?", (budget_id,))


def spent_in_period(
    connection: Connection, budget: Budget, start: float, end: float
) -> float:
    column = "user_name" if budget.scope == "user" else "team_name"
    rows = connection.query(
        f"SELECT COALESCE(SUM(cost_usd), 0) FROM spend_records "
        f"WHERE {column} = ? AND at >= ? AND at < ?",
        (budget.name, start, end),
    )
    return float(rows[0][0] or 0.0)


def claim_notice(connection: Connection, notice: Notice, now: float) -> bool:
    """Record that a notice goes out; False if it already went (elsewhere)."""
    changed = connection.execute(
        "INSERT INTO budget_notices (budget_id, period_start, threshold, sent_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (notice.budget.id, notice.period_start, notice.threshold, now),
    )
    return changed > 0
