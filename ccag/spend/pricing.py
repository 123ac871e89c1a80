"""What a model call costs: tokens times the model's price per million.

Prices come from the model table (``ccag/data/bedrock.json`` and the
operator's models file) and may be overridden per model by an admin (the
``pricing_overrides`` table, with the 1-hour cache write rate in
``pricing_overrides_1h``). Cache writes are priced by TTL: usage's
``cache_creation`` breakdown says how many used the 1-hour one. A model the
table does not know is priced as :func:`ccag.bedrock.facts.unknown_model_facts`
says. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ccag.bedrock.facts import ModelFacts, Pricing, unknown_model_facts
from ccag.store import Connection

TOKENS_PER_PRICE_UNIT = 1_000_000

# Anthropic prices a 5-minute cache write at 1.25 times the input rate and a
# 1-hour write at 2 times it, so a 1-hour write costs 2 / 1.25 = 1.6 times a
# 5-minute one. An admin override that gives only ``cache_write`` gets its
# 1-hour rate from this.
CACHE_WRITE_1H_PER_5M = 1.6


def _derived_cache_write_1h(price: Price) -> float:
    return price.cache_write * CACHE_WRITE_1H_PER_5M


@attrs.frozen
class Price:
    """USD per million tokens of each kind.

    ``cache_write`` is the 5-minute (default TTL) cache write rate;
    ``cache_write_1h``, the 1-hour one, is derived from it when not given.
    """

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float = attrs.field(
        default=attrs.Factory(_derived_cache_write_1h, takes_self=True)
    )

    @classmethod
    def from_pricing(cls, pricing: Pricing) -> Price:
        return cls(
            pricing.input,
            pricing.output,
            pricing.cache_read,
            pricing.cache_write_5m,
            pricing.cache_write_1h,
        )

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write: int,
        cache_write_1h: int = 0,
    ) -> float:
        """USD for these token counts.

        Args:
            input_tokens: uncached input tokens.
            output_tokens: generated tokens.
            cache_read: tokens read from the prompt cache.
            cache_write: tokens written to the prompt cache, of either TTL.
            cache_write_1h: the part of ``cache_write`` written with the
                1-hour TTL; the rest is priced at the 5-minute rate.
        """
        # The 1-hour writes are part of the total: an upstream split that
        # claims more than the total, or less than none, is clamped so no
        # token is priced twice or at a negative count.
        written = max(cache_write, 0)
        written_1h = min(max(cache_write_1h, 0), written)
        total = (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read * self.cache_read
            + (written - written_1h) * self.cache_write
            + written_1h * self.cache_write_1h
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
    """Every admin price override; one stored without a 1-hour cache write
    rate gets the derived one."""
    rows = connection.query(
        "SELECT o.model, o.input, o.output, o.cache_read, o.cache_write, h.cache_write_1h"
        " FROM pricing_overrides o"
        " LEFT JOIN pricing_overrides_1h h ON h.model = o.model"
    )
    overrides: dict[str, Price] = {}
    for model, *rates, rate_1h in rows:
        price = Price(*(float(value) for value in rates))
        if rate_1h is not None:
            price = attrs.evolve(price, cache_write_1h=float(rate_1h))
        overrides[model] = price
    return overrides


def save_override(connection: Connection, model: str, price: Price, now: float) -> None:
    """Store (or replace) a model's price override, its 1-hour rate included."""
    delete_override(connection, model)
    connection.execute(
        "INSERT INTO pricing_overrides (model, input, output, cache_read, cache_write, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (model, price.input, price.output, price.cache_read, price.cache_write, now),
    )
    connection.execute(
        "INSERT INTO pricing_overrides_1h (model, cache_write_1h) VALUES (?, ?)",
        (model, price.cache_write_1h),
    )


def delete_override(connection: Connection, model: str) -> int:
    """Remove a model's price override; the number of overrides removed."""
    # The 1-hour rate first: it references the override.
    connection.execute("DELETE FROM pricing_overrides_1h WHERE model = ?", (model,))
    return connection.execute("DELETE FROM pricing_overrides WHERE model = ?", (model,))


def all_models(tables: Iterable[Mapping[str, ModelFacts]]) -> dict[str, ModelFacts]:
    """Merge model tables, later ones winning (shipped, then the operator's)."""
    merged: dict[str, ModelFacts] = {}
    for table in tables:
        merged.update(table)
    return merged
