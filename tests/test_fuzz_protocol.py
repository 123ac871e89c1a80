"""The protocol fuzz targets' invariants, for a bounded time in the normal suite.

``python fuzz/fuzz_<target>.py`` runs the same checks for much longer (with
atheris when installed); crashes found there become the regression examples
below.
"""

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import load_target

TARGETS = {
    name: load_target(name) for name in ("fuzz_eventstream", "fuzz_sse", "fuzz_stream")
}


def run_checks(check: Callable[[bytes], None], seeds: list[bytes]) -> None:
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def property_test(data: bytes) -> None:
        check(data)

    for seed in seeds:
        check(seed)
    property_test()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_invariant_holds(name: str) -> None:
    target = TARGETS[name]
    run_checks(target.check, target.SEEDS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_structured_mode_holds(name: str) -> None:
    # An odd first byte switches the targets to building valid frames.
    target = TARGETS[name]

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def property_test(data: bytes) -> None:
        target.check(b"\x01" + data)

    property_test()


# Inputs the fuzzers once failed on, with what was wrong.
REGRESSIONS = [
    # An over-long line after complete events: the whole-feed harness missed
    # the deferred SSEError because the decoder had no close().
    ("fuzz_sse", b"\x00\n\ndata\n\n?\n" + b"3" * 81),
    # A good frame then a bad one in the same read: the error surfaced only
    # in close(), so the harness must send close()'s error event too.
    (
        "fuzz_stream",
        (
            b"\xff\xfe :.\xff\xfe\xff\x10m\xfe\xff\xfe\xfe\x1d\x00\x00\x00\x00\x00\x00\x00m"
            b"\xfe\xff\xfe\xfe\xac\xff\x10"
        ),
    ),
]


@pytest.mark.parametrize(("name", "data"), REGRESSIONS)
def test_fuzz_regression(name: str, data: bytes) -> None:
    TARGETS[name].check(data)
