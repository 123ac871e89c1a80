"""A small blocking client for a running gateway's admin API, for ``ccag admin``.

It talks only to the URL it is given (plain ``http://`` or ``https://``),
sends JSON, and turns the gateway's error envelope into
:class:`AdminApiError`. Session tokens from ``ccag admin login`` are kept per
user in a file only its owner can read, one token per gateway URL.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"

# Seconds to wait for the gateway; admin calls are small and quick, so a
# longer wait means the gateway or the path to it is stuck.
REQUEST_TIMEOUT_SECONDS = 30.0

# The token file holds live credentials: owner only.
TOKEN_FILE_MODE = 0o600
TOKEN_DIRECTORY_MODE = 0o700

# Largest response read; the biggest real answer is a long key listing.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class AdminClientError(Exception):
    """The gateway could not be reached or gave an answer that is not ours."""


class AdminApiError(AdminClientError):
    """The gateway refused the request; ``message`` says why."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {error_type})")
        self.status = status
        self.error_type = error_type
        self.message = message


def token_file(environ: Mapping[str, str]) -> str:
    """Where session tokens are kept: ``$XDG_CONFIG_HOME/ccag/admin-sessions.json``."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return os.path.join(base, "ccag", "admin-sessions.json")


def _read_tokens(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AdminClientError(f"cannot read {path}: {exc}") from None
    return document if isinstance(document, dict) else {}


def load_token(environ: Mapping[str, str], url: str) -> str | None:
    """The stored session token for ``url``, if any."""
    entry = _read_tokens(token_file(environ)).get(normalise_url(url))
    if isinstance(entry, dict) and isinstance(entry.get("token"), str):
        return str(entry["token"])
    return None


def save_token(environ: Mapping[str, str], url: str, token: str | None, expires_at: str | None) -> str:
    """Store (or, with ``token=None``, forget) the token for ``url``; returns
    the file's path. The file is written owner-only."""
    path = token_file(environ)
    tokens = _read_tokens(path)
    if token is None:
        tokens.pop(normalise_url(url), None)
    else:
        tokens[normalise_url(url)] = {"token": token, "expires_at": expires_at}

    os.makedirs(os.path.dirname(path), mode=TOKEN_DIRECTORY_MODE, exist_ok=True)
    temporary = path + ".tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_FILE_MODE)
    # An existing file keeps its mode through O_CREAT; make sure it is private.
    os.fchmod(descriptor, TOKEN_FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(tokens, file, indent=2)
    os.replace(temporary, path)
    return path


def normalise_url(url: str) -> str:
    return url.rstrip("/")


class AdminClient:
    """Calls to one gateway's ``/admin`` and ``/auth`` routes.

    Args:
        url: the gateway, such as ``http://127.0.0.1:8080``.
        token: an admin session token or API key, sent as a bearer token.
    """

    def __init__(self, url: str, token: str | None = None,
                 timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise AdminClientError(f"--url must be http://HOST[:PORT] or https://..., not {url!r}")
        self.url = normalise_url(url)
        self._parsed = parsed
        self._token = token
        self._timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        document: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; the decoded JSON answer.

        Raises:
            AdminApiError: the gateway answered with an error.
            AdminClientError: no usable answer.
        """
        target = self._parsed.path.rstrip("/") + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        headers = {"accept": "application/json"}
        body = None
        if document is not None:
            body = json.dumps(document).encode()
            headers["content-type"] = "application/json"
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"

        connection = self._connection()
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read(MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise AdminClientError(f"cannot reach the gateway at {self.url}: {exc}") from None
        finally:
            connection.close()
        return _decode(response.status, data, self.url)

    def _connection(self) -> http.client.HTTPConnection:
        host = self._parsed.hostname or ""
        if self._parsed.scheme == "https":
            return http.client.HTTPSConnection(
                host, self._parsed.port, timeout=self._timeout,
                context=ssl.create_default_context(),
            )
        return http.client.HTTPConnection(host, self._parsed.port, timeout=self._timeout)


def _decode(status: int, data: bytes, url: str) -> Any:
    try:
        document = json.loads(data) if data else None
    except ValueError:
        raise AdminClientError(
            f"{url} answered HTTP {status} with a body that is not JSON; is it a ccag gateway?"
        ) from None
    if 200 <= status < 300:
        return document
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        raise AdminClientError(f"{url} answered HTTP {status} without an error message")
    raise AdminApiError(status, str(error.get("type", "error")), str(error.get("message", "")))
