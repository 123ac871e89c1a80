"""``ccag admin endpoints ...`` and ``ccag admin routing ...``: endpoints over HTTP.

``endpoints list`` shows each endpoint's state, error and throttle counts and
latency; ``endpoints add FILE`` adds the endpoint in a JSON (or TOML) file
holding one ``[[endpoints]]``-style table; ``endpoints remove ID``;
``routing show``; ``routing set TEAM --endpoints a,b --strategy sticky
--geography us``; ``routing clear TEAM``.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Callable
from typing import Any

from ccag.admin_client import AdminClient

Command = Callable[[argparse.Namespace, AdminClient], int]

# (title, field) pairs, as print_table takes them.
ENDPOINT_COLUMNS = (
    ("ID", "id"), ("REGION", "region"), ("GEO", "geo_prefix"), ("API", "api"),
    ("PRIORITY", "priority"), ("WEIGHT", "weight"), ("STATE", "state"),
    ("ERRORS", "errors"), ("THROTTLES", "throttles"), ("RECENT THROTTLES", "recent_throttles"),
    ("TTFB MS", "ttfb_ewma_ms"), ("SOURCE", "source"),
)


def _emit(args: argparse.Namespace, document: Any, rows: list[dict[str, Any]] | None = None) -> int:
    from ccag.admin_cli import EXIT_OK, print_table

    if args.json or rows is None:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print_table(rows, ENDPOINT_COLUMNS)
    return EXIT_OK


def endpoints_list(args: argparse.Namespace, client: AdminClient) -> int:
    document = client.call("GET", "/admin/endpoints")
    return _emit(args, document, document.get("endpoints", []))


def endpoints_add(args: argparse.Namespace, client: AdminClient) -> int:
    from ccag.admin_cli import UsageError

    try:
        with open(args.file, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        table = json.loads(raw) if args.file.endswith(".json") else tomllib.loads(raw.decode())
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    if isinstance(table, dict) and isinstance(table.get("endpoints"), list) and len(table["endpoints"]) == 1:
        table = table["endpoints"][0]
    return _emit(args, client.call("POST", "/admin/endpoints", table))


def endpoints_remove(args: argparse.Namespace, client: AdminClient) -> int:
    return _emit(args, client.call("DELETE", f"/admin/endpoints/{args.endpoint}"))


def routing_show(args: argparse.Namespace, client: AdminClient) -> int:
    return _emit(args, client.call("GET", "/admin/routing"))


def routing_set(args: argparse.Namespace, client: AdminClient) -> int:
    document: dict[str, Any] = {}
    if args.endpoints:
        document["endpoints"] = [part.strip() for part in args.endpoints.split(",") if part.strip()]
    if args.strategy:
        document["strategy"] = args.strategy
    if args.geography:
        document["geography"] = args.geography
    return _emit(args, client.call("PUT", f"/admin/routing/teams/{args.team}", document))


def routing_clear(args: argparse.Namespace, client: AdminClient) -> int:
    return _emit(args, client.call("DELETE", f"/admin/routing/teams/{args.team}"))


def register_endpoint_commands(groups: Any, leaf: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``endpoints`` and ``routing`` to the ``ccag admin`` groups.

    Args:
        groups: the admin group's subparsers.
        leaf: ``leaf(parent, name, command, help)`` of :mod:`ccag.admin_cli`.
    """
    endpoints = groups.add_parser("endpoints", help="Bedrock endpoints and their health").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    leaf(endpoints, "list", endpoints_list, "list endpoints with state, errors, throttles, latency")
    leaf(endpoints, "add", endpoints_add, "add an endpoint from a JSON or TOML file").add_argument("file")
    leaf(endpoints, "remove", endpoints_remove, "remove a stored endpoint").add_argument("endpoint")

    routing = groups.add_parser("routing", help="team routing").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    leaf(routing, "show", routing_show, "show strategies and team routes")
    team = leaf(routing, "set", routing_set, "set a team's endpoints, strategy, geography")
    team.add_argument("team")
    team.add_argument("--endpoints", help="comma-separated endpoint ids")
    team.add_argument("--strategy", choices=("priority", "round_robin", "sticky"))
    team.add_argument("--geography", help="us, eu, apac, au, jp, us-gov or global")
    leaf(routing, "clear", routing_clear, "remove a team's stored route").add_argument("team")
