"""Assume-role credentials: a loopback STS stand-in issues short-lived keys."""

from __future__ import annotations

import datetime
import itertools
import urllib.parse

import pytest
import trio

from ccag.bedrock.errors import CredentialsError
from ccag.bedrock.sts import parse_assume_role_response
from ccag.config import load_config
from ccag.server import serve
from ccag.server.types import Request, Responder
from tests.e2e_client import message_body, post_messages
from tests.endpoints_fixture import SimEndpoint, open_endpoints

TIMEOUT_S = 30

# Short enough that a test sees two expiries in a few seconds.
LIFETIME_SECONDS = 2.0

RESPONSE = """<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>{key}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>token-{key}</SessionToken>
      <Expiration>{expiry}</Expiration>
    </Credentials>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/ccag</Arn></AssumedRoleUser>
  </AssumeRoleResult>
</AssumeRoleResponse>"""


class ExpiringSecrets(dict):
    """Secrets the simulator accepts only until their expiry, as AWS does."""

    def __init__(self) -> None:
        super().__init__()
        self.expiries: dict[str, datetime.datetime] = {}

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        expiry = self.expiries.get(key)
        if expiry is not None and expiry <= datetime.datetime.now(datetime.UTC):
            return default
        return super().get(key, default)


class StsStandIn:
    """Issues credentials the simulator accepts until they expire."""

    def __init__(self, accepted: ExpiringSecrets) -> None:
        self.accepted = accepted
        self.calls: list[dict[str, str]] = []
        self._serial = itertools.count()

    async def __call__(self, request: Request, responder: Responder) -> None:
        now = datetime.datetime.now(datetime.UTC)
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        self.calls.append(form)
        if "sts" not in (request.headers.get("authorization") or ""):
            body, status = b"<ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error></ErrorResponse>", 403
        else:
            key = f"ASIATEST{next(self._serial):08d}"
            secret = f"secret-{key}"
            expiry = now + datetime.timedelta(seconds=LIFETIME_SECONDS)
            self.accepted[key] = secret
            self.accepted.expiries[key] = expiry
            text = RESPONSE.format(key=key, secret=secret, expiry=expiry.isoformat().replace("+00:00", "Z"))
            body, status = text.encode(), 200
        await responder.start_response(status, [("content-type", "text/xml"), ("content-length", str(len(body)))])
        await responder.send_data(body)
        await responder.end_response()


def test_parse_assume_role_response() -> None:
    text = RESPONSE.format(key="ASIA1", secret="s", expiry="2030-01-01T00:00:00Z").encode()
    credentials, expiry = parse_assume_role_response(text)
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("ASIA1", "s", "token-ASIA1")
    assert expiry == datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(CredentialsError):
        parse_assume_role_response(b"<AssumeRoleResponse/>")
    with pytest.raises(CredentialsError):
        parse_assume_role_response(b"not xml")


async def test_requests_keep_succeeding_across_credential_expiry(tmp_path) -> None:
    accepted = ExpiringSecrets()
    stand_in = StsStandIn(accepted)
    config = load_config({"host": "127.0.0.1", "port": 0}, environ={})
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            sts_port = await nursery.start(lambda task_status: serve(stand_in, config, task_status=task_status))
            endpoint = SimEndpoint(
                "cross-account",
                "us-east-1",
                options={"credentials": accepted},
                credentials={
                    "type": "assume_role",
                    "role_arn": "arn:aws:iam::210987654321:role/bedrock",
                    "external_id": "ccag-test",
                    "access_key_id": "AKIDSOURCE",
                    "secret_access_key": "source-secret",
                    "sts_url": f"http://127.0.0.1:{sts_port}",
                    "duration_seconds": 900,
                },
            )
            async with open_endpoints(tmp_path, [endpoint]) as running:
                statuses = []
                for _ in range(4):
                    reply = await post_messages(running.port, running.key, message_body())
                    statuses.append(reply.status)
                    await trio.sleep(LIFETIME_SECONDS * 0.6)
            nursery.cancel_scope.cancel()

    assert statuses == [200, 200, 200, 200]
    assert len(stand_in.calls) >= 2
    first = stand_in.calls[0]
    assert first["Action"] == "AssumeRole" and first["RoleArn"].endswith(":role/bedrock")
    assert first["ExternalId"] == "ccag-test" and first["DurationSeconds"] == "900"
