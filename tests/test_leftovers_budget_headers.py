"""Budget headers give every dollar amount in one format, precise enough to show any spend."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from ccag.simulator.scenarios import Text
from ccag.spend.budgets import Budget, BudgetTracker
from tests.admin_fixture import as_admin
from tests.e2e_client import message_body, post_messages
from tests.gateway_fixture import open_gateway

TIMEOUT = 20

AMOUNT_HEADERS = ("x-ccag-budget-limit-usd", "x-ccag-budget-remaining-usd")

# The documented format: a plain decimal with nine places.
NINE_PLACES = re.compile(r"\d+\.\d{9}")


def test_limit_and_remaining_share_one_format_that_keeps_tiny_spend() -> None:
    tracker = BudgetTracker(lambda: 1_900_000_000.0, lambda notice: None)
    tracker.replace([Budget("b", "user", "alice", "monthly", 500.0, "notify")], {})
    tracker.add("alice", None, 0.000123, 1_900_000_000.0)

    headers = dict(tracker.admit("alice", None).headers)

    assert headers["x-ccag-budget-limit-usd"] == "500.000000000"
    assert headers["x-ccag-budget-remaining-usd"] == "499.999877000"


def test_a_fresh_budget_reads_in_the_same_format_as_a_spent_one() -> None:
    tracker = BudgetTracker(lambda: 1_900_000_000.0, lambda notice: None)
    tracker.replace([Budget("b", "user", "alice", "daily", 0.0001, "notify")], {})

    fresh = dict(tracker.admit("alice", None).headers)
    tracker.add("alice", None, 1.0, 1_900_000_000.0)
    spent = dict(tracker.admit("alice", None).headers)

    assert fresh["x-ccag-budget-remaining-usd"] == "0.000100000"
    assert spent["x-ccag-budget-remaining-usd"] == "0.000000000"
    assert spent["x-ccag-budget-limit-usd"] == "0.000100000"


async def test_a_client_sees_its_spend_in_the_budget_headers(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/budgets", {
                "scope": "user", "name": "tester", "period": "monthly",
                "limit_usd": 500, "policy": "block",
            }, 201)
            running.simulator.script(Text(), Text())

            first = await post_messages(running.port, running.key, message_body())
            second = await post_messages(running.port, running.key, message_body())

    assert (first.status, second.status) == (200, 200)
    for reply in (first, second):
        for name in AMOUNT_HEADERS:
            assert NINE_PLACES.fullmatch(reply.headers[name]), (name, reply.headers[name])
    assert first.headers["x-ccag-budget-remaining-usd"] == "500.000000000"
    # One small call's cost is visible in the text, not rounded back to the limit.
    assert float(second.headers["x-ccag-budget-remaining-usd"]) < 500.0
    assert second.headers["x-ccag-budget-limit-usd"] == "500.000000000"
