"""``ccag keys create|list|revoke``: manage API keys in the store directly.

These commands open the store themselves (``--store``, else ``CCAG_STORE``,
the config file, or the per-user default), so they work with no gateway
running; running gateways pick changes up at their next key refresh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ccag.admin_cli import print_table
from ccag.auth.keys import (
    MAX_KEY_LIFETIME_SECONDS,
    format_time,
    issue_key,
    key_listing,
    name_problem,
)
from ccag.config import load_config
from ccag.errors import ConfigError
from ccag.store import (
    Store,
    StoreConflict,
    StoreError,
    open_store_sync,
    parse_store_url,
)
from ccag.store.identity import ROLES, KeyRecord, find_keys, load_keys, revoke_key

SECONDS_PER_DAY = 86400.0
MAX_KEY_LIFETIME_DAYS = MAX_KEY_LIFETIME_SECONDS / SECONDS_PER_DAY

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add ``keys`` and its actions to the ``ccag`` command's subparsers.

    Each action sets ``func``: call ``args.func(args)`` for the exit status.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        help="SQLite path or postgres:// URL (default: CCAG_STORE, the config "
        "file, else the per-user store)",
    )
    common.add_argument("--config", help="TOML settings file (also CCAG_CONFIG)")

    keys = subparsers.add_parser(
        "keys", help="create, list and revoke API keys",
        description="Manage the API keys clients use with the gateway.",
    )
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create", parents=[common], help="create a key and print it once",
        description="Create an API key and print it on stdout, once. Without "
        "--user or --team the key belongs to a user named like the key.",
    )
    create.add_argument("name", help="a name for the key, unique among live keys")
    create.add_argument("--user", help="owning user (created as needed)")
    create.add_argument("--team", help="owning team (created as needed)")
    create.add_argument(
        "--role", choices=ROLES,
        help="role for this key (and for its user, if created now; default member)",
    )
    create.add_argument(
        "--expires-in", type=float, metavar="DAYS", help="days until the key expires"
    )
    create.set_defaults(func=create_command)

    listing = actions.add_parser(
        "list", parents=[common], help="list keys (never the keys themselves)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=list_command)

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("name_or_id", metavar="NAME_OR_ID", help="key id, or live key name")
    revoke.set_defaults(func=revoke_command)


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"ccag keys: {message}", file=sys.stderr)
    return status


def _open(args: argparse.Namespace, *, create: bool = False) -> Store:
    """The store; only ``create`` may make a new SQLite file (a mistyped path
    for list or revoke would otherwise show an empty store)."""
    location = load_config({"store": args.store}, file=args.config).resolved_store
    backend, target = parse_store_url(location)
    if not create and backend != "postgres" and target != ":memory:" and not os.path.exists(target):
        raise StoreError(f"no store at {target}")
    return open_store_sync(location)


def create_command(args: argparse.Namespace) -> int:
    """``ccag keys create``: the key on stdout alone, the details on stderr."""
    if args.expires_in is not None and not 0 < args.expires_in <= MAX_KEY_LIFETIME_DAYS:
        return _fail(
            f"--expires-in must be a positive number of days, at most {MAX_KEY_LIFETIME_DAYS:.0f}"
            " (ten years)",
            EXIT_USAGE,
        )
    for option, value in (("NAME", args.name), ("--user", args.user), ("--team", args.team)):
        problem = name_problem(value) if value is not None else None
        if problem is not None:
            return _fail(f"{option}: {problem}", EXIT_USAGE)
    now = time.time()
    expires_at = now + args.expires_in * SECONDS_PER_DAY if args.expires_in else None
    user = args.user if args.user or args.team else args.name

    try:
        with _open(args, create=True) as store:
            created = store.call(
                lambda connection: issue_key(
                    connection, args.name, user=user, team=args.team,
                    role=args.role, expires_at=expires_at, now=now,
                )
            )
    except StoreConflict:
        return _fail(f"a live key named {args.name!r} exists; revoke it or pick another name")
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        return _fail(str(exc))

    print(created.key, flush=True)
    owner = _owner(user, args.team)
    expiry = f", expires {format_time(expires_at)}" if expires_at else ""
    print(
        f"created key {created.name!r} ({created.id}) for {owner}{expiry}; "
        "store it now: it cannot be shown again",
        file=sys.stderr,
    )
    return EXIT_OK


def _owner(user: str | None, team: str | None) -> str:
    if user and team:
        return f"{user} (team {team})"
    return user if user else f"team {team}"


_COLUMNS = (
    ("NAME", "name"), ("ID", "id"), ("PREFIX", "prefix"), ("OWNER", "owner"),
    ("ROLE", "role"), ("CREATED", "created_at"), ("EXPIRES", "expires_at"),
    ("STATUS", "status"),
)


def list_command(args: argparse.Namespace) -> int:
    """``ccag keys list``: a table, or JSON with ``--json``."""
    try:
        with _open(args) as store:
            records = store.call(load_keys, readonly=True)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        return _fail(str(exc))

    now = time.time()
    rows = [key_listing(record, now) for record in records]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK

    for row in rows:
        row["owner"] = _owner(row["user"], row["team"])
        row["expires_at"] = row["expires_at"] or "never"
    print_table(rows, _COLUMNS)
    return EXIT_OK


def revoke_command(args: argparse.Namespace) -> int:
    """``ccag keys revoke NAME_OR_ID``."""
    now = time.time()

    def revoke(connection: Any) -> KeyRecord | None:
        matches = find_keys(connection, args.name_or_id)
        if not matches or not revoke_key(connection, matches[0].id, now):
            return None
        return matches[0]

    try:
        with _open(args) as store:
            revoked = store.call(revoke)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        return _fail(str(exc))

    if revoked is None:
        return _fail(f"no live key with id or name {args.name_or_id!r}")
    print(
        f"revoked key {revoked.name!r} ({revoked.id}); gateways refuse it from "
        "their next key refresh",
        file=sys.stderr,
    )
    return EXIT_OK
