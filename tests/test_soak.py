"""Soak: 500 concurrent streams for a minute through a real gateway process.

The simulator and ``ccag serve`` run as processes of their own and the load
comes from perf/loadgen.py (raw keep-alive sockets, closed loop), so every
file descriptor, task and byte counted is the gateway's. A short warm-up
with the same concurrency fills the upstream pool and the allocator first;
the baseline is read after it. After the soak, once no request is in
flight, the gateway must be back at that baseline: a leaked socket, task or
buffer per request would show as hundreds or thousands over it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.process_fixture import (
    get_json,
    open_fd_count,
    processes,
    running_pair,
)

LOADGEN = Path(__file__).resolve().parent.parent / "perf" / "loadgen.py"

SOAK_STREAMS = 500
SOAK_SECONDS = 60.0
WARMUP_SECONDS = 4.0

# Each stream is eight deltas a quarter second apart (about two seconds), so
# the 500 streams are held open together, not turned over as fast as the
# CPU allows; that is about 250 requests a second at most, which two shared
# cores sustain with the simulator and the load generator beside the gateway.
STREAM_DELTAS = 8
STREAM_DELAY_SECONDS = 0.25

# Scripted answers queued in the simulator: more than the soak can use (a
# call past the queue gets the simulator's instant default answer).
SCRIPTED_STREAMS = 20_000

# What "back to baseline" allows. Descriptors and tasks: the upstream pool
# may hold a few more or fewer idle connections than at the baseline (each
# is one socket and no task); one leak per request would be thousands.
# Memory: the allocator keeps some of what the peak used; a leak of even a
# kilobyte per request is over 10 MB in this run.
FD_TOLERANCE = 16
TASK_TOLERANCE = 16
RSS_TOLERANCE_BYTES = 48 * 1024 * 1024

# How long the gateway may take to finish the last requests' bookkeeping.
SETTLE_SECONDS = 10.0

_REQUESTS_TOTAL = re.compile(
    r"^ccag_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$"
)


def _request_bytes(port: int, key: str) -> bytes:
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "soak"}],
        }
    ).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _load(
    tmp_path: Path, port: int, key: str, seconds: float, name: str
) -> dict[str, Any]:
    request_file = tmp_path / f"{name}.http"
    request_file.write_bytes(_request_bytes(port, key))
    spec_file = tmp_path / f"{name}.json"
    spec_file.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "port": port,
                "request_file": str(request_file),
                "concurrency": SOAK_STREAMS,
                "mode": "rate",
                "duration": seconds,
            }
        )
    )
    result = subprocess.run(
        [processes.PYTHON, str(LOADGEN), str(spec_file)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout))


def _settled(pair: Any) -> dict[str, Any]:
    """The runtime reading once nothing is in flight and the count is steady.

    Connections the load generator closed are wound down by their own tasks
    a moment after the last response; a reading then would count them.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    previous = None
    while True:
        reading = dict(pair.runtime())
        steady = previous is not None and reading["tasks"] == previous["tasks"]
        if (
            steady and reading["requests_in_flight"] == 0
        ) or time.monotonic() > deadline:
            return reading
        previous = reading
        time.sleep(0.5)


def _statuses(pair: Any) -> dict[str, float]:
    """``ccag_requests_total`` summed by status, from the gateway's /metrics."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{pair.port}/metrics", headers={"x-api-key": pair.admin_key}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = _REQUESTS_TOTAL.match(line)
        if match is None:
            continue
        status = re.search(r'status="([^"]*)"', match.group("labels"))
        assert status is not None, line
        totals[status.group(1)] = totals.get(status.group(1), 0.0) + float(
            match.group("value")
        )
    return totals


@pytest.mark.slow
def test_soak_500_streams_for_a_minute_leave_no_leak(tmp_path: Path) -> None:
    with running_pair(tmp_path) as pair:
        stream = {
            "type": "text",
            "deltas": STREAM_DELTAS,
            "delay": STREAM_DELAY_SECONDS,
        }
        pair.simulator.control("/_sim/script", [stream] * SCRIPTED_STREAMS)

        warmup = _load(tmp_path, pair.port, pair.key, WARMUP_SECONDS, "warmup")
        assert warmup["errors"] == 0, warmup["error_samples"]
        baseline = _settled(pair)
        baseline_fds = open_fd_count(pair.pid)

        soak = _load(tmp_path, pair.port, pair.key, SOAK_SECONDS, "soak")
        after = _settled(pair)
        after_fds = open_fd_count(pair.pid)
        statuses = _statuses(pair)
        # Still serving after the soak.
        assert get_json(pair.port, "/health", pair.key)

    summary = {"warmup": warmup, "soak": soak, "baseline": baseline, "after": after}
    assert soak["errors"] == 0, soak["error_samples"]
    # Held together for the minute: about a stream's length per request each.
    assert soak["completed"] >= SOAK_STREAMS * SOAK_SECONDS / 10, summary
    # Every request the gateway counted ended in 200: no stream ended in an
    # SSE error event (the load generator checks framing only).
    assert set(statuses) == {"200"}, statuses
    assert statuses["200"] >= warmup["completed"] + soak["completed"]

    assert after["requests_in_flight"] == 0, summary
    assert after_fds <= baseline_fds + FD_TOLERANCE, (baseline_fds, after_fds)
    assert after["open_fds"] <= baseline["open_fds"] + FD_TOLERANCE, summary
    assert after["tasks"] <= baseline["tasks"] + TASK_TOLERANCE, summary
    assert after["rss_bytes"] <= baseline["rss_bytes"] + RSS_TOLERANCE_BYTES, summary
