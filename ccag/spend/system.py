"""Rate limits, spend records and budgets, wired together for one gateway.

:class:`SpendSystem` is what the request path and the admin API use:
:meth:`~SpendSystem.admit` before the upstream call (budgets, then rate
limits; memory only), :meth:`~SpendSystem.sink` when a request ends (one spend
record; its tokens count against the token windows and its cost against the
budgets), and :meth:`~SpendSystem.run` for the background loops (batched
writes, webhook delivery, a periodic reload of overrides, prices and budget
totals from the store).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ccag.api.outcome import Outcome
from ccag.bedrock.facts import model_facts_from, shipped_models
from ccag.errors import ApiError
from ccag.ratelimit import Limits, RateLimiter
from ccag.spend import budgets as budget_store
from ccag.spend.budgets import Admission, BudgetTracker, Notice, period_bounds
from ccag.spend.limits import load_limits
from ccag.spend.pricing import PriceTable, load_overrides
from ccag.spend.recorder import SpendRecord, SpendRecorder
from ccag.spend.webhooks import WebhookSender
from ccag.store import Connection, Store, StoreError, parse_store_url

logger = logging.getLogger(__name__)

QUARANTINE_SUFFIX = ".spend-quarantine.jsonl"


def quarantine_path(config: Any) -> str:
    """Where poison records go: the setting, else next to the SQLite file,
    else in the per-user data directory."""
    if config.spend_quarantine_file:
        return str(config.spend_quarantine_file)
    backend, target = parse_store_url(config.resolved_store)
    if backend == "sqlite" and target != ":memory:":
        return target + QUARANTINE_SUFFIX
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "ccag", "spend-quarantine.jsonl")


class SpendSystem:
    """Everything about who may spend what, for one gateway.

    Args:
        config: ``key_*_limit``, ``team_*_limit``, ``gateway_instances``,
            ``spend_*`` and ``budget_webhook_url`` settings.
        store: the shared store.
        telemetry: counts rate-limit refusals, flush errors, quarantines.
        prices: the price table.
        clock: Unix time for records and budget periods (tests replace
            :attr:`clock`).
    """

    def __init__(
        self,
        config: Any,
        store: Store,
        telemetry: Any,
        prices: PriceTable,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.telemetry = telemetry
        self.prices = prices
        self.clock = clock
        self.limiter = RateLimiter(
            Limits(config.key_rpm_limit, config.key_tpm_limit),
            Limits(config.team_rpm_limit, config.team_tpm_limit),
            instances=config.gateway_instances,
        )
        self.recorder = SpendRecorder(
            store,
            telemetry,
            quarantine_path(config),
            batch_size=config.spend_batch_size,
            flush_interval=config.spend_flush_interval,
        )
        self.webhooks = WebhookSender(self._claim_notice)
        self.budgets = BudgetTracker(lambda: self.clock(), self._notice)
        self._is_refresh_failing = False

    # -- the request path -----------------------------------------------------

    def admit(self, principal: Any) -> list[tuple[str, str]]:
        """Admit a request or refuse it with 429; memory only.

        Returns:
            The budget headers for the response (empty without budgets).

        Raises:
            ApiError: 429 ``rate_limit_error`` with ``retry-after``: a
                blocking budget is used up, or a rate limit is reached (counted
                in ``ccag.rate_limits.total``).
        """
        admission: Admission = self.budgets.admit(principal.user, principal.team)
        refusal = self.limiter.check(
            principal.key_id,
            principal.key_name,
            principal.team,
            trio.current_time(),
            admission.extra_rpm,
        )
        if refusal is None:
            return admission.headers
        self.telemetry.rate_limited()
        raise ApiError(
            429,
            refusal.message,
            "rate_limit_error",
            # A throttled budget's refusal carries that budget's headers.
            [
                ("retry-after", str(refusal.retry_after)),
                # A limit of 0 admits nothing, however long the client waits.
                *([("x-should-retry", "false")] if refusal.limit == 0 else []),
                *admission.refusal_headers.get(refusal.subject, admission.headers),
            ],
        )

    def sink(self, outcome: Outcome) -> None:
        """Record a finished ``/v1/messages`` request (a :class:`Services` sink)."""
        usage = outcome.observer.usage
        has_tokens = (
            usage.input_tokens
            or usage.output_tokens
            or usage.cache_read_tokens
            or usage.cache_write_tokens
        )
        if outcome.key_id is None or outcome.bedrock_model_id is None:
            return
        if not has_tokens and outcome.error_type is None and outcome.status != 200:
            # Refused here before any model call (a request Bedrock never saw).
            return

        ended_at = (
            outcome.completed_at
            if outcome.completed_at is not None
            else trio.current_time()
        )
        ttft_ms = None
        if outcome.first_content_at is not None:
            ttft_ms = (outcome.first_content_at - outcome.started_at) * 1000.0
        price = self.prices.price(outcome.model_label)
        # One record per model call: a web search request makes several
        # (ccag.websearch), each observed on its own in outcome.model_calls.
        calls = outcome.model_calls if len(outcome.model_calls) > 1 else [outcome.observer]
        for call in calls:
            self._add_call(outcome, call.usage, call.tool_calls, price, ended_at, ttft_ms)

    def _add_call(
        self,
        outcome: Outcome,
        usage: Any,
        tools: list[str],
        price: Any,
        ended_at: float,
        ttft_ms: float | None,
    ) -> None:
        record = SpendRecord.create(
            at=self.clock(),
            model=outcome.model_label,
            status=outcome.status,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_usd=price.cost(
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.cache_write_1h_tokens,
            ),
            duration_ms=(ended_at - outcome.started_at) * 1000.0,
            ttft_ms=ttft_ms,
            tools=tools,
            endpoint=outcome.endpoint,
            request_id=outcome.request_id,
            key_id=outcome.key_id,
            key_name=outcome.key_name,
            user_name=outcome.user,
            team_name=outcome.team,
            requested_model=outcome.requested_model,
            bedrock_model_id=outcome.bedrock_model_id,
        )
        self.add(record)

    def add(self, record: SpendRecord) -> None:
        """Record one model call: buffered for the store, counted against the
        key's and team's token windows and the budgets.

        Code that makes extra model calls for one request (web search) builds
        a record per call with :meth:`SpendRecord.create` (priced with
        :attr:`prices`) and adds it here.
        """
        self.recorder.add(record)
        self.limiter.record_tokens(
            record.key_id,
            record.team_name,
            record.input_tokens + record.output_tokens,
            trio.current_time(),
        )
        self.budgets.add(record.user_name, record.team_name, record.cost_usd, record.at)

    # -- loading and the background loops -------------------------------------

    async def refresh(self) -> None:
        """Reload limit and price overrides, budgets and their totals.

        Raises:
            StoreError: the store could not be read; the old state stays.
        """
        now = self.clock()

        def read(connection: Connection) -> tuple[Any, ...]:
            limits = load_limits(connection)
            overrides = load_overrides(connection)
            budgets = budget_store.load_budgets(connection)
            totals: dict[tuple[str, float], float] = {}
            for budget in budgets:
                start, end = period_bounds(budget.period, now)
                totals[(budget.id, start)] = budget_store.spent_in_period(
                    connection, budget, start, end
                )
            return limits, overrides, budgets, totals

        limits, overrides, budgets, totals = await self.store.run(read, readonly=True)

        # Records not yet in the store are this gateway's own: add them.
        for record in self.recorder.pending():
            for budget in budgets:
                subject = (
                    record.user_name if budget.scope == "user" else record.team_name
                )
                start, _ = period_bounds(budget.period, record.at)
                if subject == budget.name and (budget.id, start) in totals:
                    totals[(budget.id, start)] += record.cost_usd

        self.limiter.set_overrides(limits)
        self.prices.set_overrides(overrides)
        self.budgets.replace(budgets, totals)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the flush, webhook and refresh loops until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.recorder.run_flush_loop)
            await nursery.start(self.webhooks.run)
            nursery.start_soon(self._refresh_loop)
            task_status.started()

    async def _refresh_loop(self) -> None:
        while True:
            await trio.sleep(self.config.spend_refresh)
            try:
                await self.refresh()
            except StoreError as exc:
                if not self._is_refresh_failing:
                    logger.error(
                        "cannot reload limits, prices and budgets; keeping the last: %s",
                        exc,
                    )
                self._is_refresh_failing = True
                continue
            if self._is_refresh_failing:
                logger.warning("limits, prices and budgets reload again")
            self._is_refresh_failing = False

    async def aclose(self) -> None:
        """Write every buffered record (see :meth:`SpendRecorder.aclose`)."""
        await self.recorder.aclose()

    # -- notices --------------------------------------------------------------

    def _notice(self, notice: Notice) -> None:
        url = notice.budget.webhook_url or self.config.budget_webhook_url
        if url:
            self.webhooks.enqueue(url, notice)

    async def _claim_notice(self, notice: Notice) -> bool:
        now = self.clock()
        return await self.store.run(
            lambda connection: budget_store.claim_notice(connection, notice, now)
        )


async def start_spend_system(
    config: Any,
    store: Store,
    telemetry: Any,
    extra_models: Mapping[str, Any] | None,
    nursery: trio.Nursery,
) -> SpendSystem:
    """Build the spend system, load its state from the store, start its loops.

    Args:
        extra_models: the operator's models file (``config.models_file``), whose
            prices extend and replace the shipped ones.
    """
    models = dict(shipped_models())
    for name, entry in (extra_models or {}).items():
        if not name.startswith("_"):
            models[name] = model_facts_from(name, entry)
    spend = SpendSystem(config, store, telemetry, PriceTable(models))
    await spend.refresh()
    await nursery.start(spend.run)
    return spend
