"""Fuzz target: the SSE decoder and encoder.

Invariants: any bytes, fed whole, a byte at a time or in two pieces, give the
same events or raise SSEError, nothing else; and any (name, data) pair that
``encode_event`` accepts decodes back to the same name and to the data with
its line breaks normalised to LF.

Run: ``python fuzz/fuzz_sse.py [atheris args]``
"""

from __future__ import annotations

from protocol_runner import instrumented, run

with instrumented():
    from ccag.errors import InternalError, SSEError
    from ccag.sse import SSEDecoder, SSEEvent, encode_event

# Small limits so that the fuzzer reaches them.
_MAX_LINE_BYTES = 64
_MAX_EVENT_BYTES = 128


def _decode(data: bytes, pieces: list[bytes]) -> tuple[list[SSEEvent], bool]:
    decoder = SSEDecoder(
        max_line_bytes=_MAX_LINE_BYTES, max_event_bytes=_MAX_EVENT_BYTES
    )
    events: list[SSEEvent] = []
    try:
        for piece in pieces:
            events += decoder.feed(piece)
        decoder.close()
    except SSEError:
        return events, False
    return events, True


def check(data: bytes) -> None:
    whole = _decode(data, [data])
    assert _decode(data, [data[i : i + 1] for i in range(len(data))]) == whole
    middle = len(data) // 2
    assert _decode(data, [data[:middle], data[middle:]]) == whole

    # Round trip: the bytes before the first NUL name the event.
    name, _, payload = data.partition(b"\x00")
    try:
        encoded = encode_event(name, payload)
    except InternalError:
        assert b"\n" in name or b"\r" in name
        return
    (event,) = SSEDecoder().feed(encoded)
    assert event.event == (name.decode("utf-8", "replace") or "message")
    assert event.data == payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


SEEDS = [
    b"event: a\r\ndata: 1\r\n\r\n: c\rdata:x\n\n",
    b"\xef\xbb\xbfdata: x\n\n",
    b'message_delta\x00{"type":"message_delta"}',
]


def main() -> None:
    run(check, SEEDS)


if __name__ == "__main__":
    main()
