"""Short Hypothesis runs of the server fuzz targets (fuzz/fuzz_http1.py, fuzz_http2.py)."""

from __future__ import annotations

import h2.settings
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import load_target

fuzz_http1 = load_target("fuzz_http1")
fuzz_http2 = load_target("fuzz_http2")

# Bytes that look like HTTP/1.1 often enough to reach past the request line.
http1_pieces = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"POST /v1/messages HTTP/1.1\r\n",
        b"HEAD / HTTP/1.0\r\n",
        b"Host: x\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 99999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"hello",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"zz\r\n",
        b"\x00\xff",
        b" ",
        b":",
    ]
)
http1_inputs = st.one_of(
    st.binary(max_size=300), st.lists(http1_pieces, max_size=12).map(b"".join)
)

# Well-formed frames in random orders and with random ids, plus raw bytes.
_frames = st.one_of(
    st.builds(
        lambda sid, end: HeadersFrame(
            sid,
            data=b"\x82\x84\x86\x41\x0cgateway.test",
            flags=("END_HEADERS",) + (("END_STREAM",) if end else ()),
        ).serialize(),
        st.integers(1, 9),
        st.booleans(),
    ),
    st.builds(
        lambda sid, data, end: DataFrame(
            sid, data=data, flags=("END_STREAM",) if end else ()
        ).serialize(),
        st.integers(1, 9),
        st.binary(max_size=50),
        st.booleans(),
    ),
    st.builds(
        lambda sid, inc: WindowUpdateFrame(sid, window_increment=inc).serialize(),
        st.integers(0, 9),
        st.integers(0, 2**31 - 1),
    ),
    st.builds(
        lambda sid: RstStreamFrame(sid, error_code=8).serialize(), st.integers(1, 9)
    ),
    st.builds(
        lambda value: SettingsFrame(
            0, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: value}
        ).serialize(),
        st.integers(0, 2**32 - 1),
    ),
    st.binary(max_size=40),
)
http2_inputs = st.lists(_frames, max_size=10).map(b"".join)

_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_settings
@given(http1_inputs)
def test_server_fuzz_http1_any_bytes_get_a_response_or_a_close(data: bytes) -> None:
    fuzz_http1.check(data)


@_settings
@given(http2_inputs)
def test_server_fuzz_http2_any_frames_get_frames_or_a_close(data: bytes) -> None:
    fuzz_http2.check(data)


def test_server_fuzz_http1_answers_a_valid_request() -> None:
    # The invariant is not vacuous: a real request gets a real response.
    received = fuzz_http1.check(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert (
        received.startswith(b"HTTP/1.1 200 ") and b"5\r\nhello\r\n0\r\n\r\n" in received
    )


def test_server_fuzz_http2_answers_a_valid_request() -> None:
    request = HeadersFrame(
        1, data=b"\x82\x84\x86\x41\x0cgateway.test", flags=("END_HEADERS", "END_STREAM")
    )
    received = fuzz_http2.check(request.serialize())
    assert (
        b"\x00\x00\x00\x00\x01\x00\x00\x00\x01" in received
    )  # an empty DATA frame ending stream 1
