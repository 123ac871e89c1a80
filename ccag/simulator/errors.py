"""Bedrock's error responses, as the simulator sends them.

Bedrock answers a failed call with a JSON body ``{"message": "..."}`` and the
exception's name in ``x-amzn-ErrorType``, suffixed with the Coral namespace the
way the real service does it. Inside a stream the same failures arrive as
exception frames named in lower camel case (``throttlingException``).
"""

from __future__ import annotations

import json

from ccag.eventstream import encode_message

# The HTTP status of each exception, from the bedrock-runtime service model
# (and the AWS front end for the authentication failures).
STATUS_BY_EXCEPTION: dict[str, int] = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "IncompleteSignatureException": 403,
    "MissingAuthenticationTokenException": 403,
    "ExpiredTokenException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}

DEFAULT_MESSAGES: dict[str, str] = {
    "ValidationException": "Malformed input request, please reformat your input and try again.",
    "ServiceQuotaExceededException": "You have exceeded the service quota for this model.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ResourceNotFoundException": "Could not resolve the foundation model from the provided model identifier.",
    "ModelTimeoutException": "Model has timed out in processing the request. Try your request again.",
    "ModelErrorException": "The model returned an error. Try your request again.",
    "ModelStreamErrorException": "The model stream returned an error. Try your request again.",
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ModelNotReadyException": "Model is not ready to serve inference requests. Try your request again later.",
    "InternalServerException": "The system encountered an unexpected error during processing. Try your request again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
}

# Front-end (authentication) failures come from a different Coral namespace.
_FRONT_END_EXCEPTIONS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
    }
)
_BEDROCK_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_FRONT_END_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.coral.service/"


class BedrockError(Exception):
    """A failure the simulator answers the way Bedrock would.

    Args:
        name: the exception name, such as ``ThrottlingException``.
        message: the text of the ``message`` field; a stock one if omitted.
        status: the HTTP status; from :data:`STATUS_BY_EXCEPTION` if omitted
            (500 for a name the table does not know).
    """

    def __init__(self, name: str, message: str | None = None, status: int | None = None) -> None:
        self.name = name
        self.message = message or DEFAULT_MESSAGES.get(name, name)
        self.status = status or STATUS_BY_EXCEPTION.get(name, 500)
        super().__init__(f"{self.status} {name}: {self.message}")

    def error_type_header(self) -> str:
        namespace = _FRONT_END_NAMESPACE if self.name in _FRONT_END_EXCEPTIONS else _BEDROCK_NAMESPACE
        return f"{self.name}:{namespace}"

    def body(self) -> bytes:
        return json.dumps({"message": self.message}, separators=(",", ":")).encode()

    def response_headers(self, request_id: str) -> list[tuple[str, str]]:
        return [
            ("content-type", "application/json"),
            ("content-length", str(len(self.body()))),
            ("x-amzn-requestid", request_id),
            ("x-amzn-errortype", self.error_type_header()),
        ]


def validation_error(message: str) -> BedrockError:
    return BedrockError("ValidationException", message)


def exception_frame(exception_type: str, message: str) -> bytes:
    """One event-stream exception frame, as Bedrock ends a failing stream.

    Args:
        exception_type: the lower-camel-case name (``throttlingException``).
        message: the ``message`` of the JSON payload.
    """
    payload = json.dumps({"message": message}, separators=(",", ":")).encode()
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, payload)
