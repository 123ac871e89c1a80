"""The metrics are exact: a scripted mix of requests, then every value checked.

One gateway runs a known mix through the simulator (streamed and not, tool
calls, cache tokens, a throttle, a validation error, a mid-stream exception,
a client that leaves halfway, refused keys, an oversized body). The test
keeps its own tally of what the script implies and requires the gateway's
instruments to equal it exactly, read three ways that must agree with each
other: ``telemetry.snapshot()``, ``GET /metrics`` and a real Prometheus
server scraping the gateway; a real OTLP receiver gets the same values.

The cardinality test sends a thousand requests with random model names,
paths and tool names and checks the number of series stays bounded.
"""

from __future__ import annotations

import collections
import json
import random
import time
from typing import Any

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from ccag.anthropic.errors import error_from_exception_frame
from ccag.simulator import Fail, StreamException, Text, ToolUse, Usage
from ccag.sse import SSEDecoder
from ccag.store.identity import find_keys, revoke_key
from ccag.telemetry import (
    DEFAULT_MAX_TOOL_NAMES,
    DURATION_BUCKETS_MS,
    HistogramValue,
    series_cap,
)
from tests.e2e_client import (
    Exchange,
    key_headers,
    message_body,
    post_messages,
    request,
    wait_until_idle,
)
from tests.gateway_fixture import open_gateway
from tests.otlp_receiver import OtlpReceiver
from tests.prometheus_fixture import running_prometheus

SONNET = "claude-sonnet-4-5"
SONNET_DATED = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5"
ENDPOINT = "default"
MCP_TOOL = "mcp__github__create_issue"
BODY_LIMIT = 16 * 1024

SampleKey = tuple[str, frozenset[tuple[str, str]]]


@attrs.define
class Tally:
    """What the script implies, built up as it runs."""

    requests: collections.Counter[tuple[str, str, str]] = attrs.Factory(
        collections.Counter
    )
    ttft: collections.Counter[tuple[str, str]] = attrs.Factory(collections.Counter)
    tokens: dict[str, list[int]] = attrs.Factory(dict)
    tools: collections.Counter[tuple[str, str]] = attrs.Factory(collections.Counter)
    errors: collections.Counter[tuple[str, str]] = attrs.Factory(collections.Counter)
    throttles: collections.Counter[tuple[str, str]] = attrs.Factory(collections.Counter)
    auth_failures: collections.Counter[tuple[str]] = attrs.Factory(collections.Counter)

    def request(
        self, model: str, streaming: bool, status: int, *, content: bool
    ) -> None:
        flag = "true" if streaming else "false"
        self.requests[(model, flag, str(status))] += 1
        if content:
            self.ttft[(model, flag)] += 1

    def add_tokens(self, model: str, start_usage: dict[str, Any], output: int) -> None:
        cell = self.tokens.setdefault(model, [0, 0, 0, 0])
        cell[0] += start_usage["input_tokens"]
        cell[1] += output
        cell[2] += start_usage.get("cache_read_input_tokens", 0)
        cell[3] += start_usage.get("cache_creation_input_tokens", 0)


def usage_tokens(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
    }


# ---- reading the values three ways -------------------------------------------


def snapshot_samples(snapshot: Any) -> dict[SampleKey, float]:
    """The samples ``/metrics`` should expose for ``snapshot``."""
    samples: dict[SampleKey, float] = {}
    for instrument, series in snapshot:
        name = instrument.prometheus_name
        for labels, value in series:
            pairs = tuple(zip(instrument.labels, labels))
            if isinstance(value, HistogramValue):
                cumulative = 0
                bounds = [floatToGoString(b) for b in DURATION_BUCKETS_MS] + ["+Inf"]
                for bound, count in zip(bounds, value.bucket_counts):
                    cumulative += count
                    samples[_key(name + "_bucket", (*pairs, ("le", bound)))] = (
                        cumulative
                    )
                samples[_key(name + "_sum", pairs)] = value.sum
                samples[_key(name + "_count", pairs)] = value.count
            else:
                samples[_key(name, pairs)] = float(value)
    return samples


def _key(name: str, pairs: Any) -> SampleKey:
    normal = []
    for label, value in pairs:
        if label == "le" and value != "+Inf":
            value = repr(float(value))  # Prometheus 3 writes "5", the exposition "5.0"
        normal.append((label, value))
    return name, frozenset(normal)


def exposition_samples(text: str) -> dict[SampleKey, float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = _key(sample.name, sample.labels.items())
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return samples


def prometheus_samples(result: list[dict[str, Any]]) -> dict[SampleKey, float]:
    samples = {}
    for item in result:
        labels = dict(item["metric"])
        name = labels.pop("__name__")
        labels.pop("job", None)
        labels.pop("instance", None)
        samples[_key(name, labels.items())] = float(item["value"][1])
    return samples


def otlp_expected(snapshot: Any) -> dict[Any, Any]:
    """The series an OTLP receiver should hold for ``snapshot``."""
    expected = {}
    for instrument, series in snapshot:
        for labels, value in series:
            key = (instrument.name, frozenset(zip(instrument.labels, labels)))
            if isinstance(value, HistogramValue):
                expected[key] = (
                    value.bucket_counts,
                    value.sum,
                    value.count,
                    DURATION_BUCKETS_MS,
                )
            else:
                expected[key] = value
    return expected


async def metrics_text(port: int, token: str) -> str:
    reply = await request(
        port, "GET", "/metrics", headers=[("authorization", f"Bearer {token}")]
    )
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return reply.body.decode()


async def admin_token(port: int) -> str:
    body = json.dumps({"username": "admin", "password": "test-admin-password"}).encode()
    reply = await request(
        port,
        "POST",
        "/auth/login",
        headers=[("content-type", "application/json")],
        body=body,
    )
    assert reply.status == 200, reply.body
    token: str = reply.json()["token"]
    return token


# ---- the script ----------------------------------------------------------------


async def run_script(running: Any, tally: Tally) -> None:
    port, key, simulator = running.port, running.key, running.simulator

    # Plain answers, with cache reads and writes in the usage.
    usage = Usage(
        input_tokens=100,
        output_tokens=20,
        cache_read_input_tokens=30,
        cache_creation_input_tokens=40,
    )
    simulator.script(Text("plain answer", usage=usage))
    reply = await post_messages(port, key, message_body(SONNET))
    assert reply.status == 200
    assert reply.json()["usage"]["output_tokens"] == 20
    tally.request(SONNET, False, 200, content=True)
    tally.add_tokens(SONNET, usage_tokens(usage), 20)

    usage = Usage(
        input_tokens=11,
        output_tokens=7,
        cache_read_input_tokens=5,
        cache_creation_input_tokens=3,
    )
    simulator.script(Text("streamed answer", deltas=4, usage=usage))
    reply = await post_messages(port, key, message_body(SONNET_DATED, stream=True))
    assert reply.status == 200 and b"message_stop" in reply.body
    tally.request(SONNET, True, 200, content=True)  # the dated name is normalised
    tally.add_tokens(SONNET, usage_tokens(usage), 7)

    # Tool calls: built-in and MCP, streamed and not.
    usage = Usage(input_tokens=50, output_tokens=9)
    simulator.script(ToolUse("Read", {"file_path": "/tmp/x"}, usage=usage))
    reply = await post_messages(port, key, message_body(HAIKU, stream=True))
    assert reply.status == 200 and b'"Read"' in reply.body
    tally.request(HAIKU, True, 200, content=True)
    tally.add_tokens(HAIKU, usage_tokens(usage), 9)
    tally.tools[("Read", "builtin")] += 1

    usage = Usage(
        input_tokens=60,
        output_tokens=12,
        cache_read_input_tokens=1,
        cache_creation_input_tokens=2,
    )
    simulator.script(ToolUse(MCP_TOOL, {"title": "t"}, text="Filing it.", usage=usage))
    reply = await post_messages(port, key, message_body(HAIKU))
    assert reply.status == 200
    assert [block["type"] for block in reply.json()["content"]] == ["text", "tool_use"]
    tally.request(HAIKU, False, 200, content=True)
    tally.add_tokens(HAIKU, usage_tokens(usage), 12)
    tally.tools[(MCP_TOOL, "mcp")] += 1

    usage = Usage(input_tokens=5, output_tokens=6)
    simulator.script(ToolUse(MCP_TOOL, usage=usage))
    reply = await post_messages(port, key, message_body(SONNET, stream=True))
    assert reply.status == 200
    tally.request(SONNET, True, 200, content=True)
    tally.add_tokens(SONNET, usage_tokens(usage), 6)
    tally.tools[(MCP_TOOL, "mcp")] += 1

    # Bedrock refusals before any byte: a throttle, a validation error.
    simulator.script(Fail("ThrottlingException"))
    reply = await post_messages(port, key, message_body(SONNET, stream=True))
    assert reply.status == 429
    tally.request(SONNET, True, 429, content=False)
    tally.errors[("throttled", ENDPOINT)] += 1
    tally.throttles[(SONNET, ENDPOINT)] += 1

    simulator.script(Fail("ValidationException", message="Malformed input request."))
    reply = await post_messages(port, key, message_body(HAIKU))
    assert reply.status == 400
    tally.request(HAIKU, False, 400, content=False)
    tally.errors[("validation", ENDPOINT)] += 1

    # A stream that breaks after its first content: counted as its error's status.
    usage = Usage(
        input_tokens=70,
        output_tokens=33,
        cache_read_input_tokens=4,
        cache_creation_input_tokens=6,
    )
    broken = StreamException(after_events=3, answer=Text("a b c d", usage=usage))
    simulator.script(broken)
    reply = await post_messages(port, key, message_body(SONNET, stream=True))
    assert reply.status == 200 and b"event: error" in reply.body
    mapped = error_from_exception_frame(
        broken.exception_type, json.dumps({"message": broken.message}).encode()
    )
    tally.request(SONNET, True, mapped.status, content=True)
    # Only message_start's usage arrived: its output_tokens (1) is the count.
    tally.add_tokens(SONNET, usage_tokens(usage), 1)
    tally.errors[("stream_error", ENDPOINT)] += 1

    # A client that leaves halfway: 499, and the tokens it was sent, once.
    usage = Usage(input_tokens=80, output_tokens=500, cache_creation_input_tokens=7)
    simulator.script(
        Text(" ".join(["word"] * 100), deltas=100, delay=0.02, usage=usage)
    )
    exchange = await Exchange.open(
        port,
        "POST",
        "/v1/messages",
        headers=key_headers(key),
        body=message_body(HAIKU, stream=True),
    )
    status, _ = await exchange.head()
    assert status == 200
    decoder, deltas, start = SSEDecoder(), 0, None
    while deltas < 3:
        chunk = await exchange.chunk()
        assert chunk is not None
        for event in decoder.feed(chunk):
            if event.event == "message_start":
                start = json.loads(event.data)["message"]["usage"]
            deltas += event.event == "content_block_delta"
    await exchange.aclose()
    assert start is not None
    await wait_until_idle(running.telemetry)
    tally.request(HAIKU, True, 499, content=True)
    tally.add_tokens(HAIKU, start, start["output_tokens"])

    # Refused keys: missing, invalid, revoked. The body is not read: model other.
    revoked = await running.new_key("to-revoke")
    await running.gateway.store.run(
        lambda connection: revoke_key(
            connection, find_keys(connection, "to-revoke")[0].id, time.time()
        )
    )
    await running.gateway.services.keys.refresh()
    for presented, reason in (
        (None, "missing_key"),
        ("sk-ccag-made-up", "invalid_key"),
        (revoked, "revoked_key"),
    ):
        reply = await post_messages(port, presented, message_body(SONNET))
        assert reply.status == 401, (reason, reply.body)
        tally.request("other", False, 401, content=False)
        tally.auth_failures[(reason,)] += 1

    # An unknown model, and a body over the limit.
    reply = await post_messages(
        port, key, message_body("claude-from-the-future", stream=True)
    )
    assert reply.status == 404
    tally.request("other", True, 404, content=False)

    reply = await post_messages(port, key, message_body(SONNET, text="x" * BODY_LIMIT))
    assert reply.status == 413
    tally.request("other", False, 413, content=False)

    # /metrics refuses without credentials and without the admin role.
    reply = await request(port, "GET", "/metrics")
    assert reply.status == 401
    tally.auth_failures[("missing_key",)] += 1
    member = await running.new_key("member")
    reply = await request(
        port, "GET", "/metrics", headers=[("authorization", f"Bearer {member}")]
    )
    assert reply.status == 403
    assert reply.json()["error"]["type"] == "permission_error"
    tally.auth_failures[("not_admin",)] += 1

    # A failed admin login.
    reply = await request(
        port,
        "POST",
        "/auth/login",
        headers=[("content-type", "application/json")],
        body=json.dumps({"username": "admin", "password": "wrong"}).encode(),
    )
    assert reply.status == 401
    tally.auth_failures[("login_failed",)] += 1


def check_against_tally(snapshot: Any, tally: Tally) -> None:
    values = {instrument.name: dict(series) for instrument, series in snapshot}

    assert values["ccag.requests.total"] == dict(tally.requests)
    durations = values["ccag.request.duration_ms"]
    assert {labels: value.count for labels, value in durations.items()} == dict(
        tally.requests
    )
    ttft = values["ccag.request.ttft_ms"]
    assert {labels: value.count for labels, value in ttft.items()} == dict(tally.ttft)
    assert values["ccag.requests.in_flight"] == {(): 0}

    for index, name in enumerate(("input", "output", "cache_read", "cache_write")):
        counted = {
            labels: n for labels, n in values[f"ccag.tokens.{name}"].items() if n
        }
        implied = {
            (model,): cell[index] for model, cell in tally.tokens.items() if cell[index]
        }
        assert counted == implied, name

    assert values["ccag.tool_calls.total"] == dict(tally.tools)
    assert values["ccag.errors.total"] == dict(tally.errors)
    assert values["ccag.bedrock.throttles.total"] == dict(tally.throttles)
    assert values["ccag.auth_failures.total"] == dict(tally.auth_failures)
    for name in (
        "ccag.web_searches.total",
        "ccag.rate_limits.total",
        "ccag.spend_flush_errors.total",
        "ccag.spend_records_quarantined.total",
    ):
        assert values[name] == {(): 0}, name


async def test_metrics_equal_what_the_script_implies_on_every_channel(tmp_path) -> None:
    with OtlpReceiver() as receiver, trio.fail_after(90):
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "OTEL_SERVICE_NAME": "ccag-e2e",
        }
        settings = {"max_body_bytes": BODY_LIMIT}
        async with open_gateway(
            tmp_path, settings=settings, environ=environ
        ) as running:
            token = await admin_token(running.port)
            async with running_prometheus(
                f"127.0.0.1:{running.port}", token=token
            ) as prometheus:
                tally = Tally()
                await run_script(running, tally)
                await wait_until_idle(running.telemetry)

                snapshot = running.telemetry.snapshot()
                check_against_tally(snapshot, tally)

                # Channel 1 and 2: the snapshot and GET /metrics.
                expected = snapshot_samples(snapshot)
                exposed = exposition_samples(await metrics_text(running.port, token))
                assert exposed == expected

                # Channel 3: Prometheus, once it has scraped the final values.
                scraped: dict[SampleKey, float] = {}
                with trio.move_on_after(20):
                    while scraped != expected:
                        await trio.sleep(0.25)
                        scraped = prometheus_samples(
                            await prometheus.query('{__name__=~"ccag_.+"}')
                        )
                assert scraped == expected
                up = await prometheus.query('up{job="ccag"}')
                assert [item["value"][1] for item in up] == ["1"]

                # OTLP: an export that started after the script holds the same values.
                after = receiver.export_count()
                await receiver.wait_for_export(after + 2)
                assert receiver.latest_series() == otlp_expected(snapshot)
                assert receiver.latest_resource()["service.name"] == "ccag-e2e"

                # Reading the values moved none of them.
                assert running.telemetry.snapshot() == snapshot


# ---- cardinality -------------------------------------------------------------


def random_name(rng: random.Random, size: int) -> str:
    alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-_."\\é€ '
    return "".join(rng.choice(alphabet) for _ in range(size))


async def test_random_models_paths_and_tools_leave_the_series_bounded(tmp_path) -> None:
    rng = random.Random(20240601)
    tool_requests = DEFAULT_MAX_TOOL_NAMES + 100  # more names than are tracked
    model_requests = 250
    path_requests = 1000 - tool_requests - model_requests
    tool_names = [
        ("mcp__" if rng.random() < 0.3 else "")
        + random_name(rng, rng.choice((8, 40, 300)))
        for _ in range(tool_requests)
    ]
    model_names = [random_name(rng, rng.randint(1, 60)) for _ in range(model_requests)]
    paths = [
        "/"
        + random_name(rng, 20)
        .replace(" ", "%20")
        .replace('"', "%22")
        .replace("\\", "%5C")
        .replace("é", "e")
        .replace("€", "E")
        for _ in range(path_requests)
    ]

    jobs: list[Any] = []
    jobs += [("tool", name) for name in tool_names]
    jobs += [("model", name) for name in model_names]
    jobs += [("path", path) for path in paths]
    rng.shuffle(jobs)
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()

    with trio.fail_after(120):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(*(ToolUse(name) for name in tool_names))
            port, key = running.port, running.key
            queue = list(jobs)

            async def worker() -> None:
                while queue:
                    kind, value = queue.pop()
                    streaming = len(queue) % 2 == 0
                    if kind == "tool":
                        reply = await post_messages(
                            port, key, message_body(SONNET, stream=streaming)
                        )
                    elif kind == "model":
                        reply = await post_messages(
                            port, key, message_body(value, stream=streaming)
                        )
                    else:
                        reply = await request(port, "GET", value)
                    statuses[(kind, reply.status)] += 1

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(worker)
            await wait_until_idle(running.telemetry)
            snapshot = running.telemetry.snapshot()
            token = await admin_token(port)
            exposition = await metrics_text(port, token)
            canonical = set(running.gateway.services.catalog.canonical_names())

    assert statuses == {
        ("tool", 200): tool_requests,
        ("model", 404): model_requests,
        ("path", 404): path_requests,
    }
    cap = series_cap(len(canonical), 1, DEFAULT_MAX_TOOL_NAMES)
    total = sum(len(series) for _, series in snapshot)
    assert total <= cap

    by_name = {instrument.name: dict(series) for instrument, series in snapshot}
    tools = by_name["ccag.tool_calls.total"]
    assert len(tools) <= DEFAULT_MAX_TOOL_NAMES + 2
    assert sum(tools.values()) == tool_requests
    assert sum(n for (name, _), n in tools.items() if name == "other") >= 100
    for instrument, series in snapshot:
        if "model" in instrument.labels:
            position = instrument.labels.index("model")
            assert {labels[position] for labels, _ in series} <= canonical | {"other"}
    requests = by_name["ccag.requests.total"]
    assert sum(requests.values()) == tool_requests + model_requests
    assert (
        requests[("other", "true", "404")] + requests[("other", "false", "404")]
        == model_requests
    )

    # No random model name or path leaked into any label value.
    exposed = exposition_samples(exposition)
    assert len(exposed) == len(snapshot_samples(snapshot))
    label_values = {value for _, labels in exposed for _, value in labels}
    assert not label_values & set(model_names)
    assert not label_values & set(paths)
