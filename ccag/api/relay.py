"""Relay an upstream stream to the client as SSE, as each read lands.

Two tasks share one response. The relay reads from Bedrock, feeds the bytes to
a translator (event stream to SSE, or SSE to SSE) and writes what comes out.
A watchdog sleeps until the upstream has been silent for ``ping_interval`` and
then sends a ``ping`` event, so that proxies in between keep the connection;
after ``upstream_idle_timeout`` of silence it ends the stream with one SSE
``error`` event.

Why a watchdog rather than a timeout around each read: a stream of fifty
deltas is fifty reads, and a cancel scope per read costs more than the rest of
the relay's work per event. The watchdog costs one task per stream and the
read loop only notes the time of each read.

The two tasks never write at the same time: every write holds ``write_lock``,
and the watchdog stops the relay only while holding it, so a stop never lands
in the middle of a write.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio

from ccag.api.outcome import Outcome
from ccag.errors import ApiError
from ccag.server.types import Responder

PING_EVENT = b'event: ping\ndata: {"type":"ping"}\n\n'

# After message_stop only the end of the chunked body is left; an upstream
# that holds the connection open longer is not worth waiting for.
DRAIN_TIMEOUT = 1.0


class StreamTranslator(Protocol):
    """Turns upstream bytes into SSE bytes (see ccag.anthropic.stream)."""

    def feed(self, raw: bytes) -> Any: ...

    def close(self) -> ApiError | None: ...


class UpstreamStream(Protocol):
    async def receive_some(self) -> bytes: ...


@attrs.define
class _Activity:
    last_read: float
    last_write: float


async def relay_stream(
    responder: Responder,
    outcome: Outcome,
    upstream: UpstreamStream,
    translator: StreamTranslator,
    *,
    ping_interval: float,
    idle_timeout: float,
    on_error: Any,
) -> None:
    """Forward ``upstream`` through ``translator`` until the stream ends.

    The response head must already be started. ``on_error(error)`` is called
    once for an upstream failure (for metrics) before its SSE event is sent.
    """
    now = trio.current_time()
    activity = _Activity(now, now)
    write_lock = trio.Lock()
    timed_out: list[ApiError] = []

    try:
        async with trio.open_nursery() as nursery:
            relay_scope = trio.CancelScope()
            nursery.start_soon(
                _watch_silence, responder, activity, write_lock, relay_scope, timed_out,
                ping_interval, idle_timeout,
            )
            with relay_scope:
                await _relay(
                    responder, outcome, upstream, translator, activity, write_lock, on_error
                )
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The watchdog never raises, so a group holds the relay's one error
        # (a client gone, a broken upstream, a cancellation): callers handle
        # that error by its own type.
        raise _only_error(group) from None

    if timed_out:
        error = timed_out[0]
        outcome.error_type = "timeout"
        on_error(error)
        await end_stream_with(responder, outcome, error)


async def _relay(
    responder: Responder,
    outcome: Outcome,
    upstream: UpstreamStream,
    translator: StreamTranslator,
    activity: _Activity,
    write_lock: trio.Lock,
    on_error: Any,
) -> None:
    observer = outcome.observer
    while True:
        data = await upstream.receive_some()
        activity.last_read = trio.current_time()

        if not data:
            error = translator.close()
            async with write_lock:
                if error is not None:
                    outcome.error_type = getattr(error, "metric_error_type", "stream_error")
                    on_error(error)
                    await end_stream_with(responder, outcome, error)
                else:
                    await complete(responder, outcome)
            return

        chunk = translator.feed(data)
        # Lock.acquire always yields to the scheduler, even when the lock is
        # free, which it nearly always is (the watchdog writes only after a
        # silence); the read and the write already checkpoint.
        try:
            write_lock.acquire_nowait()
        except trio.WouldBlock:
            await write_lock.acquire()
        try:
            if chunk.sse:
                if outcome.first_content_at is None and observer.content_started:
                    outcome.first_content_at = activity.last_read
                await responder.send_data(chunk.sse)
                activity.last_write = trio.current_time()
            if chunk.error is not None:
                outcome.status = chunk.error.status
                outcome.error_type = getattr(chunk.error, "metric_error_type", "stream_error")
                on_error(chunk.error)
                await complete(responder, outcome)
                return
            if chunk.finished:
                await complete(responder, outcome)
        finally:
            write_lock.release()
        if chunk.finished:
            await drain(upstream)
            return


async def _watch_silence(
    responder: Responder,
    activity: _Activity,
    write_lock: trio.Lock,
    relay_scope: trio.CancelScope,
    timed_out: list[ApiError],
    ping_interval: float,
    idle_timeout: float,
) -> None:
    while True:
        next_ping = max(activity.last_read, activity.last_write) + ping_interval
        await trio.sleep_until(min(next_ping, activity.last_read + idle_timeout))
        now = trio.current_time()
        silent_for = now - activity.last_read
        if silent_for >= idle_timeout:
            async with write_lock:
                timed_out.append(
                    ApiError(
                        504,
                        f"Bedrock sent nothing for {silent_for:.0f} seconds; the stream was ended",
                        "timeout_error",
                    )
                )
                relay_scope.cancel()
            return
        if now - max(activity.last_read, activity.last_write) >= ping_interval:
            async with write_lock:
                await responder.send_data(PING_EVENT)
                activity.last_write = trio.current_time()


def _only_error(group: BaseExceptionGroup) -> BaseException:
    leaves = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    if len(leaves) == 1:
        return leaves[0]
    return group


async def end_stream_with(responder: Responder, outcome: Outcome, error: ApiError) -> None:
    """End a stream that already started with one SSE ``error`` event."""
    outcome.status = error.status
    await responder.send_data(error.sse_event())
    await complete(responder, outcome)


async def complete(responder: Responder, outcome: Outcome) -> None:
    """Send the end of the response and note when the client had it all."""
    await responder.end_response()
    outcome.completed_at = trio.current_time()


async def drain(upstream: UpstreamStream) -> None:
    """Read what follows the end of the stream, so the connection can be reused.

    A response read to its end goes back to the pool; one abandoned early is
    closed, which would cost every streamed request a new TCP and TLS
    handshake with Bedrock.
    """
    with trio.move_on_after(DRAIN_TIMEOUT):
        while await upstream.receive_some():
            pass
