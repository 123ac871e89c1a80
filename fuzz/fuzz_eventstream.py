"""Fuzz target: the AWS event-stream decoder.

Invariant: any bytes, fed whole or a byte at a time, give the same frames and
either end cleanly or raise EventStreamError, nothing else. Inputs whose
first byte is odd are turned into frames with correct lengths and CRCs around
fuzzer-chosen header blocks and payloads, so the header parser is reached;
those are also checked against botocore's decoder: whatever we accept,
botocore accepts with the same result.

Run: ``python fuzz/fuzz_eventstream.py [atheris args]``
"""

from __future__ import annotations

import struct
import uuid
import zlib

import botocore.eventstream
from protocol_runner import instrumented, run

with instrumented():
    from ccag.errors import EventStreamError
    from ccag.eventstream import EventStreamDecoder, Frame, encode_message

# Separates the fuzzer's frames in structured mode.
_FRAME_SEPARATOR = b"\xfe\xfe"


def build_frames(body: bytes) -> bytes:
    """Valid framing around each separated piece: first byte picks the header length."""
    frames = []
    for piece in body.split(_FRAME_SEPARATOR):
        headers_length = piece[0] % len(piece) if piece else 0
        raw_headers, payload = (
            piece[1 : 1 + headers_length],
            piece[1 + headers_length :],
        )
        total = 16 + len(raw_headers) + len(payload)
        prelude = struct.pack(">II", total, len(raw_headers))
        head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
        frames.append(head + struct.pack(">I", zlib.crc32(head)))
    return b"".join(frames)


def _decode(data: bytes, byte_by_byte: bool) -> tuple[list[Frame], bool]:
    decoder = EventStreamDecoder(max_frame_bytes=8192)
    frames: list[Frame] = []
    try:
        if byte_by_byte:
            for index in range(len(data)):
                frames += decoder.feed(data[index : index + 1])
        else:
            frames += decoder.feed(data)
        decoder.close()
    except EventStreamError:
        return frames, False
    return frames, True


def _botocore_frames(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = botocore.eventstream.EventStreamBuffer()
    buffer.add_data(data)
    return [(message.headers, message.payload) for message in buffer]


def check(data: bytes) -> None:
    structured = bool(data) and data[0] % 2 == 1
    stream = build_frames(data[1:]) if structured else data

    whole, whole_ok = _decode(stream, byte_by_byte=False)
    split, split_ok = _decode(stream, byte_by_byte=True)

    assert whole == split, (whole, split)
    assert whole_ok == split_ok
    for frame in whole:
        assert isinstance(frame.payload, bytes)
        assert all(isinstance(name, str) for name in frame.headers)

    if structured and whole_ok:
        ours = [
            (
                {
                    k: v.bytes if isinstance(v, uuid.UUID) else v
                    for k, v in f.headers.items()
                },
                f.payload,
            )
            for f in whole
        ]
        assert ours == _botocore_frames(stream)


SEEDS = [
    encode_message(
        {":message-type": "event", ":event-type": "chunk"}, b'{"bytes":"e30="}'
    ),
    b"\x01" + b"\x20\x04name\x07\x00\x05value\x01t\x00" + b"payload",
    b"\x01" + b"\x10\x01a\x09" + bytes(16) + b"\xfe\xfe" + b"\x05\x01b\x05" + bytes(8),
]


def main() -> None:
    run(check, SEEDS)


if __name__ == "__main__":
    main()
