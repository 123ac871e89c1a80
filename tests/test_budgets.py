"""Budget periods, thresholds and policies, and prices, with an injected clock."""

from __future__ import annotations

import calendar

import pytest

from ccag.bedrock.facts import shipped_models
from ccag.errors import ApiError
from ccag.spend.budgets import Budget, BudgetTracker, Notice, period_bounds, rfc3339
from ccag.spend.pricing import Price, PriceTable


def _at(*parts: int) -> float:
    return float(calendar.timegm((*parts, 0, 0, 0)[:6]))


def test_periods_are_utc_calendar_days_weeks_and_months() -> None:
    wednesday_noon = _at(2030, 1, 16, 12)

    assert period_bounds("daily", wednesday_noon) == (
        _at(2030, 1, 16),
        _at(2030, 1, 17),
    )
    assert period_bounds("weekly", wednesday_noon) == (
        _at(2030, 1, 14),
        _at(2030, 1, 21),
    )
    assert period_bounds("monthly", wednesday_noon) == (
        _at(2030, 1, 1),
        _at(2030, 2, 1),
    )
    assert period_bounds("monthly", _at(2028, 2, 29, 23)) == (
        _at(2028, 2, 1),
        _at(2028, 3, 1),
    )
    assert period_bounds("daily", _at(2030, 1, 17)) == (
        _at(2030, 1, 17),
        _at(2030, 1, 18),
    )


def _tracker(
    now: list[float], notices: list[Notice], *budgets: Budget
) -> BudgetTracker:
    tracker = BudgetTracker(lambda: now[0], notices.append)
    tracker.replace(budgets, {})
    return tracker


def test_block_refuses_once_used_up_and_the_next_period_starts_at_zero() -> None:
    now = [_at(2030, 1, 16, 18)]
    notices: list[Notice] = []
    tracker = _tracker(
        now, notices, Budget("b1", "user", "alice", "daily", 1.0, "block")
    )

    assert tracker.admit("alice", None).headers[0] == (
        "x-ccag-budget-remaining-usd",
        "1.000000000",
    )
    tracker.add("alice", None, 0.6, now[0])
    tracker.add("alice", None, 0.4, now[0])
    with pytest.raises(ApiError) as refused:
        tracker.admit("alice", "any-team")

    error = refused.value
    assert (error.status, error.error_type) == (429, "rate_limit_error")
    assert "daily budget of user 'alice'" in error.message
    assert rfc3339(_at(2030, 1, 17)) in error.message
    assert dict(error.headers)["retry-after"] == str(6 * 3600)
    assert tracker.admit("bob", None).headers == []

    now[0] = _at(2030, 1, 17, 0)
    assert (
        dict(tracker.admit("alice", None).headers)["x-ccag-budget-remaining-usd"]
        == "1.000000000"
    )


def test_thresholds_notify_once_per_period() -> None:
    now = [_at(2030, 3, 3, 9)]
    notices: list[Notice] = []
    tracker = _tracker(
        now, notices, Budget("b1", "team", "red", "monthly", 10.0, "notify")
    )

    tracker.add(None, "red", 7.9, now[0])
    assert notices == []
    tracker.add(None, "red", 0.1, now[0])
    tracker.add(None, "red", 1.0, now[0])
    assert [notice.threshold for notice in notices] == [0.8]
    tracker.add(None, "red", 5.0, now[0])
    tracker.admit(None, "red")  # notify never refuses

    assert [notice.threshold for notice in notices] == [0.8, 1.0]
    assert notices[1].payload()["resets_at"] == "2030-04-01T00:00:00Z"

    now[0] = _at(2030, 4, 2)
    tracker.add(None, "red", 9.0, now[0])
    assert [notice.threshold for notice in notices] == [0.8, 1.0, 0.8]


def test_throttle_adds_a_lower_request_limit_above_its_threshold() -> None:
    now = [_at(2030, 1, 1, 1)]
    budget = Budget(
        "b9",
        "team",
        "red",
        "weekly",
        100.0,
        "throttle",
        throttle_at=0.5,
        throttle_rpm=2,
    )
    tracker = _tracker(now, [], budget)

    assert tracker.admit(None, "red").extra_rpm == {}
    tracker.add(None, "red", 50.0, now[0])

    assert tracker.admit(None, "red").extra_rpm == {
        "budget:b9": ("the throttled weekly budget of team 'red'", 2)
    }


def test_the_tightest_budget_names_the_headers() -> None:
    now = [_at(2030, 1, 1, 1)]
    tracker = _tracker(
        now,
        [],
        Budget("u", "user", "alice", "monthly", 50.0, "notify"),
        Budget("t", "team", "red", "daily", 5.0, "notify"),
    )
    tracker.add("alice", "red", 1.0, now[0])

    headers = dict(tracker.admit("alice", "red").headers)

    assert headers["x-ccag-budget-remaining-usd"] == "4.000000000"
    assert headers["x-ccag-budget"] == "team:red:daily"


def test_a_zero_dollar_block_budget_refuses_at_once() -> None:
    tracker = _tracker(
        [_at(2030, 1, 1)], [], Budget("z", "user", "x", "daily", 0.0, "block")
    )

    with pytest.raises(ApiError) as refused:
        tracker.admit("x", None)

    assert ("x-should-retry", "false") in refused.value.headers


def test_prices_come_from_the_table_and_overrides_win() -> None:
    table = PriceTable(shipped_models())

    assert table.price("claude-sonnet-4-5").cost(
        1_000_000, 1_000_000, 1_000_000, 1_000_000
    ) == pytest.approx(3.0 + 15.0 + 0.3 + 3.75)
    assert (
        table.price("no-such-model").input == 3.0
    )  # priced like the unknown-model default

    table.set_overrides({"claude-sonnet-4-5": Price(1.0, 2.0, 0.0, 0.0)})

    assert table.price("claude-sonnet-4-5").cost(
        500_000, 250_000, 9, 9
    ) == pytest.approx(1.0)
    overridden = [row["model"] for row in table.listing() if row["overridden"]]
    assert overridden == ["claude-sonnet-4-5"]
