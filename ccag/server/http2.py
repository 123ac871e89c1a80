"""The HTTP/2 driver (placeholder until the h2 driver lands)."""

from __future__ import annotations

import trio

from ccag.server.types import Handler

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Http2Connection:
    # TODO: HTTP/2 is not served yet; h2 clients see their connection closed.
    def __init__(self, stream: trio.abc.Stream, handler: Handler, config: object, initial: bytes = b"") -> None:
        self._stream = stream

    def start_draining(self) -> None:
        pass

    async def run(self) -> None:
        await trio.aclose_forcefully(self._stream)
