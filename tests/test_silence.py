"""SilenceWatch: pings and idle timeouts for every relayed stream from one task.

Driven with Trio's MockClock, so intervals are exact and the tests are fast;
the gateway-level behaviour (pings on the wire, the SSE error at the idle
timeout) is tested end to end in tests/test_e2e_faults.py.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ccag.api.silence import PING_EVENT, SilenceWatch
from ccag.errors import ClientDisconnected

PING_INTERVAL = 1.0
IDLE_TIMEOUT = 5.0


class RecordingResponder:
    """Collects what is written, with the (mock) time of each write."""

    def __init__(self, *, block_writes: bool = False, fail: bool = False) -> None:
        self.writes: list[tuple[float, bytes]] = []
        self._block_writes = block_writes
        self._fail = fail

    async def send_data(self, data: bytes) -> None:
        if self._fail:
            raise ClientDisconnected("gone")
        if self._block_writes:
            await trio.sleep_forever()
        self.writes.append((trio.current_time(), data))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_stream_waiting_for_upstream_gets_a_ping_each_interval(autojump_clock) -> None:
    watch = SilenceWatch(PING_INTERVAL, IDLE_TIMEOUT)
    responder = RecordingResponder()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        started = trio.current_time()
        stream = watch.watch(responder, trio.Lock())
        stream.reading = True
        await trio.sleep(3.5)
        watch.forget(stream)
        nursery.cancel_scope.cancel()

    assert [data for _, data in responder.writes] == [PING_EVENT] * 3
    offsets = [when - started for when, _ in responder.writes]
    # Each ping at most one tick (a tenth of the interval) after it is due.
    for number, offset in enumerate(offsets, start=1):
        assert number * PING_INTERVAL <= offset <= number * PING_INTERVAL + watch.tick + 1e-9


async def test_no_ping_while_the_relay_is_busy_or_holds_the_write_lock(autojump_clock) -> None:
    watch = SilenceWatch(PING_INTERVAL, IDLE_TIMEOUT)
    busy = RecordingResponder()
    locked = RecordingResponder()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        not_reading = watch.watch(busy, trio.Lock())
        lock = trio.Lock()
        holding = watch.watch(locked, lock)
        holding.reading = True
        await lock.acquire()
        await trio.sleep(3 * PING_INTERVAL)
        lock.release()
        await trio.sleep(PING_INTERVAL / 2)
        watch.forget(not_reading)
        watch.forget(holding)
        nursery.cancel_scope.cancel()

    assert busy.writes == []
    # Once the lock is free again the overdue ping goes out, once.
    assert [data for _, data in locked.writes] == [PING_EVENT]


async def test_silence_past_the_idle_timeout_cancels_the_waiting_relay(autojump_clock) -> None:
    watch = SilenceWatch(PING_INTERVAL, IDLE_TIMEOUT)
    responder = RecordingResponder()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        stream = watch.watch(responder, trio.Lock())
        started = trio.current_time()
        with stream.scope:
            stream.reading = True
            await trio.sleep_forever()
        ended = trio.current_time()
        watch.forget(stream)
        nursery.cancel_scope.cancel()

    assert stream.timed_out is not None
    assert stream.timed_out.status == 504
    assert stream.timed_out.error_type == "timeout_error"
    assert IDLE_TIMEOUT <= ended - started <= IDLE_TIMEOUT + watch.tick + 1e-9
    assert watch.watched_count == 0


async def test_forget_cancels_a_ping_stuck_on_a_slow_client(autojump_clock) -> None:
    watch = SilenceWatch(PING_INTERVAL, IDLE_TIMEOUT)
    responder = RecordingResponder(block_writes=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        stream = watch.watch(responder, trio.Lock())
        stream.reading = True
        await trio.sleep(PING_INTERVAL * 1.5)
        assert stream.ping_scope is not None  # a ping task is blocked in its write
        assert stream.write_lock.locked()

        watch.forget(stream)
        await trio.sleep(watch.tick)

        assert stream.ping_scope is None
        assert not stream.write_lock.locked()
        nursery.cancel_scope.cancel()


async def test_a_ping_to_a_client_that_is_gone_is_dropped_quietly(autojump_clock) -> None:
    watch = SilenceWatch(PING_INTERVAL, IDLE_TIMEOUT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        stream = watch.watch(RecordingResponder(fail=True), trio.Lock())
        stream.reading = True
        await trio.sleep(PING_INTERVAL * 2.5)
        # The watcher survived the failed writes and still watches the stream.
        assert watch.watched_count == 1
        watch.forget(stream)
        nursery.cancel_scope.cancel()


def test_the_tick_is_a_tenth_of_the_shortest_interval_within_bounds() -> None:
    assert SilenceWatch(10.0, 300.0).tick == pytest.approx(1.0)
    assert SilenceWatch(0.2, 0.5).tick == pytest.approx(0.02)
    assert SilenceWatch(0.001, 0.5).tick == pytest.approx(0.005)
    assert SilenceWatch(60.0, 600.0).tick == pytest.approx(1.0)
