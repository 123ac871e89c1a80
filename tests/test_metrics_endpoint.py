"""GET /metrics served by ccag.server: admin-only, and scraped by a real Prometheus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from prometheus_client.parser import text_string_to_metric_families

from ccag.api.metrics import metrics_handler
from ccag.auth.errors import AuthError
from ccag.config import load_config
from ccag.errors import ApiError
from ccag.server import Headers, Request, Responder, serve
from ccag.telemetry import Telemetry
from tests.prometheus_fixture import running_prometheus

ADMIN_TOKEN = "ccag-test-admin-token"
USER_TOKEN = "ccag-test-user-token"
MODELS = ["claude-sonnet-4-5"]


def fake_authorize_admin(headers: Headers, now: float) -> str:
    """Accepts one admin token; another known token is a non-admin."""
    assert now > 1_600_000_000  # a wall-clock time, as sessions expect
    authorization = headers.get("authorization")
    if authorization is None:
        raise AuthError(401, "no credentials", "missing_key")
    if authorization == f"Bearer {USER_TOKEN}":
        raise AuthError(403, "not an admin", "not_admin")
    if authorization != f"Bearer {ADMIN_TOKEN}":
        raise AuthError(401, "unknown token", "invalid_key")
    return "admin"


@asynccontextmanager
async def serving_metrics(telemetry: Telemetry) -> AsyncIterator[int]:
    async def handler(request: Request, responder: Responder) -> None:
        await metrics_handler(
            request, responder, telemetry=telemetry, authorize_admin=fake_authorize_admin
        )

    config = load_config(flags={"host": "127.0.0.1", "port": 0}, environ={})
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, handler, config)
        yield port
        nursery.cancel_scope.cancel()


async def http_get(port: int, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
        if token is not None:
            head += f"authorization: Bearer {token}\r\n"
        await stream.send_all((head + "\r\n").encode())
        raw = b""
        while chunk := await stream.receive_some(65536):
            raw += chunk
    header_block, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        raise AssertionError("expected a content-length response")
    return int(status_line.split()[1]), headers, body


def auth_failures(telemetry: Telemetry) -> dict[str, float]:
    body, _ = telemetry.render_prometheus()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "ccag_auth_failures_total"
    }


async def test_metrics_endpoint_needs_an_admin_and_counts_refusals() -> None:
    telemetry = Telemetry({}, MODELS, ["default"])
    with trio.fail_after(10):
        async with serving_metrics(telemetry) as port:
            missing = await http_get(port, "/metrics", None)
            user = await http_get(port, "/metrics", USER_TOKEN)
            wrong = await http_get(port, "/metrics", "nope")
            admin = await http_get(port, "/metrics", ADMIN_TOKEN)

    assert missing[0] == 401
    assert missing[1]["content-type"] == "application/json"
    assert b'"authentication_error"' in missing[2]
    assert user[0] == 403
    assert b'"permission_error"' in user[2]
    assert wrong[0] == 401
    assert admin[0] == 200
    assert admin[1]["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE ccag_auth_failures_total counter" in admin[2]
    assert b'ccag_auth_failures_total{reason="not_admin"} 1.0' in admin[2]
    assert auth_failures(telemetry) == {"missing_key": 1, "not_admin": 1, "invalid_key": 1}


async def test_metrics_endpoint_store_outage_is_not_an_auth_failure() -> None:
    telemetry = Telemetry({}, MODELS, ["default"])

    async def store_down(headers: Headers, now: float) -> str:
        raise ApiError(503, "the store is unavailable")

    async def handler(request: Request, responder: Responder) -> None:
        await metrics_handler(request, responder, telemetry=telemetry, authorize_admin=store_down)

    config = load_config(flags={"host": "127.0.0.1", "port": 0}, environ={})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, handler, config)
            status, _, body = await http_get(port, "/metrics", ADMIN_TOKEN)
            nursery.cancel_scope.cancel()

    assert status == 503
    assert b"the store is unavailable" in body
    assert auth_failures(telemetry) == {}


async def test_metrics_endpoint_scraped_by_prometheus_reads_back_exactly() -> None:
    telemetry = Telemetry({}, MODELS, ["default"])
    for duration in (40.0, 800.0, 1261.5):
        telemetry.request_started()
        telemetry.request_finished("claude-sonnet-4-5", True, 200, duration, 35.0)
        telemetry.usage("claude-sonnet-4-5", 1000, 250, 7000, 12)
    telemetry.request_started()
    telemetry.tool_calls(["mcp__jira__create_issue"])
    request = 'model="claude-sonnet-4-5",streaming="true",status="200"'

    with trio.fail_after(60):
        async with (
            serving_metrics(telemetry) as port,
            running_prometheus(f"127.0.0.1:{port}", token=ADMIN_TOKEN) as prometheus,
        ):
            await prometheus.wait_for_value('up{job="ccag"}', "1", timeout=30)
            await prometheus.wait_for_value(f"ccag_requests_total{{{request}}}", "3")
            await prometheus.wait_for_value(f"ccag_request_duration_ms_sum{{{request}}}", "2101.5")
            await prometheus.wait_for_value(f'ccag_request_duration_ms_bucket{{{request},le="1000.0"}}', "2")
            await prometheus.wait_for_value(f'ccag_request_duration_ms_bucket{{{request},le="+Inf"}}', "3")
            await prometheus.wait_for_value('ccag_request_ttft_ms_bucket{le="50.0"}', "3")
            await prometheus.wait_for_value("ccag_requests_in_flight", "1")
            await prometheus.wait_for_value('ccag_tokens_input_total{model="claude-sonnet-4-5"}', "3000")
            await prometheus.wait_for_value('ccag_tokens_cache_read_total{model="claude-sonnet-4-5"}', "21000")
            await prometheus.wait_for_value('ccag_tool_calls_total{type="mcp"}', "1")
            await prometheus.wait_for_value("ccag_web_searches_total", "0")

            # Values that move after the first scrapes are seen too.
            telemetry.web_search(5)
            telemetry.request_finished("claude-sonnet-4-5", True, 200, 5.0, None)
            await prometheus.wait_for_value("ccag_web_searches_total", "5")
            await prometheus.wait_for_value(f"ccag_requests_total{{{request}}}", "4")
            await prometheus.wait_for_value("ccag_requests_in_flight", "0")

            # Prometheus authenticated on every scrape.
            assert auth_failures(telemetry) == {}
