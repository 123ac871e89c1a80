"""1-hour prompt-cache writes priced at their own rate: the observer's split of
cache writes by TTL, Price.cost, admin overrides (SQLite and PostgreSQL), the
simulator's usage breakdown, and spend records through a real gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from ccag.anthropic.observe import ResponseObserver
from ccag.bedrock.facts import shipped_models
from ccag.simulator.scenarios import Text, Usage
from ccag.spend.pricing import (
    CACHE_WRITE_1H_PER_5M,
    Price,
    load_overrides,
    save_override,
)
from ccag.sse import SSEDecoder
from ccag.store import open_store_sync
from tests.admin_fixture import as_admin
from tests.e2e_client import message_body, post_messages
from tests.gateway_fixture import open_gateway
from tests.postgres_fixture import BACKENDS, postgres_server  # noqa: F401
from tests.postgres_fixture import fresh_postgres_database as _fresh_postgres_database

MODEL = "claude-sonnet-4-5"
RATES = shipped_models()[MODEL].pricing

SCRIPTED = Usage(
    input_tokens=1000,
    output_tokens=2000,
    cache_read_input_tokens=3000,
    cache_creation_input_tokens=400,
)


def _by_hand(cache_write_rate: float, input_rate: float = RATES.input) -> float:
    """USD of SCRIPTED with all its cache writes at ``cache_write_rate``."""
    return (
        1000 * input_rate + 2000 * RATES.output + 3000 * RATES.cache_read
        + 400 * cache_write_rate
    ) / 1e6


@pytest.fixture(params=BACKENDS)
def store_location(request: Any, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ccag.sqlite3")
    else:
        yield from _fresh_postgres_database(request.getfixturevalue("postgres_server"))


# -- the observer -------------------------------------------------------------


def _start(usage: dict[str, Any]) -> bytes:
    return json.dumps({"type": "message_start", "message": {"usage": usage}}).encode()


def _delta(usage: dict[str, Any]) -> bytes:
    return json.dumps(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}
    ).encode()


def test_observer_reads_the_1h_part_of_cache_writes_streamed() -> None:
    observer = ResponseObserver()
    observer.observe_event(
        b"message_start",
        _start(
            {
                "input_tokens": 5,
                "cache_creation_input_tokens": 300,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 100,
                    "ephemeral_1h_input_tokens": 200,
                },
                "output_tokens": 1,
            }
        ),
    )
    # message_delta repeating the numbers replaces them, as for other fields.
    observer.observe_event(
        b"message_delta",
        _delta(
            {
                "output_tokens": 9,
                "cache_creation_input_tokens": 350,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 100,
                    "ephemeral_1h_input_tokens": 250,
                },
            }
        ),
    )
    assert (observer.usage.cache_write_tokens, observer.usage.cache_write_1h_tokens) == (
        350,
        250,
    )


def test_observer_reads_the_1h_part_of_a_whole_message() -> None:
    observer = ResponseObserver()
    observer.observe_message(
        {
            "content": [],
            "usage": {
                "input_tokens": 5,
                "output_tokens": 7,
                "cache_creation_input_tokens": 40,
                "cache_creation": {"ephemeral_1h_input_tokens": 40},
            },
        }
    )
    assert observer.usage.cache_write_1h_tokens == 40


def test_observer_without_breakdown_counts_no_1h_writes() -> None:
    observer = ResponseObserver()
    observer.observe_event(b"message_start", _start({"cache_creation_input_tokens": 80}))
    observer.observe_event(b"message_delta", _delta({"output_tokens": 3}))
    assert (observer.usage.cache_write_tokens, observer.usage.cache_write_1h_tokens) == (
        80,
        0,
    )


@pytest.mark.parametrize(
    "breakdown",
    [
        None,
        "many",
        [1, 2],
        {"ephemeral_1h_input_tokens": -5},
        {"ephemeral_1h_input_tokens": 2.5},
        {"ephemeral_1h_input_tokens": True},
        {"ephemeral_1h_input_tokens": "30"},
        {"ephemeral_1h_input_tokens": None},
    ],
)
def test_observer_ignores_a_garbage_breakdown(breakdown: Any) -> None:
    observer = ResponseObserver()
    observer.observe_event(
        b"message_start",
        _start(
            {
                "cache_creation_input_tokens": 60,
                "cache_creation": {"ephemeral_1h_input_tokens": 60},
            }
        ),
    )
    observer.observe_event(
        b"message_delta",
        _delta({"cache_creation_input_tokens": 60, "cache_creation": breakdown}),
    )
    # The earlier good number stands.
    assert observer.usage.cache_write_1h_tokens == 60


# -- Price.cost ---------------------------------------------------------------


def test_shipped_price_has_the_tables_1h_rate() -> None:
    price = Price.from_pricing(RATES)
    assert (price.cache_write, price.cache_write_1h) == (
        RATES.cache_write_5m,
        RATES.cache_write_1h,
    )


def test_cost_prices_each_ttl_at_its_rate() -> None:
    price = Price.from_pricing(RATES)
    by_hand = (
        1000 * RATES.input
        + 2000 * RATES.output
        + 3000 * RATES.cache_read
        + 150 * RATES.cache_write_5m
        + 250 * RATES.cache_write_1h
    ) / 1e6
    assert price.cost(1000, 2000, 3000, 400, 250) == pytest.approx(by_hand, rel=1e-12)
    assert price.cost(1000, 2000, 3000, 400) == pytest.approx(
        _by_hand(RATES.cache_write_5m), rel=1e-12
    )
    assert price.cost(1000, 2000, 3000, 400, 400) == pytest.approx(
        _by_hand(RATES.cache_write_1h), rel=1e-12
    )
    # The two rates differ, so the split changes the price.
    assert price.cost(0, 0, 0, 400, 400) > price.cost(0, 0, 0, 400)


@pytest.mark.parametrize("claimed_1h", [401, 10**9, -1, -(10**9)])
def test_cost_clamps_a_bad_1h_count(claimed_1h: int) -> None:
    price = Price.from_pricing(RATES)
    all_1h = 400 * RATES.cache_write_1h / 1e6
    all_5m = 400 * RATES.cache_write_5m / 1e6
    expected = all_1h if claimed_1h > 0 else all_5m
    assert price.cost(0, 0, 0, 400, claimed_1h) == pytest.approx(expected, rel=1e-12)


def test_a_price_without_1h_rate_derives_it() -> None:
    price = Price(1.0, 5.0, 0.1, 1.25)
    assert price.cache_write_1h == pytest.approx(1.25 * CACHE_WRITE_1H_PER_5M)
    assert price.document()["cache_write_1h"] == price.cache_write_1h


# -- overrides in the store ---------------------------------------------------


def test_overrides_keep_or_derive_the_1h_rate(store_location: str) -> None:
    with open_store_sync(store_location) as store:
        store.call(
            lambda c: save_override(c, "given", Price(2.0, 10.0, 0.2, 2.5, 7.0), 1.0)
        )
        store.call(lambda c: save_override(c, "derived", Price(2.0, 10.0, 0.2, 2.5), 1.0))
        # An override stored before the 1-hour rate existed has no 1h row.
        store.call(
            lambda c: c.execute(
                "INSERT INTO pricing_overrides"
                " (model, input, output, cache_read, cache_write, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ("old", 2.0, 10.0, 0.2, 3.0, 1.0),
            )
        )
        # Replacing an override replaces its 1h rate too.
        store.call(
            lambda c: save_override(c, "given", Price(2.0, 10.0, 0.2, 2.5, 8.0), 2.0)
        )
        overrides = store.call(load_overrides, readonly=True)

    assert overrides["given"].cache_write_1h == 8.0
    assert overrides["derived"].cache_write_1h == pytest.approx(2.5 * CACHE_WRITE_1H_PER_5M)
    assert overrides["old"].cache_write_1h == pytest.approx(3.0 * CACHE_WRITE_1H_PER_5M)


# -- the simulator (its TTL split: tests/test_accounting_leftovers.py) ---------


def _breakpoint(ttl: str | None) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl is not None:
        control["ttl"] = ttl
    return control


# -- through the gateway ------------------------------------------------------


def _cached_body(ttl: str, *, stream: bool, model: str = MODEL) -> bytes:
    system = [{"type": "text", "text": "You are terse.", "cache_control": _breakpoint(ttl)}]
    return message_body(model, stream=stream, system=system)


def _message_start_usage(body: bytes) -> dict[str, Any]:
    for event in SSEDecoder().feed(body):
        if event.event == "message_start":
            usage: dict[str, Any] = json.loads(event.data)["message"]["usage"]
            return usage
    raise AssertionError("no message_start")


async def test_spend_prices_1h_cache_writes_at_the_1h_rate(tmp_path: Any) -> None:
    store_path = str(tmp_path / "ccag.sqlite3")
    with trio.fail_after(30):
        async with open_gateway(tmp_path, settings={"store": store_path}) as running:
            running.simulator.script(*(Text(usage=SCRIPTED) for _ in range(3)))
            streamed = await post_messages(
                running.port, running.key, _cached_body("1h", stream=True)
            )
            whole = await post_messages(
                running.port, running.key, _cached_body("1h", stream=False)
            )
            five_minutes = await post_messages(
                running.port, running.key, _cached_body("5m", stream=False)
            )

    assert (streamed.status, whole.status, five_minutes.status) == (200, 200, 200)
    # The client sees the split, as Bedrock reports it.
    assert _message_start_usage(streamed.body)["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 400,
    }
    assert whole.json()["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == 400
    assert five_minutes.json()["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 400,
        "ephemeral_1h_input_tokens": 0,
    }

    with open_store_sync(store_path) as store:
        rows = store.call(
            lambda c: c.query(
                "SELECT cache_write_tokens, cost_usd FROM spend_records ORDER BY at"
            ),
            readonly=True,
        )
    assert [row[0] for row in rows] == [400, 400, 400]
    assert [row[1] for row in rows] == pytest.approx(
        [
            _by_hand(RATES.cache_write_1h),
            _by_hand(RATES.cache_write_1h),
            _by_hand(RATES.cache_write_5m),
        ],
        rel=1e-9,
    )


async def test_admin_overrides_with_and_without_1h_rate_price_later_calls(
    tmp_path: Any, store_location: str
) -> None:
    other = "claude-haiku-4-5"
    with trio.fail_after(60):
        async with open_gateway(tmp_path, settings={"store": store_location}) as running:
            admin = await as_admin(running.port)
            given = await admin.ok(
                "PUT",
                f"/admin/pricing/{MODEL}",
                {"input": 2.0, "output": RATES.output, "cache_read": RATES.cache_read,
                 "cache_write": 2.5, "cache_write_1h": 9.0},
            )
            derived = await admin.ok(
                "PUT",
                f"/admin/pricing/{other}",
                {"input": 2.0, "output": RATES.output, "cache_read": RATES.cache_read,
                 "cache_write": 2.5},
            )
            refused = await admin.call(
                "PUT",
                f"/admin/pricing/{other}",
                {"input": 2.0, "output": 1.0, "cache_read": 0.1, "cache_write": 2.5,
                 "cache_write_1h": -1},
            )
            listing = await admin.ok("GET", "/admin/pricing")
            running.simulator.script(Text(usage=SCRIPTED), Text(usage=SCRIPTED))
            for model in (MODEL, other):
                reply = await post_messages(
                    running.port, running.key, _cached_body("1h", stream=True, model=model)
                )
                assert reply.status == 200
            spent = await admin.ok("GET", "/admin/spend?by=model")

    assert given["cache_write_1h"] == 9.0
    assert derived["cache_write_1h"] == pytest.approx(2.5 * CACHE_WRITE_1H_PER_5M)
    assert refused.status == 400 and b"cache_write_1h" in refused.body
    shown = {row["model"]: row for row in listing["models"]}
    assert shown[MODEL]["cache_write_1h"] == 9.0
    assert shown[other]["cache_write_1h"] == pytest.approx(2.5 * CACHE_WRITE_1H_PER_5M)
    assert shown["claude-opus-4-5"]["cache_write_1h"] == (
        shipped_models()["claude-opus-4-5"].pricing.cache_write_1h
    )
    costs = {row["model"]: row["cost_usd"] for row in spent["rows"]}
    assert costs == pytest.approx(
        {
            MODEL: _by_hand(9.0, input_rate=2.0),
            other: _by_hand(2.5 * CACHE_WRITE_1H_PER_5M, input_rate=2.0),
        },
        abs=1e-6,
    )

    # Another gateway reading the store sees the same prices.
    with open_store_sync(store_location) as store:
        overrides = store.call(load_overrides, readonly=True)
    assert overrides[MODEL].cache_write_1h == 9.0
    assert overrides[other].cache_write_1h == pytest.approx(2.5 * CACHE_WRITE_1H_PER_5M)
