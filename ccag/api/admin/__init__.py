"""The admin HTTP API under ``/admin``: keys, users and teams, as JSON.

Every route takes ``Authorization: Bearer`` with an admin session token (from
``POST /auth/login``) or an API key (``x-api-key`` works too). Admins may do
everything; members (a member's session or key) may read themselves, change
their own password, and create, list, update and revoke their own keys.
Errors use Anthropic's envelope; a refused credential is counted in
``ccag.auth_failures.total``. ``/admin/spend*`` and ``/admin/budgets*`` are
registered elsewhere.
"""

from __future__ import annotations

from typing import Any

from ccag.api.admin import keys, teams, users
from ccag.api.admin.common import Admin, Reply, as_handler, bad_request
from ccag.api.router import Router
from ccag.auth.keys import bearer_token
from ccag.auth.sessions import SESSION_PREFIX, SessionManager
from ccag.server.types import Request
from ccag.store import Store

__all__ = ["register_admin_routes"]


async def whoami(admin: Admin, request: Request) -> Reply:
    """``GET /admin/me``: the caller's user, team, role and key, if any."""
    principal = await admin.principal(request)
    return Reply(
        200,
        {
            "user": principal.user,
            "team": principal.team,
            "role": principal.role,
            "key_id": principal.key_id,
            "key_name": principal.key_name,
        },
    )


async def logout(admin: Admin, request: Request) -> Reply:
    """``POST /admin/logout``: end the session whose token is the bearer."""
    token = bearer_token(request.headers)
    if token is None or not token.startswith(SESSION_PREFIX):
        raise bad_request("send the session token to end as Authorization: Bearer <token>")
    await admin.principal(request)
    await admin.sessions.logout(token)
    return Reply(200, {"logged_out": True})


def register_admin_routes(
    router: Router, services: Any, sessions: SessionManager, store: Store
) -> None:
    """Add the ``/admin`` key, user and team routes to ``router``."""
    admin = Admin(services, sessions, store)

    router.add("GET", "/admin/me", as_handler(admin, whoami))
    router.add("POST", "/admin/logout", as_handler(admin, logout))

    router.add("POST", "/admin/keys", as_handler(admin, keys.create_key))
    router.add("GET", "/admin/keys", as_handler(admin, keys.list_keys))
    key_item = as_handler(admin, keys.key_item)
    for method in ("GET", "PATCH", "DELETE", "POST"):
        router.add_prefix(method, keys.PREFIX, key_item)

    router.add("POST", "/admin/users", as_handler(admin, users.create_user))
    router.add("GET", "/admin/users", as_handler(admin, users.list_users))
    user_item = as_handler(admin, users.user_item)
    for method in ("GET", "PATCH", "DELETE"):
        router.add_prefix(method, users.PREFIX, user_item)

    router.add("POST", "/admin/teams", as_handler(admin, teams.create_team))
    router.add("GET", "/admin/teams", as_handler(admin, teams.list_teams))
    team_item = as_handler(admin, teams.team_item)
    for method in ("GET", "PATCH", "DELETE"):
        router.add_prefix(method, teams.PREFIX, team_item)
