"""One task that watches every relayed stream for upstream silence.

A streamed answer needs two things while Bedrock says nothing: a ``ping``
event after ``ping_interval`` so that proxies in between keep the connection,
and an end (one SSE ``error`` event) after ``upstream_idle_timeout``.

Why one shared watcher rather than a watchdog task per stream: a nursery and
a sleeping task per stream cost about as much as a tenth of the relay's own
work, and each stream's end then waits for that task to be cancelled and
reaped. Here a stream is a record in a set; the relay loop only notes when it
reads and writes, and this task looks at every record once per tick.

The watcher acts only on a stream whose relay is parked in an upstream read
and whose write lock is free, so that a ping never interleaves with an event
and a timeout never cuts a write in half: the relay's cancel scope is
cancelled while the relay waits for bytes, and a ping is written by a short
task that holds the stream's write lock.
"""

from __future__ import annotations

import logging

import attrs
import trio

from ccag.errors import ApiError
from ccag.server.types import Responder

logger = logging.getLogger("ccag.relay")

PING_EVENT = b'event: ping\ndata: {"type":"ping"}\n\n'

# The watcher looks this many times per shortest interval, so a ping or a
# timeout comes at most a tenth of its interval late.
TICKS_PER_INTERVAL = 10

# Bounds of the tick: below the lower one the watcher would cost CPU for no
# benefit a client could see; above the upper one a 10 s ping would drift.
MIN_TICK_SECONDS = 0.005
MAX_TICK_SECONDS = 1.0


@attrs.define(eq=False)
class WatchedStream:
    """What the watcher knows of one relayed stream.

    The relay sets ``reading`` around each upstream read and stamps
    ``last_read`` and ``last_write``; the watcher sets ``timed_out`` (and
    cancels ``scope``) or writes a ping.
    """

    responder: Responder
    write_lock: trio.Lock
    scope: trio.CancelScope
    last_read: float
    last_write: float
    reading: bool = False
    finished: bool = False
    timed_out: ApiError | None = None
    # Set when the gateway ends every stream (the shutdown grace ran out).
    stopped_by: ApiError | None = None
    ping_scope: trio.CancelScope | None = None


class SilenceWatch:
    """Pings and idle timeouts for every stream, from one task (``run``).

    Args:
        ping_interval: seconds without a write before a ping goes out.
        idle_timeout: seconds without an upstream read before the stream ends.
    """

    def __init__(self, ping_interval: float, idle_timeout: float) -> None:
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        shortest = min(ping_interval, idle_timeout)
        self.tick = min(max(shortest / TICKS_PER_INTERVAL, MIN_TICK_SECONDS), MAX_TICK_SECONDS)
        self._streams: set[WatchedStream] = set()

    def watch(self, responder: Responder, write_lock: trio.Lock) -> WatchedStream:
        """Start watching a stream; pair with :meth:`forget`."""
        now = trio.current_time()
        stream = WatchedStream(responder, write_lock, trio.CancelScope(), now, now)
        self._streams.add(stream)
        return stream

    def forget(self, stream: WatchedStream) -> None:
        """Stop watching: the relay is done (normally or not).

        A ping still waiting for the lock, or writing to a client that is
        gone, is cancelled: it must not outlive its request.
        """
        stream.finished = True
        self._streams.discard(stream)
        if stream.ping_scope is not None:
            stream.ping_scope.cancel()

    def end_all(self, error: ApiError) -> None:
        """End every stream with ``error`` (one SSE error event each).

        A relay waiting for upstream bytes is stopped at once; one busy with
        an event stops after writing it (it checks ``stopped_by``).
        """
        for stream in list(self._streams):
            stream.stopped_by = error
            if stream.reading and not stream.write_lock.locked():
                self._streams.discard(stream)
                stream.scope.cancel()

    @property
    def watched_count(self) -> int:
        return len(self._streams)

    async def run(self) -> None:
        """Check every stream once per tick, for as long as the gateway runs."""
        async with trio.open_nursery() as pings:
            while True:
                await trio.sleep(self.tick)
                now = trio.current_time()
                for stream in list(self._streams):
                    self._check(stream, now, pings)

    def _check(self, stream: WatchedStream, now: float, pings: trio.Nursery) -> None:
        if not stream.reading or stream.write_lock.locked() or stream.stopped_by is not None:
            return

        silent_for = now - stream.last_read
        if silent_for >= self.idle_timeout:
            stream.timed_out = ApiError(
                504,
                f"Bedrock sent nothing for {silent_for:.0f} seconds; the stream was ended",
                "timeout_error",
            )
            self._streams.discard(stream)
            stream.scope.cancel()
            return

        if stream.ping_scope is None and now - max(stream.last_read, stream.last_write) >= (
            self.ping_interval
        ):
            stream.ping_scope = trio.CancelScope()
            pings.start_soon(_send_ping, stream)


async def _send_ping(stream: WatchedStream) -> None:
    assert stream.ping_scope is not None
    with stream.ping_scope:
        try:
            async with stream.write_lock:
                if not stream.finished:
                    await stream.responder.send_data(PING_EVENT)
                    stream.last_write = trio.current_time()
        except Exception as exc:  # noqa: BLE001 - the relay sees a gone client itself
            logger.debug("ping not sent: %s", exc)
    stream.ping_scope = None
