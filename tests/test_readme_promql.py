"""The PromQL panels in the README work as written, on a real Prometheus.

The queries are read from the README itself, so the documentation cannot
drift from what is tested: each must be accepted by Prometheus and, after a
mix of traffic (successes, a throttle, streamed requests), return data.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from ccag.simulator import Fail
from tests.e2e_client import message_body, post_messages, request
from tests.gateway_fixture import open_gateway
from tests.prometheus_fixture import running_prometheus

README = Path(__file__).resolve().parent.parent / "README.rst"
TIMEOUT_S = 60


def readme_panels() -> list[str]:
    """Every query of the README's "Panels" block (comment lines skipped)."""
    text = README.read_text()
    block = text[text.index("Panels (") :].split("::", 1)[1]
    queries = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith(" "):
            break
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            queries.append(stripped)
    return queries


def test_the_readme_has_the_panels_the_issue_asks_for() -> None:
    panels = readme_panels()
    assert len(panels) == 7
    assert any("ccag_bedrock_throttles_total" in query for query in panels)
    assert any("ccag_request_ttft_ms_bucket" in query for query in panels)


async def test_every_readme_panel_returns_data_from_a_real_prometheus(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            login = await request(
                running.port,
                "POST",
                "/auth/login",
                headers=[("content-type", "application/json")],
                body=json.dumps({"username": "admin", "password": "test-admin-password"}).encode(),
            )
            token = login.json()["token"]

            async with running_prometheus(f"127.0.0.1:{running.port}", token=token) as prometheus:
                # Traffic across several scrapes after the first one, so that
                # every rate() has two points that differ.
                await prometheus.wait_for_value("ccag_requests_in_flight", "0")
                for round_ in range(4):
                    running.simulator.script(Fail("ThrottlingException", 429, "slow down"))
                    await post_messages(running.port, running.key, message_body())
                    for _ in range(3):
                        await post_messages(running.port, running.key, message_body())
                        await post_messages(
                            running.port, running.key, message_body(stream=True)
                        )
                    await trio.sleep(1.2)

                results = {}
                for query in readme_panels():
                    with trio.fail_after(15):
                        while True:
                            result = await prometheus.query(query)
                            if result:
                                break
                            await trio.sleep(0.5)
                    results[query] = result

    assert len(results) == 7
    in_flight = results["ccag_requests_in_flight"]
    assert in_flight[0]["value"][1] == "0"
    throttles = next(r for q, r in results.items() if "throttles" in q)
    assert throttles[0]["metric"]["endpoint_id"] == "default"
    assert float(throttles[0]["value"][1]) > 0
