"""The live view's hub, rollups and page serving, without a browser."""

from __future__ import annotations

import json

import trio

from ccag.liveview.aggregates import Rollups, percentile
from ccag.liveview.events import LiveEvent, Visibility
from ccag.liveview.hub import LiveHub, ViewerMode
from tests.e2e_client import request
from tests.gateway_fixture import open_gateway

ADMIN = Visibility(is_admin=True)


def event(seq: int, at: float, *, user: str = "ann", status: int = 200,
          ttft: float | None = 100.0) -> LiveEvent:
    return LiveEvent(
        seq=seq, at=at, request_id=f"req_{seq}", key_id="k1", key_name="ann-key",
        user=user, team="red", model="claude-sonnet-4-5", requested_model=None,
        endpoint="messages", endpoint_id="default", streaming=True, status=status,
        error_type=None, ttft_ms=ttft, duration_ms=200.0, input_tokens=10,
        output_tokens=20, cache_read_tokens=0, cache_write_tokens=0, tool_calls=1,
        cost_usd=0.001,
    )


def new_hub(**options: object) -> tuple[LiveHub, list[float]]:
    now = [1000.0]
    hub = LiveHub(lambda *_: 0.0, clock=lambda: now[0], **options)  # type: ignore[arg-type]
    return hub, now


def test_liveview_percentile_nearest_rank() -> None:
    values = sorted(float(value) for value in range(1, 101))
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_liveview_rollups_count_errors_and_throttles_apart() -> None:
    rollups = Rollups()
    rollups.add(event(1, 1000.2))
    rollups.add(event(2, 1000.4, status=429))
    rollups.add(event(3, 1000.6, status=529, ttft=None))
    rollups.add(event(4, 1000.7, status=499))
    summary = rollups.close(1000, in_flight=3)
    assert (summary["requests"], summary["errors"], summary["throttles"]) == (4, 1, 1)
    assert summary["in_flight"] == 3 and summary["ttft_p50"] == 100.0
    assert summary["models"]["claude-sonnet-4-5"]["requests"] == 4
    assert rollups.close(1001, in_flight=0)["requests"] == 0


async def test_liveview_hub_closes_each_second_once() -> None:
    hub, now = new_hub()
    viewer = hub.open_viewer(ADMIN)
    hub.add(event(1, 1000.5), now[0])
    now[0] = 1003.2
    hub.advance(now[0])
    hub.advance(now[0])
    seconds = [json.loads(item)["second"] for item in viewer.queue if isinstance(item, str)]
    assert [second["t"] for second in seconds] == [1000, 1001, 1002]
    assert [second["requests"] for second in seconds] == [1, 0, 0]


async def test_liveview_hub_slow_viewer_switches_to_summaries_bounded() -> None:
    hub, now = new_hub(max_queued=8)
    viewer = hub.open_viewer(ADMIN)
    for seq in range(1, 50):
        hub.add(event(seq, now[0]), now[0])
        now[0] += 0.5
        hub.advance(now[0])
        assert len(viewer.queue) <= 8

    assert viewer.mode is ViewerMode.SUMMARY
    assert all(isinstance(item, str) for item in viewer.queue)
    assert viewer.skipped >= 40

    # Drained and long enough on summaries: a snapshot and live events again.
    with trio.fail_after(5):
        kinds = []
        while viewer.queue:
            kinds.append(json.loads(await viewer.next_message(hub))["type"])
        now[0] += 10
        kinds.append(json.loads(await viewer.next_message(hub))["type"])
        kinds.append(json.loads(await viewer.next_message(hub))["type"])
    assert kinds[-2:] == ["caught_up", "snapshot"]
    assert viewer.mode is ViewerMode.LIVE


def test_liveview_hub_member_sees_only_their_own() -> None:
    hub, now = new_hub()
    member = hub.open_viewer(Visibility(is_admin=False, user="bo"))
    admin = hub.open_viewer(ADMIN)
    hub.add(event(1, now[0], user="ann"), now[0])
    hub.add(event(2, now[0], user="bo"), now[0])
    assert [item.seq for item in member.queue if isinstance(item, LiveEvent)] == [2]
    assert [item.seq for item in admin.queue if isinstance(item, LiveEvent)] == [1, 2]
    snapshot = json.loads(hub.snapshot(member.visibility))
    assert [entry["user"] for entry in snapshot["events"]] == ["bo"]


def test_liveview_hub_resume_needs_the_ring_to_hold_every_missed_event() -> None:
    hub, now = new_hub(ring_size=4)
    for seq in range(1, 7):
        hub.add(event(seq, now[0]), now[0])
    resumable = hub.open_viewer(ADMIN)
    hub.start(resumable, hub.epoch, 4)
    assert json.loads(resumable.queue[0])["type"] == "resumed"  # type: ignore[arg-type]
    assert [item.seq for item in resumable.queue if isinstance(item, LiveEvent)] == [5, 6]

    too_old = hub.open_viewer(ADMIN)
    hub.start(too_old, hub.epoch, 1)  # events 2 was pushed out of the ring
    assert json.loads(too_old.queue[0])["type"] == "snapshot"  # type: ignore[arg-type]


async def test_liveview_page_serves_assets_with_types_and_etags(tmp_path) -> None:
    with trio.fail_after(15):
        async with open_gateway(tmp_path) as running:
            page = await request(running.port, "GET", "/ui")
            script = await request(running.port, "GET", "/ui/app.js")
            again = await request(
                running.port, "GET", "/ui/app.js",
                headers=[("if-none-match", script.headers["etag"])],
            )
            missing = await request(running.port, "GET", "/ui/../ccag.sqlite3")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"/ui/app.js" in page.body
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith("text/javascript")
    assert "max-age" in script.headers["cache-control"]
    assert again.status == 304 and again.body == b""
    assert missing.status == 404
