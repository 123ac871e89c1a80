"""``ccag admin spend|budgets|limits|pricing``: the spend admin API from a shell.

Added to the ``ccag admin`` command group by :func:`register_admin_subcommands`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ccag.admin_cli import EXIT_OK, _show, print_table
from ccag.spend.budgets import format_usd
from ccag.spend.pricing import CACHE_WRITE_1H_PER_5M

SPEND_COLUMNS = {
    "key": (("KEY", "key"), ("KEY ID", "key_id")),
}
TOTAL_COLUMNS = (
    ("REQUESTS", "requests"),
    ("INPUT", "input_tokens"),
    ("OUTPUT", "output_tokens"),
    ("CACHE READ", "cache_read_tokens"),
    ("CACHE WRITE", "cache_write_tokens"),
    ("TOOLS", "tool_calls"),
    ("COST USD", "cost"),
)
BUDGET_COLUMNS = (
    ("ID", "id"),
    ("SCOPE", "scope"),
    ("NAME", "name"),
    ("PERIOD", "period"),
    ("POLICY", "policy"),
    ("LIMIT USD", "limit_usd"),
    ("SPENT USD", "spent_usd"),
    ("RESETS AT", "resets_at"),
)
LIMIT_COLUMNS = (("SCOPE", "scope"), ("NAME", "name"), ("RPM", "rpm"), ("TPM", "tpm"))
PRICE_COLUMNS = (
    ("MODEL", "model"),
    ("INPUT", "input"),
    ("OUTPUT", "output"),
    ("CACHE READ", "cache_read"),
    ("CACHE WRITE", "cache_write"),
    ("CACHE WRITE 1H", "cache_write_1h"),
    ("OVERRIDDEN", "overridden"),
)


def spend_command(args: argparse.Namespace, client: Any) -> int:
    params = {"by": args.by, "since": args.since}
    for name in ("until", "user", "team"):
        if getattr(args, name, None):
            params[name] = getattr(args, name)
    document = client.call("GET", "/admin/spend", params=params)
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    rows = [{**row, "cost": format_usd(row["cost_usd"])} for row in document["rows"]]
    columns = SPEND_COLUMNS.get(args.by, ((args.by.upper(), args.by),))
    print_table(rows, (*columns, *TOTAL_COLUMNS))
    print(
        f"total ${format_usd(document['total_cost_usd'])} from {document['since']} to {document['until']}"
    )
    return EXIT_OK


def _budget_document(args: argparse.Namespace) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for field in ("scope", "name", "period", "policy", "webhook_url"):
        if getattr(args, field, None) is not None:
            document[field] = getattr(args, field)
    for field in ("limit_usd", "throttle_at"):
        if getattr(args, field, None) is not None:
            document[field] = float(getattr(args, field))
    if getattr(args, "throttle_rpm", None) is not None:
        document["throttle_rpm"] = int(args.throttle_rpm)
    if getattr(args, "thresholds", None):
        document["thresholds"] = [float(part) for part in args.thresholds.split(",")]
    return document


def budgets_list(args: argparse.Namespace, client: Any) -> int:
    return _show(args, client.call("GET", "/admin/budgets"), BUDGET_COLUMNS, "budgets")


def budgets_create(args: argparse.Namespace, client: Any) -> int:
    return _show(
        args,
        client.call("POST", "/admin/budgets", _budget_document(args)),
        BUDGET_COLUMNS,
    )


def budgets_update(args: argparse.Namespace, client: Any) -> int:
    path = "/admin/budgets/" + quote(args.id, safe="")
    return _show(
        args, client.call("PATCH", path, _budget_document(args)), BUDGET_COLUMNS
    )


def budgets_delete(args: argparse.Namespace, client: Any) -> int:
    client.call("DELETE", "/admin/budgets/" + quote(args.id, safe=""))
    return EXIT_OK


def limits_list(args: argparse.Namespace, client: Any) -> int:
    document = client.call("GET", "/admin/limits")
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    defaults = [
        {"scope": scope, "name": "(default)", **limits}
        for scope, limits in document["defaults"].items()
    ]
    print_table(defaults + document["overrides"], LIMIT_COLUMNS)
    return EXIT_OK


def limits_set(args: argparse.Namespace, client: Any) -> int:
    path = f"/admin/limits/{args.scope}/{quote(args.name, safe='')}"
    return _show(
        args,
        client.call("PUT", path, {"rpm": args.rpm, "tpm": args.tpm}),
        LIMIT_COLUMNS,
    )


def limits_delete(args: argparse.Namespace, client: Any) -> int:
    client.call("DELETE", f"/admin/limits/{args.scope}/{quote(args.name, safe='')}")
    return EXIT_OK


def pricing_list(args: argparse.Namespace, client: Any) -> int:
    return _show(args, client.call("GET", "/admin/pricing"), PRICE_COLUMNS, "models")


def pricing_set(args: argparse.Namespace, client: Any) -> int:
    document = {
        "input": args.input,
        "output": args.output,
        "cache_read": args.cache_read,
        "cache_write": args.cache_write,
    }
    if args.cache_write_1h is not None:
        document["cache_write_1h"] = args.cache_write_1h
    path = "/admin/pricing/" + quote(args.model, safe="")
    return _show(args, client.call("PUT", path, document), PRICE_COLUMNS)


def pricing_delete(args: argparse.Namespace, client: Any) -> int:
    client.call("DELETE", "/admin/pricing/" + quote(args.model, safe=""))
    return EXIT_OK


Leaf = Callable[
    [Any, str, Callable[[argparse.Namespace, Any], int], str], argparse.ArgumentParser
]


def _budget_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    parser.add_argument("--scope", choices=("user", "team"), required=creating)
    parser.add_argument("--name", required=creating, help="the user's or team's name")
    parser.add_argument(
        "--period", choices=("daily", "weekly", "monthly"), required=creating
    )
    parser.add_argument("--limit-usd", dest="limit_usd", type=float, required=creating)
    parser.add_argument(
        "--policy", choices=("notify", "throttle", "block"), required=creating
    )
    parser.add_argument("--thresholds", help="fractions such as 0.8,1.0 (default)")
    parser.add_argument("--throttle-rpm", dest="throttle_rpm", type=int)
    parser.add_argument(
        "--throttle-at", dest="throttle_at", type=float, help="fraction, default 1.0"
    )
    parser.add_argument("--webhook-url", dest="webhook_url")


def register_admin_subcommands(groups: Any, leaf: Leaf) -> None:
    """Add ``spend``, ``budgets``, ``limits`` and ``pricing`` to ``ccag admin``."""
    spend = leaf(
        groups, "spend", spend_command, "spend by user, team, key, model or day"
    )
    spend.add_argument(
        "--by", choices=("user", "team", "key", "model", "day"), default="user"
    )
    spend.add_argument(
        "--since", default="7d", help="7d, 12h, or an ISO date (default 7d)"
    )
    spend.add_argument("--until", help="a duration back or an ISO date (default now)")
    spend.add_argument("--user")
    spend.add_argument("--team")

    budgets = groups.add_parser("budgets", help="budgets").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    leaf(budgets, "list", budgets_list, "list budgets and what they spent")
    _budget_options(
        leaf(budgets, "create", budgets_create, "create a budget"), creating=True
    )
    update = leaf(budgets, "update", budgets_update, "change a budget")
    update.add_argument("id")
    _budget_options(update, creating=False)
    leaf(budgets, "delete", budgets_delete, "delete a budget").add_argument("id")

    limits = groups.add_parser("limits", help="rate limits").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    leaf(limits, "list", limits_list, "defaults and overrides")
    for name, command, help in (
        ("set", limits_set, "override a key's or team's limits"),
        ("delete", limits_delete, "back to the defaults"),
    ):
        parser = leaf(limits, name, command, help)
        parser.add_argument("scope", choices=("key", "team"))
        parser.add_argument("name", help="key id or team name")
        if name == "set":
            parser.add_argument(
                "--rpm", type=int, help="requests per minute (omit: unlimited)"
            )
            parser.add_argument(
                "--tpm", type=int, help="tokens per minute (omit: unlimited)"
            )

    pricing = groups.add_parser("pricing", help="model prices").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    leaf(pricing, "list", pricing_list, "prices in force (USD per million tokens)")
    price = leaf(pricing, "set", pricing_set, "override a model's price")
    price.add_argument("model")
    for field in ("input", "output", "cache-read", "cache-write"):
        price.add_argument(
            f"--{field}", dest=field.replace("-", "_"), type=float, required=True
        )
    price.add_argument(
        "--cache-write-1h",
        type=float,
        help=f"1-hour cache write price (omit: {CACHE_WRITE_1H_PER_5M} times --cache-write)",
    )
    leaf(pricing, "delete", pricing_delete, "back to the shipped price").add_argument(
        "model"
    )
