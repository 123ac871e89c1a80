"""The chunked body decoder: any split of any valid body, and any garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.bedrock.chunked import (
    MAX_SIZE_LINE_BYTES,
    MAX_TRAILER_BYTES,
    ChunkedBodyError,
    ChunkedDecoder,
)


def encode(chunks: list[bytes], extensions: list[bytes], trailers: list[bytes]) -> bytes:
    out = bytearray()
    for index, chunk in enumerate(chunks):
        extension = extensions[index % len(extensions)] if extensions else b""
        out += b"%x%s\r\n%s\r\n" % (len(chunk), extension, chunk)
    out += b"0\r\n"
    for trailer in trailers:
        out += trailer + b"\r\n"
    out += b"\r\n"
    return bytes(out)


def feed_in_pieces(decoder: ChunkedDecoder, wire: bytes, cuts: list[int]) -> bytes:
    body = bytearray()
    start = 0
    for cut in sorted(cut % (len(wire) + 1) for cut in cuts):
        body += decoder.feed(wire[start:cut])
        start = cut
    body += decoder.feed(wire[start:])
    return bytes(body)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=12),
    extensions=st.lists(st.sampled_from([b"", b";name=value", b" ;x", b";a;b=c"]), max_size=3),
    trailers=st.lists(st.sampled_from([b"x-checksum: abc", b"x-empty:"]), max_size=2),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_decoder_recovers_any_body_split_anywhere(
    chunks: list[bytes], extensions: list[bytes], trailers: list[bytes], cuts: list[int]
) -> None:
    wire = encode(chunks, extensions, trailers)
    decoder = ChunkedDecoder()

    assert feed_in_pieces(decoder, wire, cuts) == b"".join(chunks)
    assert decoder.is_done


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=100), max_size=6))
def test_decoder_fed_byte_by_byte_matches_whole(chunks: list[bytes]) -> None:
    wire = encode(chunks, [], [])
    decoder = ChunkedDecoder()

    body = b"".join(decoder.feed(wire[index : index + 1]) for index in range(len(wire)))

    assert body == b"".join(chunks)
    assert decoder.is_done


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_decoder_takes_any_bytes_or_raises_its_own_error(data: bytes, cuts: list[int]) -> None:
    decoder = ChunkedDecoder()
    try:
        body = feed_in_pieces(decoder, data, cuts)
    except ChunkedBodyError:
        return
    assert len(body) <= len(data)


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nhello\r\n",
        b"-5\r\nhello\r\n",
        b"0x5\r\nhello\r\n",
        b"5_0\r\n",
        b"5\nhello\r\n",
        b"5\r\nhello!!\r\n",
        b"0\r\n\r\nextra",
        b"1" * 17 + b"\r\n",
        b"5\r\nhello\r\n0\r\n\r\n\r\n",
        b"a" * (MAX_SIZE_LINE_BYTES + 2),
        b"0\r\n" + b"x: " + b"y" * MAX_TRAILER_BYTES + b"\r\n",
    ],
)
def test_decoder_refuses_broken_framing(wire: bytes) -> None:
    with pytest.raises(ChunkedBodyError):
        ChunkedDecoder().feed(wire)


def test_decoder_refuses_bytes_after_the_end_in_a_later_read() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\n") == b"abc"

    with pytest.raises(ChunkedBodyError):
        decoder.feed(b"more")
