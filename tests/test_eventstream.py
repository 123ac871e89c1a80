import base64
import json
import struct
import uuid

import botocore.eventstream
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.errors import EventStreamError
from ccag.eventstream import (
    MAX_HEADERS_BYTES,
    EventStreamDecoder,
    Frame,
    encode_message,
)
from tests.protocol_factory import (
    frame,
    frame_with_prelude,
    header,
    load_wire_examples,
    split_at_sizes,
    string_header,
)

WIRE = load_wire_examples()["aws_eventstream"]
RECORDED_STREAM = base64.b64decode(WIRE["whole_stream_base64"])
RECORDED_EXCEPTION = base64.b64decode(WIRE["exception_frame"]["base64"])


def decode_all(data: bytes, pieces: list[int] | None = None) -> list[Frame]:
    decoder = EventStreamDecoder()
    frames: list[Frame] = []
    for piece in split_at_sizes(data, pieces):
        frames += decoder.feed(piece)
    decoder.close()
    return frames


def test_decoder_reads_recorded_bedrock_stream() -> None:
    frames = decode_all(RECORDED_STREAM)

    assert len(frames) == len(WIRE["frames"])
    for got, recorded in zip(frames, WIRE["frames"]):
        assert got.headers == recorded["headers"]
        assert json.loads(got.payload) == recorded["payload_json"]
        assert got.message_type == "event"
        assert got.event_type == "chunk"
        assert got.exception_type is None


def test_decoder_recorded_frames_carry_the_recorded_crcs() -> None:
    offset = 0
    for recorded in WIRE["frames"]:
        total = recorded["total_length"]
        raw = RECORDED_STREAM[offset : offset + total]
        assert raw[8:12].hex() == recorded["prelude_crc32_hex"]
        assert raw[-4:].hex() == recorded["message_crc32_hex"]
        assert decode_all(raw)[0].headers == recorded["headers"]
        offset += total
    assert offset == len(RECORDED_STREAM)


def test_decoder_reads_recorded_exception_frame() -> None:
    (got,) = decode_all(RECORDED_EXCEPTION)

    assert got.message_type == "exception"
    assert got.exception_type == "throttlingException"
    assert json.loads(got.payload) == WIRE["exception_frame"]["payload"]


def test_decoder_same_frames_for_every_two_way_split() -> None:
    whole = decode_all(RECORDED_STREAM)

    for cut in range(len(RECORDED_STREAM) + 1):
        assert decode_all(RECORDED_STREAM, [cut]) == whole


def test_decoder_same_frames_byte_by_byte() -> None:
    assert decode_all(RECORDED_STREAM, [1] * len(RECORDED_STREAM)) == decode_all(
        RECORDED_STREAM
    )


def test_decoder_agrees_with_botocore_on_recorded_stream() -> None:
    oracle = botocore.eventstream.EventStreamBuffer()
    oracle.add_data(RECORDED_STREAM)
    expected = [(message.headers, message.payload) for message in oracle]

    assert [(f.headers, f.payload) for f in decode_all(RECORDED_STREAM)] == expected


def test_decoder_round_trips_the_encoder() -> None:
    raw = encode_message({":message-type": "event", "x": "é"}, b"\x00payload")

    (got,) = decode_all(raw)

    assert got.headers == {":message-type": "event", "x": "é"}
    assert got.payload == b"\x00payload"


def test_decoder_reads_every_header_type() -> None:
    an_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    raw_headers = b"".join(
        [
            header("yes", 0),
            header("no", 1),
            header("byte", 2, b"\xff"),
            header("short", 3, struct.pack(">h", -2)),
            header("int", 4, struct.pack(">i", -70000)),
            header("long", 5, struct.pack(">q", 2**40)),
            header("blob", 6, struct.pack(">H", 3) + b"\x00\x01\x02"),
            string_header("text", "héllo"),
            header("when", 8, struct.pack(">q", 1700000000123)),
            header("id", 9, an_id.bytes),
        ]
    )

    (got,) = decode_all(frame(raw_headers, b""))

    assert got.headers == {
        "yes": True,
        "no": False,
        "byte": -1,
        "short": -2,
        "int": -70000,
        "long": 2**40,
        "blob": b"\x00\x01\x02",
        "text": "héllo",
        "when": 1700000000123,
        "id": an_id,
    }
    assert got.payload == b""


def test_decoder_non_text_type_headers_are_not_message_types() -> None:
    raw_headers = header(":message-type", 6, struct.pack(">H", 5) + b"event")

    (got,) = decode_all(frame(raw_headers, b"{}"))

    assert got.headers == {":message-type": b"event"}
    assert got.message_type is None


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (frame(header("x", 10), b""), "type 10 is unknown"),
        (frame(header("x", 255), b""), "type 255 is unknown"),
        (frame(b"\x05ab", b""), "name runs past"),
        (frame(b"\x01a", b""), "name runs past"),
        (frame(header("x", 7, b"\x00\x09abc"), b""), "value runs past"),
        (frame(header("x", 7, b"\x00"), b""), "value runs past"),
        (frame(header("x", 4, b"\x00\x01"), b""), "value runs past"),
        (frame(header("x", 9, b"\x00" * 15), b""), "value runs past"),
        (frame(header("x", 7, b"\x00\x02\xff\xfe"), b""), "not valid UTF-8"),
        (frame(b"\x02\xff\xfe\x00", b""), "not valid UTF-8"),
        (frame(string_header("a", "1") + string_header("a", "2"), b""), "repeats"),
    ],
)
def test_decoder_rejects_bad_headers(raw: bytes, complaint: str) -> None:
    with pytest.raises(EventStreamError, match=complaint):
        EventStreamDecoder().feed(raw)


def test_decoder_rejects_bad_prelude_crc() -> None:
    raw = bytearray(RECORDED_EXCEPTION)
    raw[8] ^= 0x01

    with pytest.raises(EventStreamError, match="prelude CRC"):
        EventStreamDecoder().feed(bytes(raw))


@pytest.mark.parametrize("position", [12, 40, -5, -1])
def test_decoder_rejects_bad_message_crc(position: int) -> None:
    raw = bytearray(RECORDED_EXCEPTION)
    raw[position] ^= 0x80

    with pytest.raises(EventStreamError, match="message CRC"):
        EventStreamDecoder().feed(bytes(raw))


@pytest.mark.parametrize("total", [0, 1, 12, 15])
def test_decoder_rejects_frames_shorter_than_prelude_and_crc(total: int) -> None:
    with pytest.raises(EventStreamError, match="too small"):
        EventStreamDecoder().feed(frame_with_prelude(total, 0))


def test_decoder_rejects_headers_longer_than_the_frame() -> None:
    with pytest.raises(EventStreamError, match="does not fit"):
        EventStreamDecoder().feed(frame_with_prelude(20, 5))


def test_decoder_rejects_headers_over_the_limit() -> None:
    with pytest.raises(EventStreamError, match="headers length"):
        EventStreamDecoder().feed(frame_with_prelude(2**20, MAX_HEADERS_BYTES + 1))


def test_decoder_refuses_huge_length_from_the_prelude_alone() -> None:
    # The 12-byte prelude is enough: nothing is buffered for the claimed 4 GiB.
    decoder = EventStreamDecoder()

    with pytest.raises(EventStreamError, match="exceeds the limit"):
        decoder.feed(frame_with_prelude(2**32 - 1, 0))


def test_decoder_frame_limit_is_inclusive() -> None:
    raw = frame(b"", b"x" * 100)

    assert len(EventStreamDecoder(max_frame_bytes=len(raw)).feed(raw)) == 1
    with pytest.raises(EventStreamError, match="exceeds the limit"):
        EventStreamDecoder(max_frame_bytes=len(raw) - 1).feed(raw)


def test_decoder_returns_good_frames_before_a_fault_then_raises() -> None:
    good = encode_message({":message-type": "event"}, b"one")
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    decoder = EventStreamDecoder()

    assert [f.payload for f in decoder.feed(good + bytes(bad) + good)] == [b"one"]
    with pytest.raises(EventStreamError, match="message CRC"):
        decoder.feed(b"")
    with pytest.raises(EventStreamError, match="message CRC"):
        decoder.close()


def test_decoder_stays_broken_after_a_fault() -> None:
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError):
        decoder.feed(frame_with_prelude(3, 0))

    with pytest.raises(EventStreamError):
        decoder.feed(RECORDED_EXCEPTION)


def test_decoder_close_rejects_a_partial_frame() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(RECORDED_EXCEPTION[:-1]) == []
    assert decoder.has_partial_frame

    with pytest.raises(EventStreamError, match="middle of a frame"):
        decoder.close()


def test_decoder_close_after_whole_frames_is_clean() -> None:
    decoder = EventStreamDecoder()
    decoder.feed(RECORDED_EXCEPTION)

    decoder.close()

    assert not decoder.has_partial_frame


def test_decoder_buffer_stays_small_over_a_long_stream() -> None:
    # Many frames arriving in reads that never line up with frame boundaries:
    # the consumed prefix must be dropped, not kept for the stream's life.
    one = encode_message({":message-type": "event"}, b"p" * 1000)
    stream = one * 2000
    decoder = EventStreamDecoder()
    count = 0
    largest_buffer = 0

    for start in range(0, len(stream), 777):
        count += len(decoder.feed(stream[start : start + 777]))
        largest_buffer = max(largest_buffer, len(decoder._buffer))

    assert count == 2000
    assert largest_buffer < 64 * 1024 + 2 * len(one)


def test_decoder_big_frame_in_small_reads() -> None:
    payload = bytes(range(256)) * 4096
    raw = encode_message({":message-type": "event"}, payload)
    decoder = EventStreamDecoder()
    frames = []

    for start in range(0, len(raw), 1000):
        frames += decoder.feed(raw[start : start + 1000])

    assert [f.payload for f in frames] == [payload]


# --- properties ----------------------------------------------------------

_header_values = st.one_of(
    st.just((0, b"")),
    st.just((1, b"")),
    st.integers(-128, 127).map(lambda v: (2, struct.pack(">b", v))),
    st.integers(-(2**15), 2**15 - 1).map(lambda v: (3, struct.pack(">h", v))),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: (4, struct.pack(">i", v))),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: (5, struct.pack(">q", v))),
    st.binary(max_size=40).map(lambda v: (6, struct.pack(">H", len(v)) + v)),
    st.text(max_size=40).map(
        lambda v: (7, struct.pack(">H", len(v.encode())) + v.encode())
    ),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: (8, struct.pack(">q", v))),
    st.binary(min_size=16, max_size=16).map(lambda v: (9, v)),
)
_header_blocks = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(lambda n: len(n.encode()) < 256),
    _header_values,
    max_size=6,
).map(lambda hs: b"".join(header(n, t, v) for n, (t, v) in hs.items()))
_frames = st.builds(frame, _header_blocks, st.binary(max_size=300))


def _oracle(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = botocore.eventstream.EventStreamBuffer()
    buffer.add_data(data)
    return [(m.headers, m.payload) for m in buffer]


def _comparable(frames: list[Frame]) -> list[tuple[dict[str, object], bytes]]:
    # botocore leaves UUIDs as their 16 raw bytes.
    return [
        (
            {
                k: v.bytes if isinstance(v, uuid.UUID) else v
                for k, v in f.headers.items()
            },
            f.payload,
        )
        for f in frames
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(_frames, max_size=5), st.data())
def test_decoder_agrees_with_botocore_on_any_valid_frames(
    raws: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(raws)
    cuts = data.draw(st.lists(st.integers(0, 50), max_size=20))

    got = decode_all(stream, cuts)

    assert _comparable(got) == _oracle(stream)
    assert len(got) == len(raws)


@settings(max_examples=200, deadline=None)
@given(_frames, st.integers(min_value=0), st.integers(0, 255))
def test_decoder_rejects_any_corrupted_byte(raw: bytes, where: int, flip: int) -> None:
    corrupted = bytearray(raw)
    corrupted[where % len(raw)] ^= flip or 1

    with pytest.raises(EventStreamError):
        decode_all(bytes(corrupted))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 20), max_size=10))
def test_decoder_any_bytes_parse_or_raise_our_error(
    data: bytes, cuts: list[int]
) -> None:
    try:
        whole = decode_all(data)
    except EventStreamError:
        whole = None
    try:
        split = decode_all(data, cuts)
    except EventStreamError:
        split = None

    assert whole == split


@settings(max_examples=100, deadline=None)
@given(_header_blocks, st.binary(max_size=50))
def test_decoder_header_block_with_any_tail_parses_or_raises(
    block: bytes, tail: bytes
) -> None:
    raw = frame(block + tail, b"payload")
    try:
        (got,) = decode_all(raw)
    except EventStreamError:
        return
    assert got.payload == b"payload"
