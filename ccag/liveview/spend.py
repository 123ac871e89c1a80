"""Spend today, and budgets, as the live view shows them.

Two sources, one shape. With the spend system (:mod:`ccag.spend`) the totals
are today's spend records in the store plus the ones not yet written, the
same sum budgets use, so every gateway sharing the store shows the same
numbers; budget rows come from its :class:`~ccag.spend.budgets.BudgetTracker`.
Without it, the hub's own totals since start (priced from
:mod:`ccag.bedrock.facts`) are shown, without budgets. Both are read off the
request path, at most once per :data:`SPEND_CACHE_SECONDS` per scope.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ccag.bedrock.facts import shipped_models
from ccag.liveview.events import Pricer, Visibility
from ccag.liveview.hub import SECONDS_PER_DAY, LiveHub
from ccag.spend.pricing import PriceTable

# How long a spend report is reused: the store is asked at most this often
# per scope however many pages are open.
SPEND_CACHE_SECONDS = 5.0


def facts_pricer() -> Pricer:
    """Prices from the shipped model table (the fallback when no spend system)."""
    table = PriceTable(shipped_models())

    def price(model: str, input_tokens: int, output_tokens: int, cache_read: int,
              cache_write: int, cache_write_1h: int) -> float:
        return table.price(model).cost(
            input_tokens, output_tokens, cache_read, cache_write, cache_write_1h
        )

    return price


def system_pricer(spend: Any) -> Pricer:
    """Prices in force in the spend system (admin overrides included)."""

    def price(model: str, input_tokens: int, output_tokens: int, cache_read: int,
              cache_write: int, cache_write_1h: int) -> float:
        cost: float = spend.prices.price(model).cost(
            input_tokens, output_tokens, cache_read, cache_write, cache_write_1h
        )
        return cost

    return price


class SpendView:
    """Spend reports for viewers.

    Args:
        hub: the event hub (its day totals are the fallback source).
        spend: the spend system, or None.
        clock: Unix time.
    """

    def __init__(
        self, hub: LiveHub, spend: Any | None, clock: Callable[[], float] = time.time
    ) -> None:
        self._hub = hub
        self._spend = spend
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def report(self, visibility: Visibility) -> dict[str, Any]:
        """The ``spend`` message for a viewer with this visibility."""
        now = self._clock()
        cached = self._cache.get(visibility.scope)
        if cached is not None and now - cached[0] < SPEND_CACHE_SECONDS:
            return cached[1]

        day_start = now - now % SECONDS_PER_DAY
        kind = "team" if visibility.is_admin else "user"
        if self._spend is None:
            rows = self._hub_rows(visibility, int(now // SECONDS_PER_DAY))
            source = "live"
        else:
            rows = await self._store_rows(visibility, day_start, now)
            source = "records"
        report = {
            "type": "spend",
            "source": source,
            "day_start": day_start,
            "total_usd": round(
                sum(row["cost_usd"] or 0.0 for row in rows if row["kind"] == kind), 6
            ),
            "rows": rows,
        }
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[visibility.scope] = (now, report)
        return report

    def _hub_rows(self, visibility: Visibility, day: int) -> list[dict[str, Any]]:
        rows = []
        for (totals_day, kind, name), (cost, requests) in sorted(self._hub.day_totals.items()):
            if totals_day != day:
                continue
            if visibility.is_admin and kind == "team" or (
                not visibility.is_admin and kind == "user" and name == visibility.user
            ):
                rows.append(_row(kind, name, cost, int(requests), None))
        if visibility.is_admin:
            rows += self._untracked_team_row(day)
        return rows

    def _untracked_team_row(self, day: int) -> list[dict[str, Any]]:
        # Requests of keys without a team still cost money: one row for them.
        totals = self._hub.teamless_day_totals.get(day)
        if totals is None:
            return []
        cost, requests = totals
        return [_row("team", None, cost, int(requests), None)]

    async def _store_rows(
        self, visibility: Visibility, day_start: float, now: float
    ) -> list[dict[str, Any]]:
        from ccag.spend.queries import spend_by

        spend: Any = self._spend
        day_end = day_start + SECONDS_PER_DAY
        kind = "team" if visibility.is_admin else "user"
        user = None if visibility.is_admin else visibility.user
        key_id = None if visibility.is_admin or user is not None else visibility.key_id

        grouped = await spend.store.run(
            lambda connection: spend_by(
                connection, kind, day_start, day_end, user=user, key_id=key_id
            ),
            readonly=True,
        )
        totals: dict[str | None, list[float]] = {
            entry[kind]: [entry["cost_usd"], entry["requests"]] for entry in grouped
        }
        for record in spend.recorder.pending():
            name = record.team_name if kind == "team" else record.user_name
            if not day_start <= record.at < day_end:
                continue
            if not visibility.is_admin and (
                (user is not None and record.user_name != user)
                or (user is None and record.key_id != key_id)
            ):
                continue
            entry = totals.setdefault(name, [0.0, 0])
            entry[0] += record.cost_usd
            entry[1] += 1

        tracker = spend.budgets
        if visibility.is_admin:
            statuses = [tracker.status(budget, now) for budget in tracker.budgets]
        else:
            statuses = tracker.statuses(visibility.user, None)
        budgets: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        for status in statuses:
            budget = status.budget
            budgets.setdefault((budget.scope, budget.name), []).append(
                {
                    "period": budget.period,
                    "policy": budget.policy,
                    "limit_usd": budget.limit_usd,
                    "spent_usd": round(status.spent_usd, 6),
                }
            )

        rows = []
        for name, (cost, requests) in sorted(totals.items(), key=lambda item: -item[1][0]):
            rows.append(_row(kind, name, cost, int(requests), budgets.pop((kind, name), None)))
        for (scope, name), budget_list in sorted(budgets.items(), key=lambda item: str(item[0])):
            # Today's spend of a subject of another kind is not computed here.
            rows.append(_row(scope, name, 0.0 if scope == kind else None, 0, budget_list))
        return rows


def _row(
    kind: str, name: str | None, cost: float | None, requests: int,
    budgets: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "cost_usd": None if cost is None else round(cost, 6),
        "requests": requests,
        "budgets": budgets or [],
    }
