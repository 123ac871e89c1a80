"""Spend reports: totals grouped by user, team, key, model or day."""

from __future__ import annotations

from typing import Any

from ccag.store import Connection

# ``by`` -> the columns that identify a group (the first one names it).
GROUPS = {
    "user": ("user_name",),
    "team": ("team_name",),
    "key": ("key_name", "key_id"),
    "model": ("model",),
    "day": ("day",),
}

_TOTALS = (
    "COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
    "COALESCE(SUM(cache_read_tokens), 0), COALESCE(SUM(cache_write_tokens), 0), "
    "COALESCE(SUM(tool_calls), 0), COALESCE(SUM(cost_usd), 0)"
)


def spend_by(
    connection: Connection,
    by: str,
    since: float,
    until: float,
    *,
    user: str | None = None,
    team: str | None = None,
    key_id: str | None = None,
) -> list[dict[str, Any]]:
    """Spend from ``since`` (inclusive) to ``until`` (exclusive), per group.

    Args:
        by: a key of :data:`GROUPS`.
        user, team, key_id: only records of this user, team or key.

    Returns:
        One row per group, costliest first (days in date order).
    """
    columns = GROUPS[by]
    where = ["at >= ?", "at < ?"]
    params: list[Any] = [since, until]
    for column, value in (("user_name", user), ("team_name", team), ("key_id", key_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    group = ", ".join(columns)
    order = "day" if by == "day" else f"SUM(cost_usd) DESC, {columns[0]}"
    rows = connection.query(
        f"SELECT {group}, {_TOTALS} FROM spend_records WHERE {' AND '.join(where)} "
        f"GROUP BY {group} ORDER BY {order}",
        params,
    )
    result = []
    for row in rows:
        named = dict(zip(columns, row[: len(columns)]))
        totals = row[len(columns) :]
        entry: dict[str, Any] = {by: named[columns[0]]}
        if by == "key":
            entry["key_id"] = named["key_id"]
        entry.update(
            requests=int(totals[0]),
            input_tokens=int(totals[1]),
            output_tokens=int(totals[2]),
            cache_read_tokens=int(totals[3]),
            cache_write_tokens=int(totals[4]),
            tool_calls=int(totals[5]),
            cost_usd=round(float(totals[6]), 6),
        )
        result.append(entry)
    return result
