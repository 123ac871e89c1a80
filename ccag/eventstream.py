"""AWS event-stream framing (application/vnd.amazon.eventstream).

A frame is, big-endian: total length (u32), headers length (u32), CRC32 of
those 8 bytes (u32), the headers, the payload, CRC32 of everything before it
(u32). A header is a u8 name length, the name, a u8 type and a typed value;
Bedrock only sends strings (type 7: u16 length, UTF-8).
"""

from __future__ import annotations

import struct
import zlib

_PRELUDE = struct.Struct(">II")
_STRING_TYPE = 7


def encode_headers(headers: dict[str, str]) -> bytes:
    parts = []
    for name, value in headers.items():
        raw_name = name.encode()
        raw_value = value.encode()
        parts.append(
            bytes((len(raw_name),)) + raw_name
            + bytes((_STRING_TYPE,)) + struct.pack(">H", len(raw_value)) + raw_value
        )
    return b"".join(parts)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One complete frame carrying ``headers`` (all strings) and ``payload``."""
    raw_headers = encode_headers(headers)
    total = _PRELUDE.size + 4 + len(raw_headers) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return head + struct.pack(">I", zlib.crc32(head))
