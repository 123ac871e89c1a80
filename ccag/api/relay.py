"""Relay an upstream stream to the client as SSE, as each read lands.

The relay reads from Bedrock, feeds the bytes to a translator (event stream to
SSE, or SSE to SSE) and writes what comes out. While Bedrock is silent,
:class:`ccag.api.silence.SilenceWatch` (one task for all streams) sends
``ping`` events and, after ``upstream_idle_timeout``, ends the stream with one
SSE ``error`` event. The relay's part of that is cheap: it notes when it
reads and writes, and whether it is waiting in a read.

Why not a timeout around each read: a stream of fifty deltas is fifty reads,
and a cancel scope per read costs more than the rest of the relay's work per
event.

The relay and a ping never write at the same time: every write holds
``write_lock``, and the watcher acts only while the lock is free and the relay
waits for upstream bytes, so a timeout never lands in the middle of a write.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from ccag.api.outcome import Outcome
from ccag.api.silence import PING_EVENT, SilenceWatch, WatchedStream
from ccag.errors import ApiError
from ccag.server.types import Responder

__all__ = ["PING_EVENT", "complete", "end_stream_with", "relay_stream"]


class StreamTranslator(Protocol):
    """Turns upstream bytes into SSE bytes (see ccag.anthropic.stream)."""

    def feed(self, raw: bytes) -> Any: ...

    def close(self) -> ApiError | None: ...


class UpstreamStream(Protocol):
    """A Bedrock response body (ccag.bedrock.client.UpstreamResponse).

    ``reader_done`` is set once the answer has ended: the client that owns
    the connection reads the rest of the body (the chunked terminator) off
    the request's path and pools the connection (ccag.bedrock.drainer).
    """

    reader_done: bool

    async def receive_some(self) -> bytes: ...


async def relay_stream(
    responder: Responder,
    outcome: Outcome,
    upstream: UpstreamStream,
    translator: StreamTranslator,
    *,
    watch: SilenceWatch,
    on_error: Any,
) -> None:
    """Forward ``upstream`` through ``translator`` until the stream ends.

    The response head must already be started. ``on_error(error)`` is called
    once for an upstream failure (for metrics) before its SSE event is sent.
    """
    watched = watch.watch(responder, trio.Lock())
    try:
        with watched.scope:
            await _relay(responder, outcome, upstream, translator, watched, on_error)
    finally:
        watch.forget(watched)

    if watched.timed_out is not None:
        error = watched.timed_out
        outcome.error_type = "timeout"
        on_error(error)
        await end_stream_with(responder, outcome, error)
    elif watched.stopped_by is not None and outcome.completed_at is None:
        # The gateway ends it (shutdown): not a Bedrock failure, not on_error.
        await end_stream_with(responder, outcome, watched.stopped_by)


async def _relay(
    responder: Responder,
    outcome: Outcome,
    upstream: UpstreamStream,
    translator: StreamTranslator,
    watched: WatchedStream,
    on_error: Any,
) -> None:
    observer = outcome.observer
    write_lock = watched.write_lock
    while True:
        watched.reading = True
        data = await upstream.receive_some()
        watched.reading = False
        watched.last_read = trio.current_time()

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
        # free, which it nearly always is (a ping writes only after a
        # silence); the read and the write already checkpoint.
        try:
            write_lock.acquire_nowait()
        except trio.WouldBlock:
            await write_lock.acquire()
        try:
            if chunk.sse:
                if outcome.first_content_at is None and observer.content_started:
                    outcome.first_content_at = watched.last_read
                outcome.final_write = chunk.finished
                await responder.send_data(chunk.sse)
                watched.last_write = trio.current_time()
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
            upstream.reader_done = True
            return
        if watched.stopped_by is not None:
            return


async def end_stream_with(responder: Responder, outcome: Outcome, error: ApiError) -> None:
    """End a stream that already started with one SSE ``error`` event."""
    outcome.status = error.status
    await responder.send_data(error.sse_event())
    await complete(responder, outcome)


async def complete(responder: Responder, outcome: Outcome) -> None:
    """Send the end of the response, noting first that the client has it all.

    The last event is already written: a client that closes as soon as it
    read it (before the end of the chunked body or the HTTP/2 stream) got
    the whole answer, so the request is not counted as abandoned (499).
    """
    outcome.completed_at = trio.current_time()
    await responder.end_response()
