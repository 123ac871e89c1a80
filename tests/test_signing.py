"""SigV4 and bearer signing: published vectors, and agreement with stock botocore."""

from __future__ import annotations

import datetime
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.bedrock.signing import (
    AwsCredentials,
    _sign_plain_request,
    bearer_auth,
    model_path,
    sign_request,
    signing_key,
)

# The credentials and time of the AWS SigV4 test suite (aws-sig-v4-test-suite).
SUITE_CREDENTIALS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_TIME = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.UTC)
BEDROCK_URL = "https://bedrock-runtime.us-east-1.amazonaws.com"
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def botocore_headers(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime.datetime,
) -> list[tuple[str, str]]:
    """What unmodified botocore signs, its clock pinned to ``now``."""
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    signer = SigV4Auth(
        Credentials(credentials.access_key, credentials.secret_key, credentials.token),
        service,
        region,
    )
    naive = now.astimezone(datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
        signer.add_auth(request)
    return list(request.headers.items())


def test_sign_request_matches_the_published_get_vanilla_vector() -> None:
    signed = sign_request(
        "GET", "https://example.amazonaws.com/", {"Host": "example.amazonaws.com"}, b"",
        SUITE_CREDENTIALS, "us-east-1", "service", SUITE_TIME,
    )

    assert header(signed, "authorization") == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )
    assert header(signed, "x-amz-date") == "20150830T123600Z"


def test_sign_request_matches_the_published_post_vanilla_vector() -> None:
    signed = sign_request(
        "POST", "https://example.amazonaws.com/", {"Host": "example.amazonaws.com"}, b"",
        SUITE_CREDENTIALS, "us-east-1", "service", SUITE_TIME,
    )

    authorization = header(signed, "authorization") or ""
    assert authorization.endswith(
        "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
    )


def test_signing_key_matches_the_published_derivation_example() -> None:
    key = signing_key(SUITE_CREDENTIALS.secret_key, "20150830", "us-east-1", "iam")

    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


def test_model_path_encodes_as_boto3_does() -> None:
    assert model_path(MODEL, "invoke") == (
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    )
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.x-v1:0"
    assert model_path(arn, "count-tokens") == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile"
        "%2Fus.anthropic.x-v1%3A0/count-tokens"
    )


def test_sign_request_matches_botocore_for_a_bedrock_invoke() -> None:
    url = BEDROCK_URL + model_path(MODEL, "invoke")
    headers = {"content-type": "application/json", "accept": "application/json"}
    body = b'{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[]}'
    now = datetime.datetime(2026, 12, 4, 15, 1, 2, tzinfo=datetime.UTC)

    ours = sign_request("POST", url, headers, body, SUITE_CREDENTIALS, "us-east-1", "bedrock", now)
    theirs = botocore_headers("POST", url, headers, body, SUITE_CREDENTIALS, "us-east-1", "bedrock", now)

    assert ours == theirs
    # The same signed header set boto3 sends (recorded in CLIENTS.md).
    assert "SignedHeaders=accept;content-type;host;x-amz-date," in (header(ours, "authorization") or "")
    assert header(ours, "x-amz-content-sha256") is None
    assert header(ours, "x-amz-security-token") is None


def test_sign_request_adds_and_signs_the_session_token() -> None:
    credentials = AwsCredentials("ASIAEXAMPLE", "secret", "the-session-token")
    url = BEDROCK_URL + model_path(MODEL, "invoke-with-response-stream")

    signed = sign_request(
        "POST", url, {"content-type": "application/json"}, b"{}", credentials,
        "eu-west-1", "bedrock", SUITE_TIME,
    )

    assert header(signed, "x-amz-security-token") == "the-session-token"
    authorization = header(signed, "authorization") or ""
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token," in authorization
    assert "/20150830/eu-west-1/bedrock/aws4_request" in authorization


def test_sign_request_takes_naive_and_zoned_times_as_the_same_instant() -> None:
    zoned = datetime.datetime(2026, 1, 1, 1, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    naive_utc = datetime.datetime(2025, 12, 31, 23, 30)
    args = ("POST", BEDROCK_URL + "/model/m/invoke", {}, b"", SUITE_CREDENTIALS, "us-east-1", "bedrock")

    assert sign_request(*args, zoned) == sign_request(*args, naive_utc)  # type: ignore[arg-type]
    assert header(sign_request(*args, zoned), "x-amz-date") == "20251231T233000Z"  # type: ignore[arg-type]


def test_sign_request_signs_an_explicit_host_with_a_port() -> None:
    url = "http://127.0.0.1:8123" + model_path(MODEL, "invoke")
    headers = {"Host": "127.0.0.1:8123", "content-type": "application/json"}

    ours = sign_request("POST", url, headers, b"{}", SUITE_CREDENTIALS, "us-east-1", "bedrock", SUITE_TIME)
    derived = botocore_headers(
        "POST", url, {"content-type": "application/json"}, b"{}", SUITE_CREDENTIALS,
        "us-east-1", "bedrock", SUITE_TIME,
    )

    assert header(ours, "authorization") == header(derived, "authorization")


header_names = st.sampled_from(
    ["content-type", "accept", "x-amzn-bedrock-accept", "X-Custom", "anthropic-beta", "User-Agent"]
)
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(
    model_id=st.text(min_size=1, max_size=60),
    action=st.sampled_from(["invoke", "invoke-with-response-stream", "count-tokens"]),
    headers=st.dictionaries(header_names, header_values, max_size=5),
    body=st.binary(max_size=2000),
    token=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    region=st.sampled_from(["us-east-1", "eu-central-1", "ap-northeast-1", "cn-north-1"]),
    seconds=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_sign_request_agrees_with_botocore_on_any_request(
    model_id: str,
    action: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    region: str,
    seconds: int,
) -> None:
    credentials = AwsCredentials("AKIDEXAMPLE", "secret/with+chars", token)
    now = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    url = BEDROCK_URL + model_path(model_id, action)

    ours = sign_request("POST", url, headers, body, credentials, region, "bedrock", now)
    theirs = botocore_headers("POST", url, headers, body, credentials, region, "bedrock", now)

    assert ours == theirs


def test_sign_request_signs_a_bedrock_call_without_botocore_with_the_same_bytes() -> None:
    url = BEDROCK_URL + model_path(MODEL, "invoke-with-response-stream")
    headers = [
        ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("content-type", "application/json"),
        ("x-amzn-bedrock-accept", "application/json"),
    ]
    credentials = AwsCredentials("ASIAEXAMPLE", "secret", "the-session-token")
    now = datetime.datetime(2026, 12, 4, 15, 1, 2, tzinfo=datetime.UTC)

    fast = _sign_plain_request("POST", url, headers, b"{}", credentials, "us-east-1", "bedrock", now)
    theirs = botocore_headers(
        "POST", url, dict(headers), b"{}", credentials, "us-east-1", "bedrock", now
    )

    assert fast is not None
    assert fast == theirs


host_header_names = st.sampled_from(["host", "Host", "HOST"])
any_header_names = st.sampled_from(
    [
        "content-type", "Content-Type", "accept", "x-amzn-bedrock-accept", "anthropic-beta",
        "User-Agent", "expect", "X-Amzn-Trace-Id", "Date", "X-Amz-Date",
        "X-Amz-Security-Token", "x-amz-content-sha256", "Authorization", "x-custom",
    ]
)

# Values where botocore's whitespace folding matters.
spaced_header_values = st.text(st.sampled_from([" ", "\t", "a", "B", "/", ";", "=", "*"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    model_id=st.text(min_size=1, max_size=60),
    action=st.sampled_from(["invoke", "invoke-with-response-stream", "count-tokens"]),
    host_name=host_header_names,
    host=st.sampled_from(["bedrock-runtime.us-east-1.amazonaws.com", "127.0.0.1:8123"]),
    headers=st.dictionaries(any_header_names, spaced_header_values, max_size=6),
    body=st.binary(max_size=2000),
    token=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    region=st.sampled_from(["us-east-1", "eu-central-1", "ap-northeast-1", "cn-north-1"]),
    seconds=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_sign_request_with_a_host_header_agrees_with_botocore_on_any_request(
    model_id: str,
    action: str,
    host_name: str,
    host: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    region: str,
    seconds: int,
) -> None:
    credentials = AwsCredentials("AKIDEXAMPLE", "secret/with+chars", token)
    now = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    url = BEDROCK_URL + model_path(model_id, action)
    sent = {host_name: host, **headers}

    ours = sign_request("POST", url, sent, body, credentials, region, "bedrock", now)
    theirs = botocore_headers("POST", url, sent, body, credentials, region, "bedrock", now)

    assert ours == theirs


def test_bearer_auth_replaces_any_authorization_and_adds_no_sigv4_headers() -> None:
    signed = bearer_auth(
        [("content-type", "application/json"), ("Authorization", "stale")], "ABSK-key"
    )

    assert signed == [("content-type", "application/json"), ("Authorization", "Bearer ABSK-key")]


def test_credentials_repr_hides_the_secret_and_token() -> None:
    text = repr(AwsCredentials("AKID", "very-secret", "very-token"))

    assert "very-secret" not in text and "very-token" not in text
    assert "AKID" in text
