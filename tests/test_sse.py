import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.errors import InternalError, SSEError
from ccag.sse import SSEDecoder, SSEEvent, encode_event
from tests.protocol_factory import load_wire_examples, split_at_sizes


def decode(
    data: bytes, pieces: list[int] | None = None, **limits: int
) -> list[SSEEvent]:
    decoder = SSEDecoder(**limits)
    events: list[SSEEvent] = []
    for piece in split_at_sizes(data, pieces):
        events += decoder.feed(piece)
    decoder.close()
    return events


def test_encode_event_one_line() -> None:
    assert encode_event(b"ping", b'{"type":"ping"}') == (
        b'event: ping\ndata: {"type":"ping"}\n\n'
    )


def test_encode_event_empty_data_still_dispatches() -> None:
    assert decode(encode_event(b"x", b"")) == [SSEEvent("x", b"")]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\nb", b"a\nb"),
        (b"a\r\nb", b"a\nb"),
        (b"a\rb\r", b"a\nb\n"),
        (b"\n", b"\n"),
        (b"a\n\nb", b"a\n\nb"),
    ],
)
def test_encode_event_line_breaks_become_data_lines(
    data: bytes, expected: bytes
) -> None:
    raw = encode_event(b"message_delta", data)

    assert raw.count(b"\n\n") >= 1 and raw.endswith(b"\n\n")
    assert decode(raw) == [SSEEvent("message_delta", expected)]


@pytest.mark.parametrize("name", [b"a\nb", b"a\rb"])
def test_encode_event_refuses_name_with_line_break(name: bytes) -> None:
    with pytest.raises(InternalError):
        encode_event(name, b"{}")


def test_decoder_reads_recorded_anthropic_stream() -> None:
    body = load_wire_examples()["anthropic_sse_example"]["body"].encode()

    events = decode(body)

    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(json.loads(e.data)["type"] == e.event for e in events)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_decoder_accepts_each_line_ending(line_end: bytes) -> None:
    raw = line_end.join([b"event: a", b"data: 1", b"", b"data: 2", b"", b""])

    assert decode(raw) == [SSEEvent("a", b"1"), SSEEvent("message", b"2")]


def test_decoder_crlf_split_between_cr_and_lf() -> None:
    raw = b"data: 1\r\n\r\ndata: 2\r\n\r\n"

    for cut in range(len(raw) + 1):
        assert decode(raw, [cut]) == [
            SSEEvent("message", b"1"),
            SSEEvent("message", b"2"),
        ]


def test_decoder_skips_comments_and_unknown_fields() -> None:
    raw = b": keep-alive\nid: 7\nretry: 10\nfoo: bar\nevent: e\ndata: x\n\n"

    assert decode(raw) == [SSEEvent("e", b"x")]


def test_decoder_joins_data_lines() -> None:
    assert decode(b"data: a\ndata:b\ndata\ndata:  c\n\n") == [
        SSEEvent("message", b"a\nb\n\n c")
    ]


def test_decoder_drops_event_without_data() -> None:
    assert decode(b"event: lonely\n\ndata: x\n\n") == [SSEEvent("message", b"x")]


def test_decoder_ignores_unfinished_event() -> None:
    assert decode(b"event: a\ndata: x\n") == []


def test_decoder_strips_leading_bom_only_once() -> None:
    raw = b"\xef\xbb\xbfdata: x\n\n\xef\xbb\xbfdata: y\n\n"

    assert decode(raw, [1, 1, 1]) == [SSEEvent("message", b"x")]


def test_decoder_undecodable_event_name_is_replaced() -> None:
    assert decode(b"event: \xff\ndata: x\n\n") == [SSEEvent("\ufffd", b"x")]


def test_decoder_rejects_unterminated_line_over_limit() -> None:
    decoder = SSEDecoder(max_line_bytes=10)
    decoder.feed(b"data: 1234")

    with pytest.raises(SSEError, match="line exceeds"):
        decoder.feed(b"5")
    with pytest.raises(SSEError):
        decoder.feed(b"\n\n")


def test_decoder_rejects_complete_line_over_limit() -> None:
    with pytest.raises(SSEError, match="line exceeds"):
        decode(b"data: 123456\n\n", max_line_bytes=10)


def test_decoder_line_at_limit_is_accepted() -> None:
    assert decode(b"data: 1234\n\n", [1] * 12, max_line_bytes=10) == [
        SSEEvent("message", b"1234")
    ]


def test_decoder_rejects_event_data_over_limit() -> None:
    with pytest.raises(SSEError, match="event data exceeds"):
        decode(b"data: 1234\n" * 5 + b"\n", max_event_bytes=20)


def test_decoder_returns_events_before_a_fault_then_raises() -> None:
    decoder = SSEDecoder(max_line_bytes=10)

    assert decoder.feed(b"data: 1\n\n" + b"x" * 20) == [SSEEvent("message", b"1")]
    with pytest.raises(SSEError):
        decoder.feed(b"")


def test_decoder_close_raises_a_pending_fault() -> None:
    decoder = SSEDecoder(max_line_bytes=10)
    decoder.feed(b"data: 1\n\n" + b"x" * 20)

    with pytest.raises(SSEError, match="line exceeds"):
        decoder.close()


def test_decoder_close_drops_an_unfinished_event_quietly() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: 1\n")

    decoder.close()


def test_decoder_long_line_in_tiny_reads_is_linear() -> None:
    # Scanning restarts where it stopped, so a 200 KB line fed a byte at a
    # time finishes quickly; a rescan per read would take minutes.
    line = b"data: " + b"x" * 200_000 + b"\n\n"
    decoder = SSEDecoder()
    events = []

    for i in range(len(line)):
        events += decoder.feed(line[i : i + 1])

    assert events == [SSEEvent("message", b"x" * 200_000)]


# --- properties ----------------------------------------------------------

_names = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
).map(str.encode)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_names, st.binary(max_size=60)), max_size=6), st.data())
def test_encode_then_decode_round_trips(
    pairs: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    raw = b"".join(encode_event(name, payload) for name, payload in pairs)
    cuts = data.draw(st.lists(st.integers(0, 30), max_size=10))

    events = decode(raw, cuts)

    expected = [
        SSEEvent(name.decode(), payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        for name, payload in pairs
    ]
    assert events == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 20), max_size=10))
def test_decoder_any_bytes_split_anywhere_same_events_or_our_error(
    data: bytes, cuts: list[int]
) -> None:
    def run(pieces: list[int] | None) -> object:
        try:
            return decode(data, pieces, max_line_bytes=40, max_event_bytes=80)
        except SSEError:
            return "error"

    assert run(None) == run(cuts) == run([1] * len(data))
