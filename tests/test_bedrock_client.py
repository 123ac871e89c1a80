"""BedrockClient against a scripted h11 server on 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import pytest
import trio
import trustme

from ccag.bedrock.client import BedrockClient
from ccag.bedrock.credentials import CredentialSource
from ccag.bedrock.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccag.bedrock.signing import AwsCredentials, model_path
from ccag.errors import InternalError
from tests.upstream_fakes import (
    FakeUpstream,
    RecordedRequest,
    ServerConnection,
    expected_signature,
    open_fake_upstream,
    parse_authorization,
)

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
TIMEOUT = 10


class CountingSource(CredentialSource):
    """Static credentials that count how often they were asked for."""

    def __init__(self, token: str | None = None) -> None:
        credentials = AwsCredentials("AKIDEXAMPLE", SECRET, token)
        super().__init__(lambda: (credentials, None))
        self.calls = 0

    async def get(self) -> AwsCredentials:
        self.calls += 1
        return await super().get()


@asynccontextmanager
async def client_for(
    fake: FakeUpstream, scheme: str = "http", **kwargs: object
) -> AsyncIterator[BedrockClient]:
    kwargs.setdefault("credentials", CountingSource())
    client = BedrockClient(
        f"{scheme}://127.0.0.1:{fake.port}", "us-east-1", connect_timeout=5, **kwargs
    )
    try:
        yield client
    finally:
        await client.aclose()


async def post_and_read(client: BedrockClient, path: str = "/model/m/invoke") -> tuple[int, bytes]:
    async with client.post(path, b'{"a":1}', headers=JSON_HEADERS) as response:
        return response.status, await response.read_all(1 << 20)


async def test_client_reuses_one_connection_for_sequential_requests() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery)
            async with client_for(fake) as client:
                results = [await post_and_read(client) for _ in range(3)]
            nursery.cancel_scope.cancel()

    assert results == [(200, b'{"ok":true}')] * 3
    assert fake.connections_accepted == 1
    assert [request.connection_id for request in fake.requests] == [1, 1, 1]


async def test_client_signs_model_id_and_arn_paths_as_bedrock_checks() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery)
            credentials = CountingSource(token="session-token")
            async with client_for(fake, credentials=credentials) as client:
                for model in (MODEL, ARN):
                    path = model_path(model, "invoke-with-response-stream")
                    await post_and_read(client, path)
            nursery.cancel_scope.cancel()

    first, second = fake.requests
    assert first.target == (
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    )
    assert second.target == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
        "application-inference-profile%2Fabc123/invoke-with-response-stream"
    )
    for request, encoded in ((first, "v1%253A0"), (second, "profile%252Fabc123")):
        signature = parse_authorization(request.header("authorization") or "")["Signature"]
        expected, canonical = expected_signature(request, SECRET)
        assert signature == expected
        assert encoded in canonical.splitlines()[1]
        assert request.header("x-amz-security-token") == "session-token"
        assert request.header("host") == f"127.0.0.1:{fake.port}"
    assert credentials.calls == 2


async def test_client_sends_bearer_token_instead_of_a_signature() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery)
            async with client_for(fake, credentials=None, bearer_token="ABSK-key") as client:
                assert await post_and_read(client) == (200, b'{"ok":true}')
            nursery.cancel_scope.cancel()

    (request,) = fake.requests
    assert request.header("authorization") == "Bearer ABSK-key"
    assert request.header("x-amz-date") is None
    assert request.body == b'{"a":1}'


async def test_client_reads_chunked_content_length_and_close_delimited_bodies() -> None:
    body = b"x" * 200_000

    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        if request.target.endswith("chunked"):
            await connection.send(
                h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])
            )
            for start in range(0, len(body), 7000):
                await connection.send(h11.Data(data=body[start : start + 7000]))
            await connection.send(h11.EndOfMessage())
            return True
        if request.target.endswith("length"):
            await connection.respond(200, body)
            return True
        await connection.stream.send_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body)
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                for kind in ("chunked", "length", "close"):
                    status, received = await post_and_read(client, f"/model/m/{kind}")
                    assert (status, received) == (200, body), kind
            nursery.cancel_scope.cancel()

    # chunked and length shared one connection; the close-delimited one
    # could not be reused afterwards.
    assert [request.connection_id for request in fake.requests] == [1, 1, 1]


async def test_client_returns_error_status_and_headers() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.respond(
            429,
            b'{"message":"Too many requests"}',
            [("x-amzn-ErrorType", "ThrottlingException:http://internal.amazon.com/")],
        )
        return True

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                async with client.post("/model/m/invoke", b"{}") as response:
                    status = response.status
                    error_type = response.header("x-amzn-errortype")
                    body = await response.read_all(1000)
                assert client.pool.idle_count == 1
            nursery.cancel_scope.cancel()

    assert status == 429
    assert error_type == "ThrottlingException:http://internal.amazon.com/"
    assert body == b'{"message":"Too many requests"}'


def _slow_stream_script(saw_eof: trio.Event) -> object:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.send(
            h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])
        )
        await connection.send(h11.Data(data=b"first"))
        if await connection.wait_for_eof():
            saw_eof.set()
        return False

    return script


async def test_client_closes_the_connection_when_the_caller_leaves_early() -> None:
    saw_eof = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, _slow_stream_script(saw_eof))  # type: ignore[arg-type]
            async with client_for(fake) as client:
                async with client.post("/model/m/invoke-with-response-stream", b"{}") as response:
                    assert await response.receive_some() == b"first"
                await saw_eof.wait()
                assert client.pool.idle_count == 0
            nursery.cancel_scope.cancel()


async def test_client_closes_the_connection_when_cancelled_mid_stream() -> None:
    saw_eof = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, _slow_stream_script(saw_eof))  # type: ignore[arg-type]
            async with client_for(fake) as client:
                with trio.move_on_after(0.2) as scope:
                    async with client.post("/model/m/x", b"{}") as response:
                        assert await response.receive_some() == b"first"
                        await response.receive_some()
                assert scope.cancelled_caught
                await saw_eof.wait()
                assert client.pool.idle_count == 0
            nursery.cancel_scope.cancel()


async def test_client_retries_once_when_a_pooled_connection_turns_out_closed() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        # The second request on the first connection meets a server that
        # closed it: no answer, just EOF.
        if connection.connection_id == 1 and len(fake.requests) == 2:
            return False
        await connection.respond(200, b"done")
        return True

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            credentials = CountingSource()
            async with client_for(fake, credentials=credentials) as client:
                assert await post_and_read(client) == (200, b"done")
                assert await post_and_read(client) == (200, b"done")
            nursery.cancel_scope.cancel()

    assert [request.connection_id for request in fake.requests] == [1, 1, 2]
    # Every attempt was signed afresh, and every signature checks out.
    assert credentials.calls == 3
    for request in fake.requests:
        signature = parse_authorization(request.header("authorization") or "")["Signature"]
        assert signature == expected_signature(request, SECRET)[0]


async def test_client_skips_pooled_connections_the_server_closed_while_idle() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.respond(200, b"done")
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                assert await post_and_read(client) == (200, b"done")
                await trio.sleep(0.05)
                assert await post_and_read(client) == (200, b"done")
            nursery.cancel_scope.cancel()

    assert [request.connection_id for request in fake.requests] == [1, 2]


async def test_client_gives_up_when_a_fresh_connection_closes_unanswered() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                with pytest.raises(UpstreamClosed):
                    await post_and_read(client)
            nursery.cancel_scope.cancel()

    assert len(fake.requests) == 1


async def test_client_reports_a_refused_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with trio.fail_after(TIMEOUT):
        client = BedrockClient(f"http://127.0.0.1:{port}", "us-east-1", CountingSource())
        with pytest.raises(UpstreamConnectError) as caught:
            await post_and_read(client)
        await client.aclose()

    assert isinstance(caught.value.__cause__, OSError)


async def test_client_times_out_waiting_for_the_first_byte() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await trio.sleep_forever()
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                with pytest.raises(UpstreamTimeout) as caught:
                    async with client.post("/model/m/invoke", b"{}", first_byte_timeout=0.2):
                        pass
            nursery.cancel_scope.cancel()

    assert caught.value.phase == "first_byte"
    assert isinstance(caught.value.__cause__, trio.TooSlowError)


async def test_client_times_out_a_silent_body_when_asked_to() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.send(h11.Response(status_code=200, headers=[("content-length", "10")]))
        await trio.sleep_forever()
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                with pytest.raises(UpstreamTimeout) as caught:
                    async with client.post("/m", b"{}", idle_timeout=0.2) as response:
                        await response.receive_some()
            nursery.cancel_scope.cancel()

    assert caught.value.phase == "read"


@pytest.mark.parametrize(
    "garbage",
    [b"HELLO THERE\r\n\r\n", b"HTTP/1.1 999999 Nope\r\n\r\n", b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"],
)
async def test_client_rejects_garbage_from_upstream(garbage: bytes) -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.stream.send_all(garbage)
        await connection.wait_for_eof()
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                with pytest.raises(UpstreamProtocolError) as caught:
                    await post_and_read(client)
            nursery.cancel_scope.cancel()

    assert isinstance(caught.value.__cause__, h11.RemoteProtocolError)


async def test_client_rejects_a_broken_chunked_body() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.stream.send_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n"
        )
        await connection.wait_for_eof()
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                with pytest.raises(UpstreamProtocolError):
                    await post_and_read(client)
            nursery.cancel_scope.cancel()


async def test_client_reports_a_body_cut_short() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.send(h11.Response(status_code=200, headers=[("content-length", "100")]))
        await connection.send(h11.Data(data=b"0123456789"))
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                async with client.post("/m", b"{}") as response:
                    assert await response.receive_some() == b"0123456789"
                    with pytest.raises(UpstreamClosed):
                        await response.receive_some()
                assert client.pool.idle_count == 0
            nursery.cancel_scope.cancel()


async def test_client_refuses_a_body_over_the_limit() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.respond(200, b"y" * 5000)
        return True

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                with pytest.raises(UpstreamProtocolError):
                    async with client.post("/m", b"{}") as response:
                        await response.read_all(4999)
                assert client.pool.idle_count == 0
            nursery.cancel_scope.cancel()


async def test_client_speaks_tls_and_keeps_the_connection() -> None:
    authority = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, ssl_context=server_context)
            async with client_for(fake, "https", ssl_context=client_context) as client:
                results = [await post_and_read(client) for _ in range(2)]
            nursery.cancel_scope.cancel()

    assert results == [(200, b'{"ok":true}')] * 2
    assert fake.connections_accepted == 1
    (first, _) = fake.requests
    signature = parse_authorization(first.header("authorization") or "")["Signature"]
    assert signature == expected_signature(first, SECRET, scheme="https")[0]


async def test_client_refuses_an_untrusted_certificate() -> None:
    authority = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, ssl_context=server_context)
            async with client_for(fake, "https") as client:
                with pytest.raises(UpstreamConnectError) as caught:
                    await post_and_read(client)
            nursery.cancel_scope.cancel()

    assert "certificate" in str(caught.value).lower()


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\rb", "a\nb", "caf\u00e9"])
async def test_client_refuses_to_send_a_header_that_would_break_the_head(value: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery)
            async with client_for(fake) as client:
                with pytest.raises(InternalError):
                    async with client.post("/m", b"{}", headers={"x-test": value}):
                        pass
                assert await post_and_read(client, "/m") == (200, b'{"ok":true}')
            nursery.cancel_scope.cancel()

    assert len(fake.requests) == 1


async def test_client_pools_a_connection_whose_empty_body_was_not_read() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.respond(204 if request.target == "/empty" else 200, b"")
        return True

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                for target in ("/empty", "/zero-length"):
                    async with client.post(target, b"{}") as response:
                        assert response.status in (200, 204)
                    assert client.pool.idle_count == 1
            nursery.cancel_scope.cancel()

    assert [request.connection_id for request in fake.requests] == [1, 1]


async def test_client_does_not_reuse_a_chunked_answer_that_said_close() -> None:
    async def script(request: RecordedRequest, connection: ServerConnection) -> bool:
        await connection.respond(200, b"bye", [("connection", "close")], chunked=True)
        return False

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            fake = await open_fake_upstream(nursery, script)
            async with client_for(fake) as client:
                assert await post_and_read(client) == (200, b"bye")
                assert client.pool.idle_count == 0
                assert await post_and_read(client) == (200, b"bye")
            nursery.cancel_scope.cancel()

    assert [request.connection_id for request in fake.requests] == [1, 2]
