"""Authentication failures, each with the reason the metrics count it under."""

from __future__ import annotations

from ccag.errors import ApiError

# The fixed set of ``reason`` label values of ``ccag.auth_failures.total``.
MISSING_KEY = "missing_key"
INVALID_KEY = "invalid_key"
REVOKED_KEY = "revoked_key"
EXPIRED_KEY = "expired_key"
NOT_ADMIN = "not_admin"
LOGIN_FAILED = "login_failed"
INVALID_SESSION = "invalid_session"
EXPIRED_SESSION = "expired_session"

AUTH_FAILURE_REASONS = (
    MISSING_KEY,
    INVALID_KEY,
    REVOKED_KEY,
    EXPIRED_KEY,
    NOT_ADMIN,
    LOGIN_FAILED,
    INVALID_SESSION,
    EXPIRED_SESSION,
)


class AuthError(ApiError):
    """A request refused for its credentials (401), role (403) or login
    throttling (429).

    Attributes:
        reason: one of :data:`AUTH_FAILURE_REASONS`, for the metric.
    """

    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.reason = reason

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.reason!r}, {self.message!r})"


# When several credentials fail, the most specific refusal is reported: a
# key known to be revoked or expired says more than "not known".
_SPECIFICITY = {
    INVALID_KEY: 0,
    INVALID_SESSION: 0,
    EXPIRED_SESSION: 1,
    EXPIRED_KEY: 1,
    REVOKED_KEY: 2,
}


def most_specific(refusals: list[AuthError]) -> AuthError:
    """The refusal to report when every credential a request offered failed."""
    return max(refusals, key=lambda error: _SPECIFICITY.get(error.reason, 0))
