"""``GET /admin/debug/runtime``: what the process holds right now, for admins.

Leak checks (tests/test_soak.py, the fault tests) compare these numbers
before and after a load: open file descriptors, live Trio tasks, resident
memory and requests in flight. Reading them costs a walk of the task tree
and a directory listing, so the route is for diagnosis, never for polling at
a high rate.
"""

from __future__ import annotations

import collections
import inspect
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ccag.errors import ApiError
from ccag.server.types import Headers, Request, Responder

AuthorizeAdmin = Callable[[Headers, float], Any | Awaitable[Any]]

_FD_DIRECTORY = "/proc/self/fd"
_STATM = "/proc/self/statm"


# How many task names the reading lists: enough to see what grew.
TOP_TASK_NAMES = 10


def live_tasks() -> list[trio.lowlevel.Task]:
    """Every live task of the current Trio run, the root task included."""
    tasks = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        tasks.append(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return tasks


def count_open_fds() -> int | None:
    """Open file descriptors of this process; None where /proc is missing."""
    try:
        return len(os.listdir(_FD_DIRECTORY))
    except OSError:
        return None


def resident_bytes() -> int | None:
    """Resident set size of this process; None where /proc is missing."""
    try:
        with open(_STATM, encoding="ascii") as file:
            pages = int(file.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def runtime_snapshot(requests_in_flight: int | None = None) -> dict[str, Any]:
    """The numbers the route answers with."""
    tasks = live_tasks()
    names = collections.Counter(task.name for task in tasks)
    return {
        "tasks": len(tasks),
        "top_task_names": dict(names.most_common(TOP_TASK_NAMES)),
        "open_fds": count_open_fds(),
        "rss_bytes": resident_bytes(),
        "requests_in_flight": requests_in_flight,
    }


async def runtime_handler(
    request: Request,
    responder: Responder,
    *,
    authorize_admin: AuthorizeAdmin,
    requests_in_flight: Callable[[], int | None] = lambda: None,
) -> None:
    """Answer ``GET /admin/debug/runtime`` with :func:`runtime_snapshot`.

    Args:
        authorize_admin: ``authorize_admin(headers, now)`` returns (or
            resolves to) the admin, or raises :class:`ApiError` (401/403).
        requests_in_flight: the gateway's in-flight request count.
    """
    try:
        outcome = authorize_admin(request.headers, time.time())
        if inspect.isawaitable(outcome):
            await outcome
    except ApiError as error:
        body = error.body(request.request_id)
        await _send(responder, error.status, body, list(error.headers))
        return

    body = json.dumps(runtime_snapshot(requests_in_flight())).encode()
    await _send(responder, 200, body, [("cache-control", "no-store")])


async def _send(
    responder: Responder, status: int, body: bytes, headers: list[tuple[str, str]]
) -> None:
    await responder.start_response(
        status,
        [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *headers,
        ],
    )
    await responder.send_data(body)
    await responder.end_response()
