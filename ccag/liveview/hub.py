"""The event hub: finished requests in, per-viewer bounded queues out.

Theory of operation: :meth:`LiveHub.record` is a :class:`~ccag.services.Services`
sink, called on the request path when a request ends. It builds one
:class:`~ccag.liveview.events.LiveEvent`, appends it to a bounded ring,
counts it in the per-second rollups of every scope that sees it, and appends
it to the queue of every viewer who may see it. It never awaits: a viewer is
woken with a :class:`trio.Event`, and its own task does the sending.

A viewer whose queue is full is switched to summaries: its queued events are
dropped, it is told how many it missed, and from then on it receives only the
once-a-second rollups (a bounded number of them). Once its queue has drained
and it has been on summaries for :data:`SUMMARY_MODE_MIN_SECONDS`, it gets a
fresh snapshot and live events again. However slow a viewer is, the gateway
does the same work per request and the viewer's memory stays bounded.

Resuming: every event has a sequence number, and the hub an ``epoch`` (new
each start). A viewer that reconnects with the epoch and the last number it
saw gets the events it missed from the ring, when they are all still there
and fit its queue; otherwise it gets a snapshot.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import trio

from ccag.api.outcome import Outcome
from ccag.liveview.aggregates import HISTORY_SECONDS, Rollups
from ccag.liveview.events import (
    LiveEvent,
    Pricer,
    Visibility,
    event_from_outcome,
    scopes_of,
)

logger = logging.getLogger("ccag.liveview")

# Finished requests kept for resuming and snapshots: minutes of a busy
# gateway, a few MB at most.
RING_SIZE = 4096
# Messages waiting for one viewer before it is switched to summaries: a
# second or two of a busy gateway; beyond that the viewer is not keeping up.
MAX_QUEUED_MESSAGES = 256
# Recent events in a snapshot: what fills the feed of a page just opened.
SNAPSHOT_EVENTS = 200
# A viewer on summaries stays there at least this long, so a viewer that is
# just slow does not flap between modes and a snapshot each time.
SUMMARY_MODE_MIN_SECONDS = 5.0
# Seconds in a UTC day, for the fallback spend totals.
SECONDS_PER_DAY = 86400


def dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))


class ViewerMode(enum.Enum):
    LIVE = "live"
    SUMMARY = "summary"


class Viewer:
    """One connected page: what it may see and what waits to be sent."""

    def __init__(self, visibility: Visibility, max_queued: int) -> None:
        self.visibility = visibility
        self.max_queued = max_queued
        self.queue: collections.deque[str | LiveEvent] = collections.deque()
        self.mode = ViewerMode.LIVE
        self.summary_since = 0.0
        self.skipped = 0
        self._wake = trio.Event()

    def offer_event(self, event: LiveEvent, now: float) -> None:
        """Queue an event, or count it as skipped; never blocks."""
        if self.mode is ViewerMode.SUMMARY:
            self.skipped += 1
            return
        if len(self.queue) < self.max_queued:
            self.queue.append(event)
            self._wake.set()
            return

        # Not keeping up: drop queued events, keep the rollups.
        kept = [item for item in self.queue if isinstance(item, str)]
        self.skipped += len(self.queue) - len(kept) + 1
        self.queue.clear()
        self.queue.extend(kept[-(self.max_queued - 1):])
        self.mode = ViewerMode.SUMMARY
        self.summary_since = now
        self.queue.append(dumps({"type": "lagging", "mode": "summary"}))
        self._wake.set()

    def offer(self, message: str) -> None:
        """Queue a message, dropping the oldest one when full; never blocks."""
        if len(self.queue) >= self.max_queued:
            dropped = self.queue.popleft()
            if isinstance(dropped, LiveEvent):
                self.skipped += 1
        self.queue.append(message)
        self._wake.set()

    async def next_message(self, hub: LiveHub) -> str:
        """Wait for the next message to send (encoded)."""
        while not self.queue:
            if (
                self.mode is ViewerMode.SUMMARY
                and hub.clock() - self.summary_since >= SUMMARY_MODE_MIN_SECONDS
            ):
                hub.catch_up(self)
                continue
            self._wake = trio.Event()
            await self._wake.wait()
        item = self.queue.popleft()
        return item.message() if isinstance(item, LiveEvent) else item


class _Scope:
    """The rollups and the viewers of one :attr:`Visibility.scope`."""

    def __init__(self, history_seconds: int) -> None:
        self.rollups = Rollups(history_seconds)
        self.viewers: set[Viewer] = set()


class LiveHub:
    """Collects finished requests and feeds connected viewers.

    Args:
        price: what a request's tokens cost, for the spend columns.
        in_flight: requests in flight now (read once a second), or None.
        clock: Unix time.
        ring_size: finished requests kept for resuming.
        max_queued: messages queued per viewer before it gets summaries.
        history_seconds: closed seconds of rollups kept per scope.
    """

    def __init__(
        self,
        price: Pricer,
        in_flight: Callable[[], int | None] = lambda: None,
        *,
        clock: Callable[[], float] = time.time,
        ring_size: int = RING_SIZE,
        max_queued: int = MAX_QUEUED_MESSAGES,
        history_seconds: int = HISTORY_SECONDS,
    ) -> None:
        self.price = price
        self.in_flight = in_flight
        self.clock = clock
        self.max_queued = max_queued
        self.history_seconds = history_seconds
        self.epoch = secrets.token_hex(8)
        self.ring: collections.deque[LiveEvent] = collections.deque(maxlen=ring_size)
        self.last_seq = 0
        self._open_second: int | None = None
        self._scopes: dict[str, _Scope] = {"*": _Scope(history_seconds)}
        # (UTC day, "team" | "user", name) -> [cost, requests]: the spend
        # totals used when no spend system is configured.
        self.day_totals: dict[tuple[int, str, str], list[float]] = {}
        # UTC day -> [cost, requests] of requests whose key has no team: the
        # admin's "no team" row, counted apart since they have no name.
        self.teamless_day_totals: dict[int, list[float]] = {}

    # -- the request path ---------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Take a finished request (a Services sink); never blocks."""
        self.last_seq += 1
        now = self.clock()
        event = event_from_outcome(
            outcome, self.last_seq, now, trio.current_time(), self.price
        )
        self.add(event, now)

    def add(self, event: LiveEvent, now: float) -> None:
        """Store ``event`` and hand it to the viewers who may see it."""
        self.advance(now)
        self.last_seq = max(self.last_seq, event.seq)
        self.ring.append(event)
        self._count_spend(event)

        scope = self._scopes["*"]
        scope.rollups.add(event)
        for viewer in scope.viewers:
            viewer.offer_event(event, now)
        if len(self._scopes) == 1:
            return
        for name in scopes_of(event):
            member_scope = self._scopes.get(name)
            if member_scope is None:
                continue
            member_scope.rollups.add(event)
            for viewer in member_scope.viewers:
                viewer.offer_event(event, now)

    def _count_spend(self, event: LiveEvent) -> None:
        day = int(event.at // SECONDS_PER_DAY)
        if event.team is None:
            totals = self.teamless_day_totals.get(day)
            if totals is None:
                self._forget_old_days(day)
                totals = self.teamless_day_totals[day] = [0.0, 0]
            totals[0] += event.cost_usd
            totals[1] += 1
        for kind, name in (("team", event.team), ("user", event.user)):
            if name is None:
                continue
            totals = self.day_totals.get((day, kind, name))
            if totals is None:
                self._forget_old_days(day)
                totals = self.day_totals[(day, kind, name)] = [0.0, 0]
            totals[0] += event.cost_usd
            totals[1] += 1

    def _forget_old_days(self, today: int) -> None:
        for key in [key for key in self.day_totals if key[0] < today - 1]:
            del self.day_totals[key]
        for day in [day for day in self.teamless_day_totals if day < today - 1]:
            del self.teamless_day_totals[day]

    # -- the clock ----------------------------------------------------------

    def tick(self, second: int) -> None:
        """Close ``second`` in every scope and send it to their viewers."""
        in_flight = self.in_flight()
        for name, scope in self._scopes.items():
            summary = scope.rollups.close(second, in_flight if name == "*" else None)
            if not scope.viewers:
                continue
            message = dumps({"type": "second", "second": summary})
            for viewer in scope.viewers:
                viewer.offer(message)

    def advance(self, now: float) -> None:
        """Close every second that ended before ``now``; idempotent.

        Called before each event is added and by every viewer's clock task at
        each second boundary, so no task of its own is needed: with no viewer
        and no traffic nothing runs, and the gap is filled by empty seconds
        (at most a history's worth) when something happens again.
        """
        current = int(now)
        if self._open_second is None:
            self._open_second = current
        elif current - self._open_second > self.history_seconds:
            self._open_second = current - self.history_seconds
        while self._open_second < current:
            self.tick(self._open_second)
            self._open_second += 1

    # -- viewers ------------------------------------------------------------

    def open_viewer(self, visibility: Visibility) -> Viewer:
        """Register a viewer; call :meth:`close_viewer` when it leaves."""
        name = visibility.scope
        scope = self._scopes.get(name)
        if scope is None:
            scope = self._scopes[name] = _Scope(self.history_seconds)
            visible = [event for event in self.ring if visibility.sees(event)]
            scope.rollups.seed(visible, int(self.clock()))
        viewer = Viewer(visibility, self.max_queued)
        scope.viewers.add(viewer)
        return viewer

    def close_viewer(self, viewer: Viewer) -> None:
        name = viewer.visibility.scope
        scope = self._scopes.get(name)
        if scope is None:
            return
        scope.viewers.discard(viewer)
        if not scope.viewers and name != "*":
            del self._scopes[name]

    def start(self, viewer: Viewer, epoch: str | None, last_seq: int | None) -> None:
        """Queue what a new connection needs first: the missed events or a snapshot."""
        replay = self._missed(viewer.visibility, epoch, last_seq)
        if replay is None:
            viewer.offer(self.snapshot(viewer.visibility))
            return
        viewer.offer(
            dumps(
                {
                    "type": "resumed",
                    "epoch": self.epoch,
                    "seq": self.last_seq,
                    "missed": len(replay),
                    "seconds": self.history(viewer.visibility),
                }
            )
        )
        now = self.clock()
        for event in replay:
            viewer.offer_event(event, now)

    def _missed(
        self, visibility: Visibility, epoch: str | None, last_seq: int | None
    ) -> list[LiveEvent] | None:
        """Events after ``last_seq``, or None when a snapshot is needed."""
        if epoch != self.epoch or last_seq is None or last_seq > self.last_seq:
            return None
        oldest = self.ring[0].seq if self.ring else self.last_seq + 1
        if last_seq < oldest - 1:
            return None  # some of the missed events have left the ring
        missed = [
            event for event in self.ring if event.seq > last_seq and visibility.sees(event)
        ]
        if len(missed) >= self.max_queued:
            return None
        return missed

    def snapshot(self, visibility: Visibility) -> str:
        """A ``snapshot`` message: recent events and the rollup history."""
        events: list[dict[str, Any]] = []
        for event in reversed(self.ring):
            if visibility.sees(event):
                events.append(event.document())
                if len(events) == SNAPSHOT_EVENTS:
                    break
        events.reverse()
        return dumps(
            {
                "type": "snapshot",
                "epoch": self.epoch,
                "seq": self.last_seq,
                "events": events,
                "seconds": self.history(visibility),
            }
        )

    def history(self, visibility: Visibility) -> list[dict[str, Any]]:
        scope = self._scopes.get(visibility.scope)
        return list(scope.rollups.history) if scope is not None else []

    def catch_up(self, viewer: Viewer) -> None:
        """Put a viewer on summaries back on live events, via a snapshot."""
        viewer.mode = ViewerMode.LIVE
        viewer.offer(
            dumps({"type": "caught_up", "skipped": viewer.skipped})
        )
        viewer.offer(self.snapshot(viewer.visibility))

    @property
    def viewers(self) -> list[Viewer]:
        return [viewer for scope in self._scopes.values() for viewer in scope.viewers]
