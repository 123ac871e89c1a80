"""A tiny scripted HTTP/1.1 server for the upstream client tests.

It records every connection and request, lets each test script the answer
(including garbage, stalls and abrupt closes), and can check a request's
SigV4 signature by recomputing it with stock botocore.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable

import attrs
import h11
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

READ_SIZE = 65536


@attrs.define
class RecordedRequest:
    connection_id: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.define
class ServerConnection:
    """What a script gets to answer one request with."""

    connection_id: int
    stream: trio.abc.Stream
    h11: h11.Connection

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def respond(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        chunked: bool = False,
    ) -> None:
        """A whole response, framed by Content-Length or chunked."""
        head = list(headers or [])
        if chunked:
            head.append(("transfer-encoding", "chunked"))
        else:
            head.append(("content-length", str(len(body))))
        await self.send(h11.Response(status_code=status, headers=head))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def wait_for_eof(self) -> bool:
        """Whether the client closed its end (True) rather than sending more."""
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except trio.BrokenResourceError:
            return True
        return data == b""


# A script answers one request. It returns True to keep the connection for
# the next request, False to close it.
Script = Callable[[RecordedRequest, ServerConnection], Awaitable[bool]]


async def answer_ok(request: RecordedRequest, connection: ServerConnection) -> bool:
    await connection.respond(200, b'{"ok":true}', [("content-type", "application/json")])
    return True


@attrs.define
class FakeUpstream:
    """Serve scripted answers on 127.0.0.1; see :func:`serve_fake_upstream`."""

    script: Script
    ssl_context: ssl.SSLContext | None = None
    port: int = 0
    requests: list[RecordedRequest] = attrs.Factory(list)
    connections_accepted: int = 0
    eof_seen: list[int] = attrs.Factory(list)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections_accepted += 1
        connection_id = self.connections_accepted
        byte_stream: trio.abc.Stream = stream
        if self.ssl_context is not None:
            byte_stream = trio.SSLStream(stream, self.ssl_context, server_side=True)
        connection = ServerConnection(connection_id, byte_stream, h11.Connection(h11.SERVER))
        try:
            await self._serve_connection(connection)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(byte_stream)

    async def _serve_connection(self, connection: ServerConnection) -> None:
        while True:
            request = await self._read_request(connection)
            if request is None:
                self.eof_seen.append(connection.connection_id)
                return
            self.requests.append(request)
            if not await self.script(request, connection):
                return
            if connection.h11.our_state is not h11.DONE:
                return
            connection.h11.start_next_cycle()

    async def _read_request(self, connection: ServerConnection) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.h11.next_event()
            if event is h11.NEED_DATA:
                data = await connection.stream.receive_some(READ_SIZE)
                if not data and head is None:
                    return None
                connection.h11.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return RecordedRequest(
                    connection.connection_id,
                    head.method.decode(),
                    head.target.decode(),
                    [(n.decode(), v.decode()) for n, v in head.headers],
                    bytes(body),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None


def parse_authorization(value: str) -> dict[str, str]:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = value.partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    fields = {}
    for part in rest.split(","):
        key, _, item = part.strip().partition("=")
        fields[key] = item
    return fields


def expected_signature(
    request: RecordedRequest,
    secret_key: str,
    scheme: str = "http",
) -> tuple[str, str]:
    """Recompute a received request's signature with stock botocore.

    Returns:
        (expected signature, botocore's canonical request).
    """
    fields = parse_authorization(request.header("authorization") or "")
    access_key, date, region, service, _ = fields["Credential"].split("/")
    token = request.header("x-amz-security-token")
    signer = SigV4Auth(Credentials(access_key, secret_key, token), service, region)

    host = request.header("host")
    aws_request = AWSRequest(
        method=request.method, url=f"{scheme}://{host}{request.target}", data=request.body
    )
    for name in fields["SignedHeaders"].split(";"):
        value = request.header(name)
        assert value is not None, f"signed header {name} was not sent"
        aws_request.headers[name] = value
    aws_request.context["timestamp"] = request.header("x-amz-date")
    assert aws_request.context["timestamp"][:8] == date

    canonical = signer.canonical_request(aws_request)
    string_to_sign = signer.string_to_sign(aws_request, canonical)
    return signer.signature(string_to_sign, aws_request), canonical


async def open_fake_upstream(
    nursery: trio.Nursery, script: Script = answer_ok, ssl_context: ssl.SSLContext | None = None
) -> FakeUpstream:
    """Start a fake upstream in ``nursery`` and return it once it listens."""
    fake = FakeUpstream(script, ssl_context)
    await nursery.start(functools.partial(fake.serve))
    return fake
