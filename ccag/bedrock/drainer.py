"""Finishing upstream responses after the client already has its answer.

A streamed answer is complete for the client at its ``message_stop`` event,
but Bedrock's chunked body ends a little later with its last (empty) chunk.
The connection can go back to the pool only once that has been read; closing
it instead would cost the next request a new TCP and TLS handshake.

Waiting for those few bytes inside the request used to hold up the client's
next request on the same keep-alive connection: with a busy upstream the
terminator can take milliseconds, and they were added to the next request's
time to first byte. The :class:`Drainer` takes that wait off the request's
path: it runs the rest of the read in a task of its own (in the gateway's
nursery), then hands the connection back to its pool or closes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

# Responses finished in the background at once; beyond this the request
# waits for its own (a bound on tasks and on connections held open).
MAX_BACKGROUND_DRAINS = 1024


class Drainer:
    """Runs finishing reads in the background once :meth:`run` is running."""

    def __init__(self, limit: int = MAX_BACKGROUND_DRAINS) -> None:
        self._limit = limit
        self._nursery: trio.Nursery | None = None
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the background reads until cancelled (the gateway's life)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def start(self, finish: Callable[[], Awaitable[None]]) -> bool:
        """Run ``finish()`` in the background; False if it must run in place.

        ``finish`` must not raise: it owns its connection and ends by
        releasing or closing it, cancellation included.
        """
        if self._nursery is None or self._active >= self._limit:
            return False
        self._active += 1
        self._nursery.start_soon(self._run_one, finish)
        return True

    async def _run_one(self, finish: Callable[[], Awaitable[None]]) -> None:
        try:
            await finish()
        finally:
            self._active -= 1
