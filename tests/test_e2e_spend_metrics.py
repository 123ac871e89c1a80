"""The spend tracker's two failure counters move through a real gateway."""

from __future__ import annotations

import trio

from tests.e2e_client import message_body, post_messages
from tests.gateway_fixture import open_gateway

TIMEOUT_S = 30
FAST_FLUSH = {"spend_flush_interval": 0.2}


def counter(running, name: str) -> float:
    exposition = running.telemetry.render_prometheus()[0].decode()
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exposed")


async def wait_for(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_a_store_that_cannot_be_written_counts_flush_errors(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, settings=FAST_FLUSH) as running:
            assert counter(running, "ccag_spend_flush_errors_total") == 0
            await running.gateway.store.aclose()
            reply = await post_messages(running.port, running.key, message_body())
            await wait_for(lambda: counter(running, "ccag_spend_flush_errors_total") >= 1)

    assert reply.status == 200


async def test_a_record_the_store_refuses_is_quarantined_and_counted(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, settings=FAST_FLUSH) as running:
            assert counter(running, "ccag_spend_records_quarantined_total") == 0
            # A trigger that refuses every new row stands in for a record the
            # store rejects on its own while it keeps answering.
            await running.gateway.store.run(
                lambda connection: connection.execute(
                    "CREATE TRIGGER refuse_spend BEFORE INSERT ON spend_records "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
            reply = await post_messages(running.port, running.key, message_body())
            await wait_for(lambda: counter(running, "ccag_spend_records_quarantined_total") >= 1)

    quarantine = tmp_path / "ccag.sqlite3.spend-quarantine.jsonl"
    assert reply.status == 200
    assert quarantine.exists() and "claude-sonnet-4-5" in quarantine.read_text()
