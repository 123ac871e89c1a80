"""``ccag admin ...``: drive a running gateway's admin API over HTTP.

Unlike ``ccag keys`` (which opens the store itself), these commands talk to a
gateway: ``--url`` (else ``CCAG_URL``, else http://127.0.0.1:8080) with a
bearer credential from ``--token``, else ``CCAG_ADMIN_TOKEN``, else the
session token ``ccag admin login`` stored for that URL. People get tables;
scripts pass ``--json`` and get the API's JSON.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ccag.admin_cli_endpoints import register_endpoint_commands
from ccag.admin_client import (
    DEFAULT_URL,
    AdminApiError,
    AdminClient,
    AdminClientError,
    load_token,
    save_token,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}

ADMIN_HELP = """\
Manage a running gateway over HTTP. The gateway is --url (else CCAG_URL, else
http://127.0.0.1:8080); credentials are --token (else CCAG_ADMIN_TOKEN, else
the session stored by `ccag admin login`). Add --json for scripts."""

Command = Callable[[argparse.Namespace, AdminClient], int]


class UsageError(Exception):
    """A command line that cannot be sent as given."""


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``; a bare number is days."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"{text!r} is not a duration such as 30d, 12h, 90m or 2w")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# -- output -----------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Rows as aligned columns under upper-case titles; None shows as ``-``."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, (list, tuple)):
            return ",".join(str(item) for item in value) or "-"
        return str(value)

    table = [[title for title, _ in columns]]
    table += [[cell(row.get(field)) for _, field in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip())


def _show(args: argparse.Namespace, document: Any, columns: Sequence[tuple[str, str]],
          key: str | None = None) -> int:
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    rows = document[key] if key is not None else [document]
    print_table(rows, columns)
    return EXIT_OK


KEY_COLUMNS = (
    ("NAME", "name"), ("ID", "id"), ("PREFIX", "prefix"), ("USER", "user"),
    ("TEAM", "team"), ("ROLE", "role"), ("EXPIRES", "expires_at"), ("STATUS", "status"),
)
USER_COLUMNS = (
    ("NAME", "name"), ("ROLE", "role"), ("TEAM", "team"), ("LOGIN", "can_log_in"),
    ("LIVE KEYS", "live_keys"), ("CREATED", "created_at"),
)
TEAM_COLUMNS = (
    ("NAME", "name"), ("MEMBERS", "members"), ("LIVE KEYS", "live_keys"),
    ("CREATED", "created_at"),
)


def _report(args: argparse.Namespace, document: Any, message: str) -> int:
    """The API's JSON with ``--json``, else ``message`` for a person on stderr."""
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(message, file=sys.stderr)
    return EXIT_OK


def _path(prefix: str, name: str) -> str:
    return prefix + urllib.parse.quote(name, safe="")


# -- session ----------------------------------------------------------------


def login_command(args: argparse.Namespace, client: AdminClient) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.username} at {client.url}: ")
    answer = client.call("POST", "/auth/login", {"username": args.username, "password": password})
    path = save_token(args.environ, client.url, answer["token"], answer.get("expires_at"))
    if args.json:
        print(json.dumps({"expires_at": answer.get("expires_at"), "token_file": path}))
    else:
        print(f"logged in to {client.url} as {args.username} until {answer.get('expires_at')}; "
              f"session stored in {path}", file=sys.stderr)
    return EXIT_OK


def logout_command(args: argparse.Namespace, client: AdminClient) -> int:
    try:
        client.call("POST", "/admin/logout")
    finally:
        save_token(args.environ, client.url, None, None)
    print(f"logged out of {client.url}", file=sys.stderr)
    return EXIT_OK


def whoami_command(args: argparse.Namespace, client: AdminClient) -> int:
    return _show(args, client.call("GET", "/admin/me"), (
        ("USER", "user"), ("TEAM", "team"), ("ROLE", "role"), ("KEY", "key_name"),
    ))


# -- keys -------------------------------------------------------------------


def _expiry(args: argparse.Namespace, document: dict[str, Any]) -> None:
    if getattr(args, "expires_in", None):
        document["expires_in"] = parse_duration(args.expires_in)
    if getattr(args, "expires_at", None):
        document["expires_at"] = args.expires_at
    if getattr(args, "no_expiry", False):
        document["expires_at"] = None


def keys_create(args: argparse.Namespace, client: AdminClient) -> int:
    """The key alone on stdout (so ``KEY=$(ccag admin keys create ...)``
    works), the details on stderr."""
    document: dict[str, Any] = {"name": args.name}
    if args.user:
        document["user"] = args.user
    if args.team:
        document["team"] = args.team
    if args.no_team:
        document["team"] = None
    if args.role:
        document["role"] = args.role
    _expiry(args, document)
    created = client.call("POST", "/admin/keys", document)
    if args.json:
        print(json.dumps(created, indent=2))
        return EXIT_OK
    print(created["key"], flush=True)
    owner = created["user"] or "-"
    if created["team"]:
        owner += f" (team {created['team']})"
    expiry = f", expires {created['expires_at']}" if created["expires_at"] else ""
    print(f"created key {created['name']!r} ({created['id']}) for {owner}{expiry}; "
          "store it now: it cannot be shown again", file=sys.stderr)
    return EXIT_OK


def keys_list(args: argparse.Namespace, client: AdminClient) -> int:
    params = {name: getattr(args, name) for name in ("user", "team", "status")
              if getattr(args, name)}
    return _show(args, client.call("GET", "/admin/keys", params=params), KEY_COLUMNS, "keys")


def keys_show(args: argparse.Namespace, client: AdminClient) -> int:
    return _show(args, client.call("GET", _path("/admin/keys/", args.key)), KEY_COLUMNS)


def keys_update(args: argparse.Namespace, client: AdminClient) -> int:
    document: dict[str, Any] = {}
    for field in ("name", "user", "team", "role"):
        if getattr(args, field):
            document[field] = getattr(args, field)
    if args.clear_role:
        document["role"] = None
    if args.no_team:
        document["team"] = None
    if args.no_user:
        document["user"] = None
    _expiry(args, document)
    if not document:
        raise UsageError("nothing to update: give --name, --expires-in, --role, --user or --team")
    return _show(args, client.call("PATCH", _path("/admin/keys/", args.key), document), KEY_COLUMNS)


def keys_revoke(args: argparse.Namespace, client: AdminClient) -> int:
    revoked = client.call("DELETE", _path("/admin/keys/", args.key))
    return _report(args, revoked, f"revoked key {revoked['name']!r} ({revoked['id']}); "
                   "every gateway refuses it from its next key refresh")


# -- users ------------------------------------------------------------------


def _new_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.set_password:
        first = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the passwords differ")
        return first
    return None


def users_create(args: argparse.Namespace, client: AdminClient) -> int:
    document: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.team:
        document["team"] = args.team
    password = _new_password(args)
    if password is not None:
        document["password"] = password
    return _show(args, client.call("POST", "/admin/users", document), USER_COLUMNS)


def users_list(args: argparse.Namespace, client: AdminClient) -> int:
    return _show(args, client.call("GET", "/admin/users"), USER_COLUMNS, "users")


def users_show(args: argparse.Namespace, client: AdminClient) -> int:
    return _show(args, client.call("GET", _path("/admin/users/", args.user)), USER_COLUMNS)


def users_update(args: argparse.Namespace, client: AdminClient) -> int:
    document: dict[str, Any] = {}
    for field in ("name", "role", "team"):
        if getattr(args, field):
            document[field] = getattr(args, field)
    if args.no_team:
        document["team"] = None
    if args.no_login:
        document["password"] = None
    password = _new_password(args)
    if password is not None:
        document["password"] = password
        if args.current_password:
            document["current_password"] = (
                sys.stdin.readline().rstrip("\r\n")
                if args.password_stdin
                else getpass.getpass("current password: ")
            )
    if not document:
        raise UsageError("nothing to update: give --name, --role, --team or a password option")
    answer = client.call("PATCH", _path("/admin/users/", args.user), document)
    return _show(args, answer, USER_COLUMNS)


def users_delete(args: argparse.Namespace, client: AdminClient) -> int:
    params = {"force": "true"} if args.force else None
    deleted = client.call("DELETE", _path("/admin/users/", args.user), params=params)
    return _report(args, deleted, f"deleted user {deleted['name']!r}")


# -- teams ------------------------------------------------------------------


def teams_create(args: argparse.Namespace, client: AdminClient) -> int:
    return _show(args, client.call("POST", "/admin/teams", {"name": args.name}), TEAM_COLUMNS)


def teams_list(args: argparse.Namespace, client: AdminClient) -> int:
    return _show(args, client.call("GET", "/admin/teams"), TEAM_COLUMNS, "teams")


def teams_show(args: argparse.Namespace, client: AdminClient) -> int:
    return _show(args, client.call("GET", _path("/admin/teams/", args.team)), TEAM_COLUMNS)


def teams_rename(args: argparse.Namespace, client: AdminClient) -> int:
    answer = client.call("PATCH", _path("/admin/teams/", args.team), {"name": args.new_name})
    return _show(args, answer, TEAM_COLUMNS)


def teams_delete(args: argparse.Namespace, client: AdminClient) -> int:
    params = {"force": "true"} if args.force else None
    deleted = client.call("DELETE", _path("/admin/teams/", args.team), params=params)
    return _report(args, deleted, f"deleted team {deleted['name']!r}")


# -- parser -----------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the gateway (default: CCAG_URL, else {DEFAULT_URL})")
    common.add_argument(
        "--token",
        help="admin session token or API key (default: CCAG_ADMIN_TOKEN, else the "
        "session from `ccag admin login`)",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    return common


def _expiry_options(parser: argparse.ArgumentParser, *, can_clear: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expires-in", metavar="DURATION", help="such as 30d, 12h, 2w")
    group.add_argument("--expires-at", metavar="TIME", help="RFC 3339, such as 2030-01-01T00:00:00Z")
    if can_clear:
        group.add_argument("--no-expiry", action="store_true", help="never expire")


def register(subparsers: Any) -> None:
    """Add ``admin`` and its command groups to the ``ccag`` command.

    Each action sets ``func``: call ``args.func(args)`` for the exit status.
    """
    common = _connection_options()
    admin = subparsers.add_parser(
        "admin", help="manage keys, users and teams of a running gateway",
        description=ADMIN_HELP,
    )
    groups = admin.add_subparsers(dest="admin_group", metavar="GROUP", required=True)

    def leaf(parent: Any, name: str, command: Command, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help)
        parser.set_defaults(func=_runner(command, needs_token=name != "login"))
        return parser

    login = leaf(groups, "login", login_command, "log in and store the session token")
    login.add_argument("--username", default="admin", help="default: admin")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin")
    leaf(groups, "logout", logout_command, "end the stored session")
    leaf(groups, "whoami", whoami_command, "show who the credentials act as")

    keys = groups.add_parser("keys", help="API keys").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    create = leaf(keys, "create", keys_create, "create a key; prints it once")
    create.add_argument("name")
    create.add_argument("--user", help="owning user (must exist)")
    team = create.add_mutually_exclusive_group()
    team.add_argument("--team", help="owning team (default: the user's team)")
    team.add_argument("--no-team", action="store_true", help="not charged to the user's team")
    create.add_argument("--role", choices=("admin", "member"), help="role override for this key")
    _expiry_options(create, can_clear=False)
    listing = leaf(keys, "list", keys_list, "list keys")
    listing.add_argument("--user")
    listing.add_argument("--team")
    listing.add_argument("--status", choices=("active", "expired", "revoked"))
    leaf(keys, "show", keys_show, "show one key").add_argument("key", help="id or live name")
    update = leaf(keys, "update", keys_update, "rename, re-own, change role or expiry")
    update.add_argument("key", help="id or live name")
    update.add_argument("--name", help="new name")
    update.add_argument("--user", help="new owning user")
    update.add_argument("--no-user", action="store_true", help="remove the user (keep the team)")
    update.add_argument("--team", help="new owning team")
    update.add_argument("--no-team", action="store_true", help="remove the team")
    update.add_argument("--role", choices=("admin", "member"))
    update.add_argument("--clear-role", action="store_true", help="use the owner's role")
    _expiry_options(update, can_clear=True)
    leaf(keys, "revoke", keys_revoke, "revoke a key").add_argument("key", help="id or live name")

    users = groups.add_parser("users", help="users").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    create = leaf(users, "create", users_create, "create a user")
    create.add_argument("name")
    create.add_argument("--role", choices=("admin", "member"), default="member")
    create.add_argument("--team")
    _password_options(create)
    leaf(users, "list", users_list, "list users")
    leaf(users, "show", users_show, "show one user").add_argument("user")
    update = leaf(users, "update", users_update, "rename, change role, team or password")
    update.add_argument("user")
    update.add_argument("--name", help="new name")
    update.add_argument("--role", choices=("admin", "member"))
    update_team = update.add_mutually_exclusive_group()
    update_team.add_argument("--team")
    update_team.add_argument("--no-team", action="store_true", help="leave the team")
    _password_options(update)
    update.add_argument(
        "--current-password", action="store_true",
        help="also give your current password (a member changing their own must); "
        "prompted, or the second line of stdin with --password-stdin",
    )
    update.add_argument("--no-login", action="store_true", help="remove the password")
    delete = leaf(users, "delete", users_delete, "delete a user")
    delete.add_argument("user")
    delete.add_argument("--force", action="store_true", help="also delete the user's live keys")

    teams = groups.add_parser("teams", help="teams").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    leaf(teams, "create", teams_create, "create a team").add_argument("name")
    leaf(teams, "list", teams_list, "list teams")
    leaf(teams, "show", teams_show, "show one team").add_argument("team")
    rename = leaf(teams, "rename", teams_rename, "rename a team")
    rename.add_argument("team")
    rename.add_argument("new_name")
    delete = leaf(teams, "delete", teams_delete, "delete a team")
    delete.add_argument("team")
    delete.add_argument("--force", action="store_true", help="also delete the team's live keys")
    register_endpoint_commands(groups, leaf)

    from ccag.spend.cli import register_admin_subcommands

    register_admin_subcommands(groups, leaf)


def _password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--set-password", action="store_true", help="prompt for a password")
    group.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin")


def _runner(command: Command, *, needs_token: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
        args.environ = os.environ if environ is None else environ
        url = args.url or args.environ.get("CCAG_URL") or DEFAULT_URL
        try:
            token = None
            if needs_token:
                token = (args.token or args.environ.get("CCAG_ADMIN_TOKEN")
                         or load_token(args.environ, url))
                if token is None:
                    raise UsageError(
                        f"not logged in to {url}: run `ccag admin login`, or give --token "
                        "or CCAG_ADMIN_TOKEN"
                    )
            return command(args, AdminClient(url, token))
        except UsageError as exc:
            print(f"ccag admin: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except AdminApiError as exc:
            print(f"ccag admin: {exc.message} (HTTP {exc.status})", file=sys.stderr)
            return EXIT_FAILED
        except AdminClientError as exc:
            print(f"ccag admin: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return run
