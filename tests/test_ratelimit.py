"""Sliding-window rate limits, with the clock handed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ccag.ratelimit import (
    WINDOW_SECONDS,
    Limits,
    RateLimiter,
    RequestWindow,
    TokenWindow,
)


def test_request_window_admits_the_limit_then_says_when_the_oldest_leaves() -> None:
    limiter = RateLimiter(Limits(rpm=3))
    for at in (100.0, 110.0, 120.5):
        assert limiter.check("k1", "ci", None, at) is None

    refusal = limiter.check("k1", "ci", None, 130.0)

    assert refusal is not None
    assert (refusal.unit, refusal.limit) == ("requests", 3)
    # The first admission (100.0) leaves the window at 160.0: 30 s from 130.0.
    assert refusal.retry_after == 30
    assert "key 'ci'" in refusal.message


def test_retry_after_rounds_up_to_the_next_whole_second() -> None:
    limiter = RateLimiter(Limits(rpm=1))
    assert limiter.check("k1", "ci", None, 0.0) is None

    refusal = limiter.check("k1", "ci", None, 20.25)

    assert refusal is not None and refusal.retry_after == 40  # 39.75 s, rounded up


def test_a_request_is_admitted_exactly_when_retry_after_says() -> None:
    limiter = RateLimiter(Limits(rpm=2))
    limiter.check("k1", None, None, 5.0)
    limiter.check("k1", None, None, 7.0)
    refusal = limiter.check("k1", None, None, 9.0)
    assert refusal is not None and refusal.retry_after == 56

    assert limiter.check("k1", None, None, 9.0 + 55.9) is not None
    assert limiter.check("k1", None, None, 9.0 + 56.0) is None


def test_refused_requests_do_not_use_up_the_window() -> None:
    limiter = RateLimiter(Limits(rpm=1))
    limiter.check("k1", None, None, 0.0)
    for at in range(1, 59):
        assert limiter.check("k1", None, None, float(at)) is not None

    assert limiter.check("k1", None, None, 60.0) is None


def test_limit_zero_blocks_every_request_without_crashing() -> None:
    limiter = RateLimiter(Limits(rpm=0, tpm=0))

    refusal = limiter.check("k1", "ci", None, 0.0)

    assert refusal is not None
    assert refusal.limit == 0 and refusal.retry_after == int(WINDOW_SECONDS)
    assert "may send no requests" in refusal.message
    limiter.record_tokens("k1", None, 10, 0.0)


def test_no_limit_admits_everything() -> None:
    limiter = RateLimiter()
    for at in range(1000):
        assert limiter.check("k1", "ci", "team", float(at) / 100) is None


def test_tokens_per_minute_refuse_while_the_window_is_over_the_limit() -> None:
    limiter = RateLimiter(Limits(tpm=1000))
    assert limiter.check("k1", None, None, 0.0) is None
    limiter.record_tokens("k1", None, 600, 1.0)
    assert limiter.check("k1", None, None, 2.0) is None
    limiter.record_tokens("k1", None, 600, 10.0)

    refusal = limiter.check("k1", None, None, 12.0)

    # 1200 tokens; the total falls below 1000 when the 600 of t=1 leave, at 61.
    assert refusal is not None and refusal.unit == "tokens"
    assert refusal.retry_after == 49
    assert limiter.check("k1", None, None, 61.0) is None


def test_team_limit_is_shared_by_the_team_keys_and_the_longest_wait_wins() -> None:
    limiter = RateLimiter(Limits(rpm=10), Limits(rpm=2))
    assert limiter.check("k1", "a", "web", 0.0) is None
    assert limiter.check("k2", "b", "web", 1.0) is None

    refusal = limiter.check("k3", "c", "web", 2.0)

    assert refusal is not None and "team 'web'" in refusal.message
    assert refusal.retry_after == 58
    assert limiter.check("k4", "d", "other", 2.0) is None


def test_overrides_replace_the_default_for_one_key() -> None:
    limiter = RateLimiter(Limits(rpm=1))
    limiter.set_overrides({("key", "vip"): Limits(rpm=5)})
    for at in range(5):
        assert limiter.check("vip", None, None, float(at)) is None
    assert limiter.check("vip", None, None, 5.0) is not None
    limiter.check("plain", None, None, 0.0)
    assert limiter.check("plain", None, None, 1.0) is not None


def test_each_instance_enforces_its_share_rounded_up() -> None:
    limiter = RateLimiter(Limits(rpm=5, tpm=0), instances=2)
    assert limiter.limits_for("key", "k") == Limits(rpm=3, tpm=0)


def test_extra_request_limits_apply_on_top() -> None:
    limiter = RateLimiter()
    extra = {"budget:b1": ("the throttled budget", 1)}
    assert limiter.check("k1", None, None, 0.0, extra) is None

    refusal = limiter.check("k2", None, None, 1.0, extra)

    assert refusal is not None and refusal.subject == "the throttled budget"


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1, max_size=60),
)
def test_request_window_never_admits_more_than_the_limit_in_any_minute(
    limit: int, gaps: list[float]
) -> None:
    window = RequestWindow()
    admitted: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        wait = window.wait(limit, now)
        if wait is None:
            window.admit(now)
            admitted.append(now)
        else:
            # The promised moment admits it (times are floats: allow a
            # nanosecond of rounding).
            assert 0 < wait <= WINDOW_SECONDS
            probe = RequestWindow()
            probe._times = window._times.copy()
            assert probe.wait(limit, now + wait + 1e-9) is None
    for start in admitted:
        inside = [at for at in admitted if start <= at < start + WINDOW_SECONDS]
        assert len(inside) <= limit


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=5000),
    entries=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=20.0), st.integers(0, 3000)),
        max_size=40,
    ),
)
def test_token_window_wait_is_exactly_when_the_total_falls_below_the_limit(
    limit: int, entries: list[tuple[float, int]]
) -> None:
    window = TokenWindow()
    now = 0.0
    for gap, tokens in entries:
        now += gap
        window.add(tokens, now)
    wait = window.wait(limit, now)
    if wait is not None:
        assert wait > 0
        # Waiting expires entries, so probe the earlier moment first.
        if wait > 0.01:
            assert window.wait(limit, now + wait - 0.01) is not None
        assert window.wait(limit, now + wait + 1e-9) is None
