"""Spend records: one per model call, buffered in memory, written in batches.

Theory of operation: :meth:`SpendRecorder.add` appends a record to a buffer
and returns at once (the request path never waits on the database). A
background loop writes the buffer in batches of ``batch_size`` every
``flush_interval`` seconds, or as soon as a batch is full. A batch is one
transaction of ``INSERT ... ON CONFLICT DO NOTHING`` keyed by the record's
own id, so retrying a batch whose commit outcome was unknown never counts a
call twice.

When a batch fails, it is retried row by row. A row the store refuses while
the store otherwise answers (a constraint, a value out of range) is a poison
record: it is quarantined, appended as a JSON line to the quarantine file,
and counted in ``ccag.spend_records_quarantined.total``. When the store does
not answer at all, the flush counts in ``ccag.spend_flush_errors.total``,
every record stays buffered and the loop retries with exponential back-off.
:meth:`SpendRecorder.aclose` writes what is left at shutdown; what the store
cannot take then goes to the quarantine file, so a graceful stop loses
nothing, and a crash loses at most one flush interval of records.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from ccag.store import Connection, Store, StoreError

logger = logging.getLogger(__name__)

# Back-off after a failed flush: doubles from the first delay up to the cap,
# so a store that is down for an hour costs a retry every half minute, not
# a busy loop.
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0

# Records kept while the store is down. At a few hundred bytes each this is
# tens of megabytes; beyond it the oldest records go to the quarantine file
# rather than grow memory without end.
MAX_BUFFERED_RECORDS = 200_000

# Tool names kept per record: enough for any real turn, bounded against a
# reply that calls thousands of tools.
MAX_TOOL_NAMES = 64

# Seconds the final flush at shutdown may take before the rest is
# quarantined, so a dead store cannot hold up the exit.
SHUTDOWN_FLUSH_SECONDS = 10.0

COLUMNS = (
    "id",
    "at",
    "day",
    "request_id",
    "key_id",
    "key_name",
    "user_name",
    "team_name",
    "endpoint",
    "requested_model",
    "model",
    "bedrock_model_id",
    "status",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "duration_ms",
    "ttft_ms",
    "tool_calls",
    "tool_names",
    "cost_usd",
)

_INSERT = (
    f"INSERT INTO spend_records ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)


def utc_day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


@attrs.frozen
class SpendRecord:
    """One model call, as stored: who, which model, how many tokens, what cost.

    Never any prompt or response text. ``tool_names`` are the names of the
    tools the model called (bounded); ``tool_calls`` is how many it called.
    """

    id: str
    at: float
    day: str
    request_id: str | None
    key_id: str | None
    key_name: str | None
    user_name: str | None
    team_name: str | None
    endpoint: str
    requested_model: str | None
    model: str
    bedrock_model_id: str | None
    status: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    duration_ms: float
    ttft_ms: float | None
    tool_calls: int
    tool_names: str
    cost_usd: float

    @classmethod
    def create(
        cls,
        *,
        at: float,
        model: str,
        status: int,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cost_usd: float = 0.0,
        duration_ms: float = 0.0,
        ttft_ms: float | None = None,
        tools: Iterable[str] = (),
        endpoint: str = "messages",
        request_id: str | None = None,
        key_id: str | None = None,
        key_name: str | None = None,
        user_name: str | None = None,
        team_name: str | None = None,
        requested_model: str | None = None,
        bedrock_model_id: str | None = None,
    ) -> SpendRecord:
        """A new record with a fresh id (for every model call, including the
        extra calls one request makes, such as web search rounds)."""
        names = list(tools)
        return cls(
            id="spend_" + secrets.token_hex(12),
            at=at,
            day=utc_day(at),
            request_id=request_id,
            key_id=key_id,
            key_name=key_name,
            user_name=user_name,
            team_name=team_name,
            endpoint=endpoint,
            requested_model=requested_model,
            model=model,
            bedrock_model_id=bedrock_model_id,
            status=status,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            duration_ms=duration_ms,
            ttft_ms=ttft_ms,
            tool_calls=len(names),
            tool_names=",".join(names[:MAX_TOOL_NAMES]),
            cost_usd=cost_usd,
        )

    def row(self) -> tuple[Any, ...]:
        return attrs.astuple(self)

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))


def insert_records(connection: Connection, records: Iterable[SpendRecord]) -> None:
    for record in records:
        connection.execute(_INSERT, record.row())


class SpendRecorder:
    """The buffer and the loop that writes it.

    Args:
        store: where records go.
        telemetry: counts flush errors and quarantined records.
        quarantine_path: the JSON-lines file poison records are appended to.
        batch_size: records per transaction; a full batch is written at once.
        flush_interval: seconds between writes of a partial batch.
    """

    def __init__(
        self,
        store: Store,
        telemetry: Any,
        quarantine_path: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.quarantine_path = quarantine_path
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self._buffer: collections.deque[SpendRecord] = collections.deque()
        self._in_flight: list[SpendRecord] = []
        self._batch_full = trio.Event()
        self._flush_lock = trio.Lock()
        self._retry_delay = 0.0
        self.written = 0
        self.quarantined = 0

    # -- the request path -----------------------------------------------------

    def add(self, record: SpendRecord) -> None:
        """Queue a record; never blocks, never touches the database."""
        self._buffer.append(record)
        if len(self._buffer) > MAX_BUFFERED_RECORDS:
            overflow = self._buffer.popleft()
            logger.error(
                "spend buffer full (store down?); record %s quarantined", overflow.id
            )
            self._quarantine([overflow], "buffer full")
        if len(self._buffer) >= self.batch_size:
            self._batch_full.set()

    def pending(self) -> list[SpendRecord]:
        """Records not yet known to be in the store (for budget totals)."""
        return [*self._in_flight, *self._buffer]

    # -- the background loop --------------------------------------------------

    async def run_flush_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write batches until cancelled; see the module docstring."""
        task_status.started()
        while True:
            delay = self._retry_delay or self.flush_interval
            with trio.move_on_after(delay):
                if self._retry_delay:
                    await trio.sleep_forever()
                await self._batch_full.wait()
            await self.flush()

    async def flush(self) -> bool:
        """Write everything buffered now.

        Returns:
            True when the buffer was emptied; False when the store is down (the
            records stay buffered and the next try backs off).
        """
        async with self._flush_lock:
            while self._buffer:
                batch = [
                    self._buffer.popleft()
                    for _ in range(min(self.batch_size, len(self._buffer)))
                ]
                self._in_flight = batch
                try:
                    is_written = await self._write_batch(batch)
                except BaseException:
                    # Cancelled mid-write (shutdown): keep the records; the
                    # ids make a second write of a committed batch harmless.
                    self._buffer.extendleft(reversed(batch))
                    raise
                finally:
                    self._in_flight = []
                if not is_written:
                    self._buffer.extendleft(reversed(batch))
                    self.telemetry.spend_flush_error()
                    self._retry_delay = min(
                        MAX_RETRY_SECONDS,
                        max(FIRST_RETRY_SECONDS, self._retry_delay * 2),
                    )
                    return False
            self._batch_full = trio.Event()
            if self._retry_delay:
                logger.warning("spend records are being written again")
            self._retry_delay = 0.0
            return True

    async def _write_batch(self, batch: list[SpendRecord]) -> bool:
        """Write one batch; False if the store is down (nothing lost)."""
        try:
            await self.store.run(lambda connection: insert_records(connection, batch))
            self.written += len(batch)
            return True
        except StoreError as exc:
            batch_error = exc

        # Row by row: find out whether one record is refused or the store is.
        for index, record in enumerate(batch):
            try:
                await self.store.run(
                    functools.partial(insert_records, records=[record])
                )
                self.written += 1
                continue
            except StoreError as exc:
                row_error = exc
            if not await self._store_answers():
                if self._retry_delay == 0.0:
                    logger.error(
                        "cannot write spend records, will retry: %s", batch_error
                    )
                # Keep the rest (the written ones are already out of the batch).
                del batch[:index]
                return False
            logger.error(
                "the store refused spend record %s; quarantined: %s",
                record.id,
                row_error,
            )
            await trio.to_thread.run_sync(self._quarantine, [record], str(row_error))
        batch.clear()
        return True

    async def _store_answers(self) -> bool:
        try:
            await self.store.ping()
            return True
        except StoreError:
            return False

    def _quarantine(self, records: list[SpendRecord], reason: str) -> None:
        lines = "".join(record.to_json() + "\n" for record in records)
        try:
            with open(self.quarantine_path, "a", encoding="utf-8") as file:
                file.write(lines)
        except OSError as exc:
            # The last place left is the log; records hold no prompt text.
            logger.error(
                "cannot append to the spend quarantine file %s (%s); records: %s",
                self.quarantine_path,
                exc.strerror,
                lines.strip(),
            )
        self.quarantined += len(records)
        self.telemetry.spend_quarantined(len(records))
        logger.warning(
            "%d spend record(s) quarantined to %s (%s)",
            len(records),
            self.quarantine_path,
            reason[:200],
        )

    # -- shutdown -------------------------------------------------------------

    async def aclose(self, timeout: float = SHUTDOWN_FLUSH_SECONDS) -> None:
        """Write everything left; quarantine what the store cannot take in time.

        Shielded from cancellation: it runs while the gateway is stopping.
        """
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout):
                deadline = trio.current_time() + timeout
                while self._buffer and trio.current_time() < deadline:
                    if await self.flush():
                        break
                    await trio.sleep(
                        min(self._retry_delay, max(0.0, deadline - trio.current_time()))
                    )
            left = [*self._in_flight, *self._buffer]
            self._buffer.clear()
            if left:
                logger.error(
                    "the store did not take %d spend record(s) at shutdown", len(left)
                )
                self._quarantine(left, "store unavailable at shutdown")
