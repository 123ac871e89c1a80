"""Fuzz target: arbitrary bytes sent to the HTTP/1.1 driver.

Invariant: whatever the client sends, the server answers with HTTP/1.1
responses or closes the connection; it never hangs and no exception escapes
the driver. ``check`` runs one input over an in-memory stream pair with a
virtual clock, so the request and keep-alive timeouts pass instantly.

Run it under atheris (``python fuzz/fuzz_http1.py``) or call ``check`` from
Hypothesis (tests/test_server_fuzz.py).
"""

from __future__ import annotations

import sys

from server_harness import exchange

from ccag.server.http1 import Http1Connection


def check(data: bytes) -> bytes:
    """Send ``data`` (in two writes, split in the middle) and check the invariant."""
    split = len(data) // 2
    received = exchange(Http1Connection, [data[:split], data[split:]])
    assert not received or received.startswith(b"HTTP/1.1 "), received[:80]
    return received


def main() -> None:  # pragma: no cover - needs atheris
    import atheris

    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
