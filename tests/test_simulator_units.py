"""The simulator's pure parts, and its faults and control API over loopback."""

from __future__ import annotations

import base64
import datetime
import json
import logging
from typing import Any

import botocore.eventstream
import h11
import pytest
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from ccag.server.types import Headers
from ccag.simulator import (
    Fail,
    Garbage,
    Reset,
    Stall,
    Text,
    Thinking,
    ToolUse,
    Truncate,
    open_simulator,
    scenario_from_json,
)
from ccag.simulator.catalog import models_from_facts
from ccag.simulator.directives import default_scenario, default_text
from ccag.simulator.errors import BedrockError
from ccag.simulator.events import (
    ReplyContext,
    build_events,
    message_from_events,
    split_evenly,
)
from ccag.simulator.sigv4 import verify_sigv4
from ccag.simulator.validate import resolve_model_id

PROFILE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
FOUNDATION = "anthropic.claude-sonnet-4-5-20250929-v1:0"
CONTEXT = ReplyContext("msg_bdrk_1", FOUNDATION, 10, "default", "toolu_bdrk_1")
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
TIMEOUT = 10


# -- Events --------------------------------------------------------------------


@given(st.text(), st.integers(min_value=1, max_value=50))
def test_split_evenly_keeps_the_text(text: str, parts: int) -> None:
    pieces = split_evenly(text, parts)
    assert "".join(pieces) == text
    assert len(pieces) == (min(parts, len(text)) or 1)


def test_events_tool_use_streams_input_after_an_empty_piece() -> None:
    events = build_events(ToolUse(name="Bash", input={"command": "ls -la"}, pieces=3), CONTEXT)
    pieces = [event["delta"]["partial_json"] for event in events if event["type"] == "content_block_delta"]
    message = message_from_events(events)

    assert pieces[0] == "" and len(pieces) == 4
    assert json.loads("".join(pieces)) == {"command": "ls -la"}
    assert message["content"] == [{"type": "tool_use", "id": "toolu_bdrk_1", "name": "Bash", "input": {"command": "ls -la"}}]
    assert message["stop_reason"] == "tool_use"


def test_events_thinking_then_text_add_up_to_the_message() -> None:
    events = build_events(Thinking(thinking="abc", signature="sig", text="answer"), CONTEXT)
    message = message_from_events(events)

    assert message["content"] == [
        {"type": "thinking", "thinking": "abc", "signature": "sig"},
        {"type": "text", "text": "answer"},
    ]
    assert events[-2]["usage"]["output_tokens"] == message["usage"]["output_tokens"]
    assert events[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 10


# -- Scenarios and directives ------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@given(st.one_of(_json, st.fixed_dictionaries({"type": st.sampled_from(["text", "fail", "stall", "garbage"])}, optional={"seconds": _json, "kind": _json, "text": _json, "answer": _json})))
def test_scenario_from_json_builds_or_raises_value_error(data: Any) -> None:
    try:
        scenario_from_json(data)
    except ValueError:
        pass


def test_scenario_from_json_nests_answers() -> None:
    scenario = scenario_from_json({"type": "stall", "seconds": 1.5, "after_events": 2, "answer": {"type": "tool_use", "name": "Read"}})
    assert scenario == Stall(seconds=1.5, after_events=2, answer=ToolUse(name="Read"))


def _conversation(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": content}]}


def test_directives_pick_the_scenario() -> None:
    tool = default_scenario(_conversation('do it [sim:tool Bash {"command": {"nested": 1}}] now'))
    assert tool == ToolUse(name="Bash", input={"command": {"nested": 1}})
    assert default_scenario(_conversation([{"type": "text", "text": "[sim:text 7]"}])) == Text(deltas=7)
    assert default_scenario(_conversation("[sim:error ModelNotReadyException]")) == Fail("ModelNotReadyException")
    assert default_scenario(_conversation("plain")) == Text()


def test_directives_answer_a_tool_result_with_its_content() -> None:
    body = _conversation([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "hello"}]}])
    assert default_scenario(body) == Text()
    assert default_text(body) == "Tool result: hello"


# -- Model ids and signatures --------------------------------------------------------


@pytest.mark.parametrize(
    "encoded",
    [
        PROFILE,
        "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1%3A0",
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2Fabc123",
    ],
)
def test_resolve_model_id_accepts_bedrock_spellings(encoded: str) -> None:
    models = models_from_facts()
    model = resolve_model_id(encoded, models, {"abc123": FOUNDATION}, frozenset({"us", "eu", "global"}))
    assert model.bedrock_id == FOUNDATION


@pytest.mark.parametrize(
    ("encoded", "name"),
    [
        ("anthropic.claude-unknown-v1:0", "ResourceNotFoundException"),
        ("sonnet", "ValidationException"),
        ("apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "ValidationException"),
        (FOUNDATION, "ValidationException"),
    ],
)
def test_resolve_model_id_refuses_like_bedrock(encoded: str, name: str) -> None:
    with pytest.raises(BedrockError) as caught:
        resolve_model_id(encoded, models_from_facts(), {}, frozenset({"us", "eu", "apac", "global"}))
    assert caught.value.name == name


def _signed(secret: str, body: bytes, when: datetime.datetime) -> tuple[Headers, str]:
    target = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    request = AWSRequest("POST", "http://127.0.0.1:9" + target, data=body, headers={"content-type": "application/json"})
    request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    signer = SigV4Auth(Credentials("AKID", secret), "bedrock", "us-east-1")
    signer._inject_signature_to_request(
        request, signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    )
    headers = [(name.lower(), value) for name, value in request.headers.items()] + [("host", "127.0.0.1:9")]
    return Headers(tuple(headers)), target


def _verify(headers: Headers, target: str, body: bytes, now: datetime.datetime = NOW) -> str:
    return verify_sigv4(
        method="POST", target=target, headers=headers, body=body,
        secrets={"AKID": "secret"}, region="us-east-1", now=now,
    )


def test_sigv4_accepts_a_botocore_signature() -> None:
    headers, target = _signed("secret", b"{}", NOW)
    assert _verify(headers, target, b"{}") == "AKID"


@pytest.mark.parametrize(
    ("secret", "sent_body", "now", "message"),
    [
        ("wrong", b"{}", NOW, "does not match"),
        ("secret", b"{ }", NOW, "does not match"),
        ("secret", b"{}", NOW + datetime.timedelta(minutes=6), "Signature expired"),
        ("secret", b"{}", NOW - datetime.timedelta(minutes=6), "not yet current"),
    ],
)
def test_sigv4_refuses_a_bad_or_stale_signature(secret: str, sent_body: bytes, now: datetime.datetime, message: str) -> None:
    headers, target = _signed(secret, b"{}", NOW)
    with pytest.raises(BedrockError) as caught:
        _verify(headers, target, sent_body, now)
    assert caught.value.name == "InvalidSignatureException" and caught.value.status == 403
    assert message in caught.value.message


# -- Faults over loopback --------------------------------------------------------------


async def _raw_call(url: str, path: str, body: bytes, method: str = "POST") -> tuple[int, bytes, bool]:
    """One request; (status, body bytes received, whether the body completed)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    client = h11.Connection(h11.CLIENT)
    headers = [("host", f"{host}:{port}"), ("content-length", str(len(body))), ("connection", "close")]
    await stream.send_all(client.send(h11.Request(method=method, target=path, headers=headers)) + client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage()))
    status, received, complete = 0, b"", False
    async with stream:
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:
                break
            if event is h11.NEED_DATA:
                try:
                    client.receive_data(await stream.receive_some(65536))
                except trio.BrokenResourceError:  # a reset: what was read is all there is
                    break
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                received += event.data
            elif isinstance(event, h11.EndOfMessage):
                complete = True
                break
    return status, received, complete


def _body(text: str = "hi") -> bytes:
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}).encode()


def _decode(raw: bytes) -> list[str]:
    buffer = botocore.eventstream.EventStreamBuffer()
    buffer.add_data(raw)
    return [json.loads(base64.b64decode(json.loads(message.payload)["bytes"]))["type"] for message in buffer]


STREAM_PATH = f"/model/{PROFILE}/invoke-with-response-stream"


async def test_simulator_truncate_ends_the_stream_without_message_stop() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(verify_signatures=False) as sim:
            sim.script(Truncate(after_events=3), Truncate(after_events=2, mid_frame=True))
            status, whole, complete = await _raw_call(sim.url, STREAM_PATH, _body())
            _, cut, _ = await _raw_call(sim.url, STREAM_PATH, _body())

    assert status == 200 and complete
    assert _decode(whole) == ["message_start", "content_block_start", "content_block_delta"]
    buffer = botocore.eventstream.EventStreamBuffer()
    buffer.add_data(cut)
    assert len(list(buffer)) == 2
    assert buffer._data  # half a frame left over


@pytest.mark.parametrize("kind", ["crc", "bytes"])
async def test_simulator_garbage_breaks_the_frame_decoder(kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(verify_signatures=False, seed=1) as sim:
            sim.script(Garbage(after_events=2, kind=kind))
            _, raw, _ = await _raw_call(sim.url, STREAM_PATH, _body())

    with pytest.raises(botocore.eventstream.ParserError):
        _decode(raw)


async def test_simulator_reset_cuts_the_connection(caplog) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(verify_signatures=False) as sim:
            sim.script(Reset(after_events=2), Reset(), Reset(after_events=0))
            _, streamed, stream_complete = await _raw_call(sim.url, STREAM_PATH, _body())
            whole_status, whole, whole_complete = await _raw_call(
                sim.url, f"/model/{PROFILE}/invoke", _body()
            )
            cut_status, cut, cut_complete = await _raw_call(
                sim.url, f"/model/{PROFILE}/invoke", _body()
            )

    assert not stream_complete and _decode(streamed) == ["message_start", "content_block_start"]
    # Before the head: the connection is reset with no response at all.
    assert (whole_status, whole, whole_complete) == (0, b"", False)
    # After it: a head promising more body than comes.
    assert cut_status == 200 and cut and not cut_complete
    # A scripted fault is not a crash: nothing at ERROR in the log (the
    # embedded simulator shares the gateway's log).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


STALL_SECONDS = 0.3
"""Short enough to keep the suite fast, long enough to measure on a busy host."""


async def test_simulator_stall_delays_the_head_and_the_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(verify_signatures=False) as sim:
            sim.script(Stall(seconds=STALL_SECONDS), Stall(seconds=STALL_SECONDS, after_events=3))
            started = trio.current_time()
            status, _, complete = await _raw_call(sim.url, f"/model/{PROFILE}/invoke", _body())
            head_stalled = trio.current_time() - started
            started = trio.current_time()
            _, streamed, _ = await _raw_call(sim.url, STREAM_PATH, _body())
            stream_stalled = trio.current_time() - started

    assert status == 200 and complete
    assert head_stalled >= STALL_SECONDS and stream_stalled >= STALL_SECONDS
    assert _decode(streamed)[-1] == "message_stop"


async def test_simulator_control_api_scripts_and_lists() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_simulator(verify_signatures=False) as sim:
            script = {"scenarios": [{"type": "fail", "name": "ServiceUnavailableException"}], "model": PROFILE}
            queued_status, queued, _ = await _raw_call(sim.url, "/_sim/script", json.dumps(script).encode())
            other, _, _ = await _raw_call(sim.url, "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke", _body())
            failed, _, _ = await _raw_call(sim.url, f"/model/{PROFILE}/invoke", _body())
            bad, _, _ = await _raw_call(sim.url, "/_sim/script", b'[{"type": "nope"}]')
            _, listed, _ = await _raw_call(sim.url, "/_sim/requests", b"", method="GET")

    assert queued_status == 200 and json.loads(queued) == {"queued": 1}
    assert other == 200 and failed == 503 and bad == 400
    records = json.loads(listed)
    assert [record["status"] for record in records] == [200, 503]
    assert records[1]["error"] == "ServiceUnavailableException"
    assert records[0]["body"]["messages"][0]["content"] == "hi"
