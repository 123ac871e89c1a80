"""What a model call costs: tokens times the model's price per million.

Prices come from the model table (``ccag/data/bedrock.json`` and the
operator's models file) and may be overridden per model by an admin (the
``pricing_overrides`` table). A model the table does not know is priced as
:func:`ccag.bedrock.facts.unknown_model_facts` says. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ccag.bedrock.facts import ModelFacts, Pricing, unknown_model_facts
from ccag.store import Connection

TOKENS_PER_PRICE_UNIT = 1_000_000


@attrs.frozen
class Price:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def from_pricing(cls, pricing: Pricing) -> Price:
        # Usage does not say which cache TTL a write used; the 5-minute
        # price is the default TTL's.
        # TODO: price 1-hour cache writes at their own rate; until the
        # observer splits cache writes by TTL they are priced as 5-minute ones.
        return cls(
            pricing.input, pricing.output, pricing.cache_read, pricing.cache_write_5m
        )

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int
    ) -> float:
        """USD for these token counts."""
        total = (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read * self.cache_read
            + cache_write * self.cache_write
        )
        return total / TOKENS_PER_PRICE_UNIT

    def document(self) -> dict[str, float]:
        return attrs.asdict(self)


class PriceTable:
    """Prices by canonical model name, with admin overrides on top.

    Args:
        models: the model table (canonical name -> facts).
    """

    def __init__(self, models: Mapping[str, ModelFacts]) -> None:
        self._shipped = {
            name: Price.from_pricing(facts.pricing) for name, facts in models.items()
        }
        self._unknown = Price.from_pricing(unknown_model_facts().pricing)
        self._overrides: Mapping[str, Price] = {}

    def set_overrides(self, overrides: Mapping[str, Price]) -> None:
        self._overrides = dict(overrides)

    def price(self, model: str) -> Price:
        """The price in force for a canonical model name (``other`` included)."""
        override = self._overrides.get(model)
        if override is not None:
            return override
        return self._shipped.get(model, self._unknown)

    def listing(self) -> list[dict[str, Any]]:
        """Every model's price in force, and whether an admin set it."""
        names = sorted(set(self._shipped) | set(self._overrides))
        return [
            {
                "model": name,
                "overridden": name in self._overrides,
                **self.price(name).document(),
            }
            for name in names
        ]


# -- the overrides table ----------------------------------------------------


def load_overrides(connection: Connection) -> dict[str, Price]:
    rows = connection.query(
        "SELECT model, input, output, cache_read, cache_write FROM pricing_overrides"
    )
    return {row[0]: Price(*(float(value) for value in row[1:])) for row in rows}


def save_override(connection: Connection, model: str, price: Price, now: float) -> None:
    connection.execute("DELETE FROM pricing_overrides WHERE model = ?", (model,))
    connection.execute(
        "INSERT INTO pricing_overrides (model, input, output, cache_read, cache_write, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (model, price.input, price.output, price.cache_read, price.cache_write, now),
    )


def delete_override(connection: Connection, model: str) -> int:
    return connection.execute("DELETE FROM pricing_overrides WHERE model = ?", (model,))


def all_models(tables: Iterable[Mapping[str, ModelFacts]]) -> dict[str, ModelFacts]:
    """Merge model tables, later ones winning (shipped, then the operator's)."""
    merged: dict[str, ModelFacts] = {}
    for table in tables:
        merged.update(table)
    return merged
