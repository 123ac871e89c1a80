"""Bedrock's framing of Anthropic events on InvokeModelWithResponseStream.

Each event's JSON is base64-encoded into a ``chunk`` frame whose payload is
``{"bytes": "...", "p": "..."}``; ``p`` is padding of random length that
Bedrock adds so that frame sizes do not reveal token lengths.
"""

from __future__ import annotations

import base64
import json
import random
import string
from typing import Any

from ccag.anthropic.wirejson import dump_json
from ccag.eventstream import encode_message

MAX_PADDING = 64
"""Longest ``p`` padding; Bedrock's padding is a few dozen characters."""

_PADDING_ALPHABET = string.ascii_letters + string.digits
_CHUNK_HEADERS = {
    ":event-type": "chunk",
    ":content-type": "application/json",
    ":message-type": "event",
}


def event_json(event: dict[str, Any]) -> bytes:
    """The compact JSON of one Anthropic event, as Bedrock base64-encodes it."""
    return dump_json(event)


def padding(rng: random.Random) -> str:
    """Random padding of random length (1 to :data:`MAX_PADDING`)."""
    return "".join(rng.choices(_PADDING_ALPHABET, k=rng.randint(1, MAX_PADDING)))


def chunk_frame(event: dict[str, Any], pad: str) -> bytes:
    """One ``chunk`` event frame carrying ``event``."""
    payload = {"bytes": base64.b64encode(event_json(event)).decode("ascii"), "p": pad}
    return encode_message(_CHUNK_HEADERS, json.dumps(payload, separators=(",", ":")).encode())


def corrupt_crc(frame: bytes) -> bytes:
    """``frame`` with its message CRC flipped, so a decoder must refuse it."""
    return frame[:-4] + bytes(byte ^ 0xFF for byte in frame[-4:])
