"""Routes and errors as a client sees them, through a real gateway.

Every test starts a simulator and a gateway on loopback (``open_gateway``)
and speaks raw HTTP/1.1 to it, so statuses, content types and the SSE wire
format are asserted exactly as they leave the gateway.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import trio

from ccag.simulator import Fail, Stall, Text
from tests.e2e_client import (
    Exchange,
    assert_error,
    event_payloads,
    flat_snapshot,
    key_headers,
    message_body,
    post_messages,
    request,
    series,
    wait_until_idle,
)
from tests.gateway_fixture import open_gateway

TIMEOUT_S = 20

INVOCATION_METRICS_KEY = b"amazon-bedrock-invocationMetrics"
SONNET_BEDROCK_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


async def test_probe_health_and_ready(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            head = await request(running.port, "HEAD", "/")
            health = await request(running.port, "GET", "/health")
            ready = await request(running.port, "GET", "/ready")

            await running.gateway.store.aclose()
            not_ready = await request(running.port, "GET", "/ready")

    assert head.status == 200
    assert head.body == b""
    assert health.status == 200 and health.json() == {"status": "ok"}
    assert ready.status == 200 and ready.json()["status"] == "ready"
    assert not_ready.status == 503
    document = not_ready.json()
    assert document["status"] == "not ready"
    assert document["store"] != "ok" and document["store"].startswith("unavailable")
    assert document["credentials"] == "ok"


async def test_unknown_paths_and_methods_get_a_json_404(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            replies = [
                await request(running.port, "GET", "/nope"),
                await request(running.port, "GET", "/v1/messages"),
                await request(running.port, "DELETE", "/health"),
                await request(running.port, "POST", "/v1/completions", body=b"{}"),
                await request(running.port, "GET", "/v1/messages/../../etc/passwd"),
            ]

    for reply in replies:
        document = assert_error(reply, 404, "not_found_error")
        assert b"<html" not in reply.body.lower()
        assert document["error"]["message"]


async def test_beta_query_and_trailing_slash_are_tolerated(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            with_query = await post_messages(
                running.port,
                running.key,
                message_body(),
                target="/v1/messages?beta=true",
            )
            with_slash = await post_messages(
                running.port, running.key, message_body(), target="/v1/messages/"
            )
            health = await request(running.port, "GET", "/health/?x=1")

    for reply in (with_query, with_slash):
        assert reply.status == 200, reply.body
        assert reply.json()["type"] == "message"
    assert health.status == 200


async def test_keys_missing_wrong_and_either_header(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            missing = await post_messages(running.port, None, message_body())
            wrong = await post_messages(
                running.port, "sk-ccag-not-a-real-key", message_body()
            )
            wrong_bearer = await post_messages(
                running.port, None, message_body(), ("authorization", "Bearer nope")
            )
            wrong_and_right = await post_messages(
                running.port,
                "sk-ccag-not-a-real-key",
                message_body(),
                ("authorization", f"Bearer {running.key}"),
            )
            bearer_only = await post_messages(
                running.port,
                None,
                message_body(),
                ("authorization", f"Bearer {running.key}"),
            )
            upstream_calls = len(running.simulator.model_requests())

    assert_error(missing, 401, "authentication_error")
    assert_error(wrong, 401, "authentication_error")
    assert_error(wrong_bearer, 401, "authentication_error")
    assert wrong_and_right.status == 200, wrong_and_right.body
    assert bearer_only.status == 200, bearer_only.body
    # Only the two accepted requests reached Bedrock.
    assert upstream_calls == 2


async def test_bad_bodies_are_400_and_never_reach_bedrock(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            port, key = running.port, running.key
            malformed = await post_messages(
                port, key, b'{"model": "claude-sonnet-4-5",'
            )
            not_object = await post_messages(port, key, b"[1, 2]")
            empty = await post_messages(port, key, b"")
            wrong_type = await request(
                port,
                "POST",
                "/v1/messages",
                headers=[("x-api-key", key), ("content-type", "text/plain")],
                body=message_body(),
            )
            no_model = await post_messages(
                port, key, json.dumps({"max_tokens": 5}).encode()
            )
            upstream_calls = len(running.simulator.model_requests())

    for reply in (malformed, not_object, empty, wrong_type, no_model):
        assert_error(reply, 400, "invalid_request_error")
    assert "content-type" in wrong_type.json()["error"]["message"]
    assert upstream_calls == 0


async def test_body_over_the_limit_is_413(tmp_path) -> None:
    limit = 4096
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(
            tmp_path, settings={"max_body_bytes": limit}
        ) as running:
            big = message_body(text="x" * (limit * 2))
            too_large = await post_messages(running.port, running.key, big)
            fits = await post_messages(running.port, running.key, message_body())
            upstream_calls = len(running.simulator.model_requests())
            await wait_until_idle(running.telemetry)
            counted = flat_snapshot(running.telemetry)

    assert_error(too_large, 413, "request_too_large")
    assert fits.status == 200
    assert upstream_calls == 1
    # The server refused it before the route ran; it still counts, once.
    refused = series(
        "ccag.requests.total", model="other", streaming="false", status="413"
    )
    assert counted[refused] == 1
    assert counted[series("ccag.requests.in_flight")] == 0


async def test_unknown_model_is_404_naming_it_with_no_upstream_call(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            reply = await post_messages(
                running.port,
                running.key,
                message_body("claude-imaginary-9"),
            )
            streamed = await post_messages(
                running.port,
                running.key,
                message_body("claude-imaginary-9", stream=True),
            )
            # Model discovery may list profiles; no model may be called.
            upstream = running.simulator.model_requests()

    for each in (reply, streamed):
        document = assert_error(each, 404, "not_found_error")
        assert "claude-imaginary-9" in document["error"]["message"]
    assert upstream == []


async def test_stream_wire_format(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Text("one two three four", deltas=4))
            reply = await post_messages(
                running.port,
                running.key,
                message_body("claude-sonnet-4-5", stream=True),
            )

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert INVOCATION_METRICS_KEY not in reply.body
    events = reply.events()
    payloads = event_payloads(events)
    names = [event.event for event in events]
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"
    assert names.count("message_stop") == 1
    assert "error" not in names
    assert payloads[0]["message"]["model"] == "claude-sonnet-4-5"
    text = "".join(
        p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta"
    )
    assert text == "one two three four"


async def test_stream_head_waits_for_bedrock_a_throttle_is_plain_json(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Fail("ThrottlingException"))
            reply = await post_messages(
                running.port, running.key, message_body(stream=True)
            )
            upstream_calls = len(running.simulator.model_requests())

    document = assert_error(reply, 429, "rate_limit_error")
    assert "text/event-stream" not in reply.headers["content-type"]
    assert int(reply.headers["retry-after"]) >= 0
    assert document["error"]["message"]
    assert upstream_calls == 1


async def test_rejected_beta_is_removed_retried_and_remembered(tmp_path) -> None:
    beta = "interleaved-thinking-2025-05-14"
    options = {"reject_betas": frozenset({beta})}
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, simulator_options=options) as running:
            first = await post_messages(
                running.port,
                running.key,
                message_body(stream=True),
                ("anthropic-beta", beta),
            )
            first_calls = list(running.simulator.model_requests())
            second = await post_messages(
                running.port, running.key, message_body(), ("anthropic-beta", beta)
            )
            all_calls = list(running.simulator.model_requests())

    assert first.status == 200
    assert [event.event for event in first.events()][-1] == "message_stop"
    assert len(first_calls) == 2
    assert beta in first_calls[0].body.get("anthropic_beta", [])
    assert first_calls[0].status == 400
    assert beta not in first_calls[1].body.get("anthropic_beta", [])
    assert first_calls[1].status == 200

    assert second.status == 200
    assert len(all_calls) == 3, "the next request must not try the beta again"
    assert beta not in all_calls[2].body.get("anthropic_beta", [])


async def test_rejected_field_is_removed_retried_and_remembered(tmp_path) -> None:
    field = "context_management"
    beta = "context-management-2025-06-27"
    options = {"reject_fields": frozenset({field})}
    extra: dict[str, Any] = {field: {"edits": [{"type": "clear_tool_uses_20250919"}]}}
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path, simulator_options=options) as running:
            first = await post_messages(
                running.port,
                running.key,
                message_body(**extra),
                ("anthropic-beta", beta),
            )
            first_calls = list(running.simulator.model_requests())
            second = await post_messages(
                running.port,
                running.key,
                message_body(stream=True, **extra),
                ("anthropic-beta", beta),
            )
            all_calls = list(running.simulator.model_requests())

    assert first.status == 200, first.body
    assert len(first_calls) == 2
    assert field in first_calls[0].body and first_calls[0].status == 400
    assert field not in first_calls[1].body and first_calls[1].status == 200
    assert second.status == 200
    assert len(all_calls) == 3
    assert field not in all_calls[2].body


async def test_unnamed_validation_error_goes_to_the_client_after_one_call(
    tmp_path,
) -> None:
    message = "The request is malformed in a way this test does not name."
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Fail("ValidationException", message=message))
            reply = await post_messages(
                running.port, running.key, message_body(stream=True)
            )
            upstream_calls = len(running.simulator.model_requests())

    document = assert_error(reply, 400, "invalid_request_error")
    assert message in document["error"]["message"]
    assert upstream_calls == 1


async def test_stream_head_is_sent_only_after_bedrock_answers(tmp_path) -> None:
    """While Bedrock has not answered, the client has no status line yet."""
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Stall(0.6, answer=Text("late")))
            exchange = await Exchange.open(
                running.port,
                "POST",
                "/v1/messages",
                headers=key_headers(running.key),
                body=message_body(stream=True),
            )
            try:
                started = trio.current_time()
                status, headers = await exchange.head()
                waited = trio.current_time() - started
                body = await exchange.body()
            finally:
                await exchange.aclose()

    assert status == 200
    assert waited >= 0.5
    assert headers["content-type"].startswith("text/event-stream")
    assert b"message_stop" in body


async def test_http2_body_over_the_limit_is_413_and_counted(tmp_path) -> None:
    from tests.test_server_http2 import h2_client

    limit = 4096
    headers = [(name, value) for name, value in key_headers("unused")[1:]]
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(
            tmp_path, settings={"max_body_bytes": limit}
        ) as running:
            async with h2_client(running.port) as client:
                big = message_body(text="x" * (limit * 2))
                too_large = await client.response(
                    await client.request(
                        "POST",
                        "/v1/messages",
                        big,
                        [
                            ("x-api-key", running.key),
                            *headers,
                            ("content-length", str(len(big))),
                        ],
                    )
                )
                fits = await client.response(
                    await client.request(
                        "POST",
                        "/v1/messages",
                        message_body(),
                        [("x-api-key", running.key), *headers],
                    )
                )
            await wait_until_idle(running.telemetry)
            counted = flat_snapshot(running.telemetry)

    assert too_large.headers[b":status"] == b"413"
    assert json.loads(bytes(too_large.data))["error"]["type"] == "request_too_large"
    assert fits.headers[b":status"] == b"200"
    refused = series(
        "ccag.requests.total", model="other", streaming="false", status="413"
    )
    assert counted[refused] == 1
    assert counted[series("ccag.requests.in_flight")] == 0


# A separate process, so that it closes while the gateway may still be about
# to end the stream (in this process the gateway would always finish first).
_EARLY_CLOSING_H2_CLIENT = """
import json, socket, sys
import h2.connection, h2.events
port, key, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
statuses = []
for _ in range(int(sys.argv[4])):
    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", "/v1/messages"),
        (":scheme", "http"), (":authority", "gw"), ("x-api-key", key),
        ("content-type", "application/json"), ("anthropic-version", "2023-06-01")])
    conn.send_data(1, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, length, data = None, None, b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for event in conn.receive_data(chunk):
            if isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
                status = headers[b":status"].decode()
                length = headers.get(b"content-length")
            elif isinstance(event, h2.events.DataReceived):
                data += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, 1)
        sock.sendall(conn.data_to_send())
        whole = int(length) if length else None
        if (whole is not None and len(data) >= whole) or b"event: message_stop" in data:
            break
    # The whole answer is in: close at once, before the end of the stream.
    sock.close()
    statuses.append(status)
print(json.dumps(statuses))
"""


@pytest.mark.parametrize("stream", [False, True])
async def test_http2_client_closing_right_after_the_answer_is_counted_200(
    tmp_path, stream: bool
) -> None:
    requests = 40
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            done = await trio.run_process(
                [
                    sys.executable, "-c", _EARLY_CLOSING_H2_CLIENT, str(running.port),
                    running.key, message_body(stream=stream).decode(), str(requests),
                ],
                capture_stdout=True,
            )
            await wait_until_idle(running.telemetry)
            counted = flat_snapshot(running.telemetry)

    assert json.loads(done.stdout) == ["200"] * requests
    statuses = {
        dict(labels)["status"]: value
        for (name, labels), value in counted.items()
        if name == "ccag.requests.total"
    }
    assert statuses == {"200": requests}
