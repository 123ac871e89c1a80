"""The translator's fast path for whole chunk frames gives the general path's output."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.anthropic.observe import ResponseObserver
from ccag.anthropic.stream import BedrockStreamTranslator
from tests.protocol_factory import (
    CHUNK_HEADERS,
    chunk_frame,
    chunk_payload,
    exception_frame,
    frame,
    string_headers,
    text_reply_events,
)

# Pieces a stream is made of: good frames of every kind the translator reads,
# and the faults the fast path must hand to the general decoder.
_EVENTS = text_reply_events(["Hello", " wor", "ld"])
_REORDERED_CHUNK_HEADERS = dict(reversed(list(CHUNK_HEADERS.items())))


def _flip_byte(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes((data[at] ^ 0x41,)) + data[at + 1 :]


def _pieces() -> st.SearchStrategy[bytes]:
    event = st.sampled_from(_EVENTS)
    return st.one_of(
        event.map(chunk_frame),
        event.map(
            lambda e: frame(
                string_headers(_REORDERED_CHUNK_HEADERS),
                chunk_payload(json.dumps(e, separators=(",", ":")).encode()),
            )
        ),
        st.just(
            frame(
                string_headers({":message-type": "event", ":event-type": "other"}),
                b"{}",
            )
        ),
        st.just(exception_frame("throttlingException", b'{"message":"slow down"}')),
        st.tuples(event.map(chunk_frame), st.integers(0, 10_000)).map(
            lambda pair: _flip_byte(*pair)
        ),
        st.binary(max_size=40),
    )


def _run(stream: bytes, cuts: list[int], fast_path: bool) -> list[Any]:
    translator = BedrockStreamTranslator(
        "claude-x", ResponseObserver(), max_frame_bytes=4096, fast_path=fast_path
    )
    results: list[Any] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        chunk = translator.feed(stream[start:cut])
        error = chunk.error.body() if chunk.error is not None else None
        results.append((chunk.sse, error, chunk.finished))
        start = cut
    closed = translator.close()
    results.append(closed.body() if closed is not None else None)
    return results


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(_pieces(), max_size=8),
    data=st.data(),
)
def test_translator_fast_path_matches_the_general_path(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=4))
    assert _run(stream, cuts, fast_path=True) == _run(stream, cuts, fast_path=False)


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=3))
def test_translator_fast_path_matches_on_any_bytes(
    stream: bytes, cuts: list[int]
) -> None:
    cuts = [min(cut, len(stream)) for cut in cuts]
    assert _run(stream, cuts, fast_path=True) == _run(stream, cuts, fast_path=False)


def test_translator_fast_path_translates_a_whole_reply() -> None:
    stream = b"".join(chunk_frame(event) for event in _EVENTS)
    fast = _run(stream, [], fast_path=True)
    assert fast == _run(stream, [], fast_path=False)
    sse, error, finished = fast[0]
    assert error is None and finished
    assert sse.count(b"event: content_block_delta\n") == 3
    assert b"amazon-bedrock" not in sse
