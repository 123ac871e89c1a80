"""Fuzz target: arbitrary frames sent to the HTTP/2 driver after the preface.

Invariant: whatever follows the connection preface, the server sends its
SETTINGS first, then frames, and ends with a GOAWAY or a close; it never
hangs and no exception escapes the driver. ``check`` runs one input over an
in-memory stream pair with a virtual clock.

Run it under atheris (``python fuzz/fuzz_http2.py``) or call ``check`` from
Hypothesis (tests/test_server_fuzz.py).
"""

from __future__ import annotations

import sys

from server_harness import exchange

from ccag.server.http2 import H2_PREFACE, Http2Connection

# An empty SETTINGS frame, so inputs reach the frame parser past the preface check.
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

_SETTINGS_FRAME_TYPE = 0x4


def check(data: bytes) -> bytes:
    """Send the preface, SETTINGS and ``data``; check the server's answer."""
    received = exchange(Http2Connection, [H2_PREFACE + _EMPTY_SETTINGS + data])
    # The server's first frame is its SETTINGS (RFC 9113 3.4).
    assert len(received) >= 9 and received[3] == _SETTINGS_FRAME_TYPE, received[:20]
    return received


def main() -> None:  # pragma: no cover - needs atheris
    import atheris

    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
