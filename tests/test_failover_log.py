"""What an operator reads in the log when an endpoint cannot be reached."""

from __future__ import annotations

import logging

import trio

from ccag.simulator import Reset
from tests.e2e_client import message_body, post_messages
from tests.endpoints_fixture import SimEndpoint, open_endpoints

TIMEOUT_S = 30


async def test_a_failed_attempt_logs_its_cause_and_the_client_sees_none_of_it(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="ccag")
    endpoints = [SimEndpoint("first", priority=1), SimEndpoint("second", priority=2)]
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, endpoints) as running:
            # Reset before any response, on both: nothing left to fail over to.
            running.simulators["first"].script(Reset())
            running.simulators["second"].script(Reset())
            reply = await post_messages(running.port, running.key, message_body())

    assert 500 <= reply.status <= 599
    message = reply.json()["error"]["message"]
    warnings = [
        record.getMessage() for record in caplog.records
        if record.levelno == logging.WARNING and "failed for" in record.getMessage()
    ]
    assert len(warnings) == 2, warnings
    for endpoint_id, line in zip(("first", "second"), warnings, strict=True):
        assert line.startswith(f"endpoint {endpoint_id} failed for claude-sonnet-4-5")
        # The cause: the exception and what the connection said.
        assert "Upstream" in line and ":" in line.split(")", 1)[1], line
    # The client's message stays generic: no exception names, no addresses.
    assert "Upstream" not in message and "127.0.0.1" not in message
