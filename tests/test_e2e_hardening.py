"""Inputs a new user threw at the gateway, each answered cleanly."""

from __future__ import annotations

import functools
import json

import trio

from ccag.app import run_gateway
from ccag.auth.keys import create_key
from ccag.config import load_config
from tests.e2e_client import key_headers, post_messages, request
from tests.gateway_fixture import open_gateway

TIMEOUT_S = 20

# JavaScript's JSON.stringify writes a cut emoji as a lone surrogate escape.
LONE_SURROGATE_BODY = (
    b'{"model":"claude-sonnet-4-5","max_tokens":5,'
    b'"messages":[{"role":"user","content":"half an emoji \\ud83d"}]}'
)


async def test_a_lone_surrogate_escape_passes_through_to_bedrock(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            reply = await post_messages(running.port, running.key, LONE_SURROGATE_BODY)
            counted = await post_messages(
                running.port, running.key, LONE_SURROGATE_BODY,
                target="/v1/messages/count_tokens",
            )
            sent = running.simulator.model_requests()[0].body

    assert reply.status == 200, reply.body
    assert counted.status == 200 and counted.json()["input_tokens"] > 0
    assert sent["messages"][0]["content"] == "half an emoji \ud83d"


async def test_stream_must_be_a_boolean(tmp_path) -> None:
    body = b'{"model":"claude-sonnet-4-5","max_tokens":5,"stream":"yes","messages":[{"role":"user","content":"x"}]}'
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            reply = await post_messages(running.port, running.key, body)
            calls = running.simulator.model_requests()

    assert reply.status == 400
    assert reply.json()["error"]["message"] == "stream: must be true or false"
    assert calls == []


async def test_errors_a_client_must_not_retry_say_so(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            unauthorised = await post_messages(running.port, "sk-ccag-wrong", b"{}")
            bad = await post_messages(running.port, running.key, b"{")

    for reply in (unauthorised, bad):
        assert reply.headers.get("x-should-retry") == "false"


async def test_models_can_be_paged_and_retrieved_one_by_one(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            headers = key_headers(running.key)
            everything = (await request(running.port, "GET", "/v1/models", headers=headers)).json()
            first = (await request(running.port, "GET", "/v1/models?limit=2", headers=headers)).json()
            after = first["last_id"]
            second = (
                await request(
                    running.port, "GET", f"/v1/models?limit=2&after_id={after}", headers=headers
                )
            ).json()
            one = await request(running.port, "GET", "/v1/models/claude-sonnet-4-5", headers=headers)
            missing = await request(running.port, "GET", "/v1/models/claude-nope-1", headers=headers)

    ids = [model["id"] for model in everything["data"]]
    assert [model["id"] for model in first["data"]] == ids[:2]
    assert first["has_more"] is True
    assert [model["id"] for model in second["data"]] == ids[2:4]
    assert one.status == 200 and one.json()["id"] == "claude-sonnet-4-5"
    assert one.json()["type"] == "model"
    assert missing.status == 404 and missing.json()["error"]["type"] == "not_found_error"


async def test_web_search_in_simulator_mode_never_leaves_the_machine(tmp_path) -> None:
    config = load_config(
        {"port": 0, "store": str(tmp_path / "s.sqlite3"), "simulator": "on"}, environ={}
    )
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
            "messages": [{"role": "user", "content": "what is trio? [sim:search 1]"}],
        }
    ).encode()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(
                functools.partial(run_gateway, config, environ={})
            )
            key = await create_key(gateway.store, "searcher", user="searcher")
            await gateway.services.keys.refresh()
            reply = await post_messages(gateway.port, key, body)
            nursery.cancel_scope.cancel()

    blocks = reply.json()["content"]
    results = next(block for block in blocks if block["type"] == "web_search_tool_result")
    assert reply.status == 200
    assert gateway.services.config.web_search_provider == "custom"
    assert all(item["url"].startswith("https://example.com/simulated/") for item in results["content"])


async def test_a_runtime_url_from_the_environment_keeps_discovery_off_aws(tmp_path) -> None:
    from ccag.bedrock.credentials import CredentialSource
    from ccag.simulator import open_simulator

    async with open_simulator() as simulator:
        config = load_config(
            {"port": 0, "store": str(tmp_path / "s.sqlite3"), "simulator": "off",
             "region": simulator.region},
            environ={},
        )
        environ = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": simulator.url}
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                gateway = await nursery.start(
                    functools.partial(
                        run_gateway, config, environ=environ,
                        credentials=CredentialSource.static(
                            simulator.access_key, simulator.secret_key
                        ),
                    )
                )
                (spec,) = gateway.services.upstream.specs
                nursery.cancel_scope.cancel()

    assert spec.url == simulator.url
    assert spec.control_url == simulator.url


async def test_the_simulator_forgets_old_requests(monkeypatch) -> None:
    from ccag.simulator import handler, open_simulator

    monkeypatch.setattr(handler, "MAX_RECORDED_REQUESTS", 3)
    with trio.fail_after(TIMEOUT_S):
        async with open_simulator() as simulator:
            for index in range(5):
                await request(simulator.port, "GET", f"/unknown-{index}")
            kept = [record.target for record in simulator.requests]

    assert kept == ["/unknown-2", "/unknown-3", "/unknown-4"]


async def test_client_credentials_never_reach_bedrock(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            headers = [
                ("x-api-key", running.key),
                ("authorization", f"Bearer {running.key}"),
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
            ]
            reply = await request(
                running.port, "POST", "/v1/messages", headers=headers,
                body=b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}',
            )
            (received,) = running.simulator.model_requests()

    assert reply.status == 200
    sent = json.dumps([list(pair) for pair in received.headers.items]) + json.dumps(received.body)
    assert running.key not in sent
    assert "x-api-key" not in sent.lower()
    authorization = received.headers.get("authorization") or ""
    assert authorization.startswith("AWS4-HMAC-SHA256 ")


async def test_a_request_with_both_framings_closes_the_connection(tmp_path) -> None:
    body = b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
    chunked = hex(len(body))[2:].encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            head = (
                "POST /v1/messages HTTP/1.1\r\nhost: x\r\n"
                f"x-api-key: {running.key}\r\ncontent-type: application/json\r\n"
                "content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
            ).encode()
            smuggled = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
            await stream.send_all(head + chunked + smuggled)
            received = b""
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                received += data
            await stream.aclose()

    assert received.startswith(b"HTTP/1.1 200")
    assert received.count(b"HTTP/1.1 ") == 1


async def test_ready_with_configured_endpoints_checks_their_credentials(tmp_path) -> None:
    from ccag.simulator import open_simulator

    async with open_simulator() as simulator:
        endpoint = {
            "id": "local", "region": simulator.region, "url": simulator.url,
            "control_url": simulator.url,
            "credentials": {
                "type": "static", "access_key_id": simulator.access_key,
                "secret_access_key": simulator.secret_key,
            },
        }
        config = load_config(
            {"port": 0, "store": str(tmp_path / "s.sqlite3"), "endpoints": [endpoint],
             "admin_password": "not-the-default"},
            environ={},
        )
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                gateway = await nursery.start(
                    functools.partial(run_gateway, config, environ={"AWS_EC2_METADATA_DISABLED": "true"})
                )
                ready = await request(gateway.port, "GET", "/ready")
                nursery.cancel_scope.cancel()

    assert ready.status == 200, ready.body
    assert ready.json()["credentials"] == "ok"


def test_a_sim_tool_directive_reads_a_list_of_objects_whole() -> None:
    from ccag.simulator.directives import default_scenario

    prompt = 'plan [sim:tool TodoWrite {"todos":[{"content":"x","status":"pending"}]}] now'
    scenario = default_scenario({"messages": [{"role": "user", "content": prompt}]})

    assert scenario.input == {"todos": [{"content": "x", "status": "pending"}]}


async def test_nan_and_infinity_are_refused_not_sent_to_bedrock(tmp_path) -> None:
    messages = b'"messages":[{"role":"user","content":"x"}]}'
    bodies = [
        b'{"model":"claude-sonnet-4-5","max_tokens":5,"temperature":Infinity,' + messages,
        b'{"model":"claude-sonnet-4-5","max_tokens":5,"top_p":NaN,' + messages,
        b'{"model":"claude-sonnet-4-5","max_tokens":5,"temperature":-Infinity,' + messages,
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            replies = [await post_messages(running.port, running.key, body) for body in bodies]
            counted = await post_messages(
                running.port, running.key, bodies[0], target="/v1/messages/count_tokens"
            )
            calls = running.simulator.model_requests()

    for reply in [*replies, counted]:
        assert reply.status == 400, reply.body
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "not valid JSON" in error["message"] and "is not a JSON value" in error["message"]
    assert calls == []
