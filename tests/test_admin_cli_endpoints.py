"""``ccag admin endpoints list`` shows in its table what ``--json`` returns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.admin_fixture import ccag_admin, login
from tests.e2e_client import message_body, post_messages
from tests.gateway_fixture import open_gateway

TIMEOUT = 30


async def test_endpoints_list_table_shows_every_value_the_json_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            # One request so the latency average has a value.
            reply = await post_messages(running.port, running.key, message_body())
            assert reply.status == 200
            conn = ["--url", running.url, "--token", await login(running.port)]

            status, out, err = await ccag_admin(capsys, ["endpoints", "list", "--json", *conn])
            assert status == 0, err
            endpoint = json.loads(out)["endpoints"][0]
            status, out, err = await ccag_admin(capsys, ["endpoints", "list", *conn])

    assert status == 0, err
    header, row = out.splitlines()[:2]
    titles = [title.strip() for title in header.split("  ") if title.strip()]
    cells = row.split()
    assert len(cells) == len(titles)
    shown = dict(zip(titles, cells))
    assert shown["ID"] == endpoint["id"]
    assert shown["GEO"] == str(endpoint["geo_prefix"])
    assert shown["RECENT THROTTLES"] == str(endpoint["recent_throttles"])
    assert shown["TTFB MS"] == str(endpoint["ttfb_ewma_ms"])
    assert "-" not in (shown["GEO"], shown["RECENT THROTTLES"], shown["TTFB MS"])
