"""The errors of the outbound shell: what can go wrong on the way to Bedrock.

They are named for what the caller should do about them, as trio and httpcore
name theirs: could not connect (nothing was sent, try another endpoint), timed
out, Bedrock spoke garbage, the connection broke half-way through a body, or no
credentials could be had. The h11, trio, ssl, OS or botocore exception that
caused one is chained as ``__cause__``; nothing foreign escapes ``ccag.bedrock``.
"""

from __future__ import annotations

from ccag.errors import CcagError, ProtocolError


class UpstreamError(CcagError):
    """Talking to Bedrock failed below the HTTP level."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made: DNS, refused, unreachable or TLS failure.

    Nothing of the request reached Bedrock, so another endpoint may be tried.
    """


class UpstreamTimeout(UpstreamError):
    """Bedrock did not answer within the time it was given.

    Attributes:
        phase: ``"connect"``, ``"pool"`` (waiting for a free connection slot),
            ``"first_byte"`` (waiting for the response head) or ``"read"``
            (waiting for more of the body).
    """

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class UpstreamProtocolError(UpstreamError, ProtocolError):
    """Bedrock's bytes are not HTTP/1.1, or a body broke a limit we set."""


class UpstreamClosed(UpstreamError):
    """The connection broke after the response had started."""


class CredentialsError(UpstreamError):
    """No AWS credentials could be found or refreshed; nothing was sent."""
