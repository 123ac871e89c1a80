import json

import pytest

from ccag.anthropic.errors import (
    DEFAULT_RETRY_AFTER_SECONDS,
    MAX_MESSAGE_CHARS,
    MAX_RETRY_AFTER_SECONDS,
    UpstreamApiError,
    error_from_error_event,
    error_from_exception_frame,
    error_from_response,
    scrub_message,
)
from ccag.bedrock.facts import bedrock_facts

ERROR_FACTS = {
    name: fact
    for name, fact in bedrock_facts()["errors"].items()
    if not name.startswith("_")
}


def bedrock_error(
    status: int, name: str | None, body: bytes, **headers: str
) -> UpstreamApiError:
    header_list = [(key.replace("_", "-"), value) for key, value in headers.items()]
    if name is not None:
        header_list.append(("X-Amzn-ErrorType", name))
    return error_from_response(status, header_list, body)


@pytest.mark.parametrize("name", sorted(ERROR_FACTS))
def test_response_error_named_in_header_follows_the_facts(name: str) -> None:
    fact = ERROR_FACTS[name]

    error = bedrock_error(
        400,
        f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        b'{"message":"m"}',
    )

    assert (error.status, error.error_type, error.metric_error_type) == (
        fact["status"],
        fact["type"],
        fact["metric"],
    )
    assert error.message == "m"
    assert error.upstream_exception == name


def test_response_error_named_in_body_type() -> None:
    body = b'{"__type":"com.amazon.coral.validate#ValidationException","Message":"bad input"}'

    error = bedrock_error(400, None, body)

    assert (error.status, error.error_type, error.metric_error_type) == (
        400,
        "invalid_request_error",
        "validation",
    )
    assert error.message == "bad input"


def test_response_error_header_name_beats_body_name() -> None:
    body = b'{"__type":"ValidationException","message":"x"}'

    error = bedrock_error(429, "ThrottlingException", body)

    assert error.error_type == "rate_limit_error"


@pytest.mark.parametrize(
    ("upstream", "status", "error_type", "metric"),
    [
        (400, 400, "invalid_request_error", "validation"),
        (403, 403, "permission_error", "access_denied"),
        (404, 404, "not_found_error", "not_found"),
        (408, 504, "timeout_error", "timeout"),
        (424, 500, "api_error", "server_error"),
        (429, 429, "rate_limit_error", "throttled"),
        (500, 500, "api_error", "server_error"),
        (502, 502, "api_error", "server_error"),
        (503, 529, "overloaded_error", "server_error"),
        (504, 504, "timeout_error", "timeout"),
        (413, 413, "request_too_large", "validation"),
        (418, 400, "invalid_request_error", "validation"),
        (599, 502, "api_error", "server_error"),
        (302, 502, "api_error", "server_error"),
    ],
)
def test_response_error_without_a_name_falls_back_on_status(
    upstream: int, status: int, error_type: str, metric: str
) -> None:
    error = bedrock_error(upstream, None, b"")

    assert (error.status, error.error_type, error.metric_error_type) == (
        status,
        error_type,
        metric,
    )
    assert error.message == f"Bedrock returned HTTP {upstream}"


def test_response_error_unknown_name_falls_back_on_status() -> None:
    error = bedrock_error(500, "BrandNewException", b"{}")

    assert (error.status, error.error_type) == (500, "api_error")
    assert error.message == "Bedrock returned BrandNewException"


def test_response_error_ignores_a_name_that_is_not_a_name() -> None:
    error = bedrock_error(400, "<script>", b"")

    assert error.upstream_exception is None
    assert error.message == "Bedrock returned HTTP 400"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe\x00",
        b"[1,2]",
        b'"text"',
        b"{" * 100_000,
        b"{" * 1000,
    ],
)
def test_response_error_garbage_body_gives_a_clean_error(body: bytes) -> None:
    error = bedrock_error(500, "InternalServerException", body)

    assert error.status == 500
    assert error.message == "Bedrock returned InternalServerException"
    assert json.loads(error.body())["error"]["type"] == "api_error"


def test_response_error_huge_message_is_bounded() -> None:
    body = json.dumps({"message": "x" * 50_000}).encode()

    error = bedrock_error(400, "ValidationException", body)

    assert len(error.message) == MAX_MESSAGE_CHARS
    assert error.message.endswith("...")


def test_response_error_body_over_the_size_limit_is_not_parsed() -> None:
    body = json.dumps({"message": "secret", "pad": "x" * 100_000}).encode()

    assert bedrock_error(400, "ValidationException", body).message == (
        "Bedrock returned ValidationException"
    )


def test_response_error_message_loses_account_ids_and_arns() -> None:
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/gw/i-0abc is not authorized "
        "to perform: bedrock:InvokeModel on resource: "
        "arn:aws-us-gov:bedrock:us-gov-west-1:210987654321:inference-profile/us.anthropic.x "
        "in account 123456789012."
    )

    error = bedrock_error(
        403, "AccessDeniedException", json.dumps({"message": message}).encode()
    )

    assert "123456789012" not in error.message
    assert "210987654321" not in error.message
    assert "arn:" not in error.message
    assert error.message == (
        "User: <arn> is not authorized to perform: bedrock:InvokeModel on resource: "
        "<arn> in account <account-id>."
    )


def test_scrub_message_keeps_other_numbers() -> None:
    assert scrub_message("max_tokens 64000 > 1234567890123 and 12345678901") == (
        "max_tokens 64000 > 1234567890123 and 12345678901"
    )


def test_throttle_passes_bedrock_retry_after_on() -> None:
    error = bedrock_error(
        429, "ThrottlingException", b'{"message":"slow down"}', retry_after="17"
    )

    assert ("retry-after", "17") in error.headers
    assert error.is_throttle


@pytest.mark.parametrize("sent", [None, "", "soon", "-3", "1.5", "9" * 40])
def test_throttle_without_usable_retry_after_gets_the_default(sent: str | None) -> None:
    headers = {} if sent is None else {"Retry-After": sent}

    error = bedrock_error(429, "ThrottlingException", b"", **headers)

    assert error.headers == [("retry-after", str(DEFAULT_RETRY_AFTER_SECONDS))]


def test_throttle_retry_after_is_clamped() -> None:
    error = bedrock_error(429, None, b"", retry_after="86400")

    assert error.headers == [("retry-after", str(MAX_RETRY_AFTER_SECONDS))]


def test_non_throttle_carries_no_retry_after() -> None:
    error = bedrock_error(400, "ValidationException", b"", retry_after="3")

    assert error.headers == []
    assert not error.is_throttle


@pytest.mark.parametrize(
    ("exception_type", "status", "error_type", "metric"),
    [
        ("throttlingException", 429, "rate_limit_error", "throttled"),
        ("validationException", 400, "invalid_request_error", "validation"),
        ("modelStreamErrorException", 500, "api_error", "stream_error"),
        ("internalServerException", 500, "api_error", "server_error"),
        ("modelTimeoutException", 504, "timeout_error", "timeout"),
        ("serviceUnavailableException", 529, "overloaded_error", "server_error"),
        ("somethingNewException", 500, "api_error", "stream_error"),
        ("", 500, "api_error", "stream_error"),
    ],
)
def test_exception_frame_maps_to_the_clients_error(
    exception_type: str, status: int, error_type: str, metric: str
) -> None:
    error = error_from_exception_frame(exception_type, b'{"message":"went wrong"}')

    assert (error.status, error.error_type, error.metric_error_type) == (
        status,
        error_type,
        metric,
    )
    assert error.message == "went wrong"
    event = error.sse_event()
    assert event.startswith(b"event: error\ndata: ")
    assert json.loads(event[len(b"event: error\ndata: ") :]) == {
        "type": "error",
        "error": {"type": error_type, "message": "went wrong"},
    }


def test_exception_frame_with_garbage_payload() -> None:
    error = error_from_exception_frame("modelStreamErrorException", b"\x00garbage")

    assert error.message == "Bedrock returned modelStreamErrorException"


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 529),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("invalid_request_error", 400),
        ("timeout_error", 504),
        ("made_up_error", 500),
    ],
)
def test_error_event_in_stream_keeps_its_type(error_type: str, status: int) -> None:
    error = error_from_error_event(
        {"type": "error", "error": {"type": error_type, "message": "m"}}
    )

    assert error.status == status
    assert error.error_type == (
        error_type if error_type != "made_up_error" else "api_error"
    )


def test_error_event_without_details() -> None:
    error = error_from_error_event({"type": "error", "error": "nope"})

    assert (error.status, error.error_type) == (500, "api_error")
    assert error.message == "Bedrock reported an error in the stream"
