"""The benchmark's machinery in its smallest form: it runs and its numbers are sane.

Starts the simulator and ccag as processes, sends 20 streamed requests from
one client to each (ccag and direct), holds 10 stalled streams, compares
metrics on and off, and checks that the JSON results are well formed. No
timing is asserted: this machine's speed is not the test's business.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "perf" / "bench.py"

# Process start-up (two gateways, a simulator) and 40 requests; generous for
# a loaded CI machine, far below the suite's budget.
SMOKE_TIMEOUT_SECONDS = 180


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_stats(stats: dict[str, float]) -> None:
    assert set(stats) == {"median", "min", "max"}
    assert all(_is_number(value) for value in stats.values())
    assert stats["min"] <= stats["median"] <= stats["max"]


@pytest.mark.slow
def test_bench_smoke_run_writes_well_formed_results(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    environ = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    finished = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--pin", "none", "--output", str(output)],
        capture_output=True, text=True, timeout=SMOKE_TIMEOUT_SECONDS, env=environ,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "req/s direct" in finished.stdout

    results = json.loads(output.read_text())
    assert list(results["configs"]) == ["stream/1k/c1"]
    summary = results["configs"]["stream/1k/c1"]["summary"]
    for target in ("direct", "ccag"):
        found = summary[target]
        assert found["errors"] == 0
        assert found["completed"] == 20
        for key in ("rps", "ttfb_p50_ms", "ttfb_p99_ms", "total_p50_ms", "total_p99_ms"):
            _check_stats(found[key])
        assert found["rps"]["median"] > 0
        assert found["ttfb_p50_ms"]["median"] <= found["total_p50_ms"]["median"]
    gateway = summary["ccag"]["ccag"]
    _check_stats(gateway["cpu_ms_per_request"])
    assert gateway["hwm_kb"] >= gateway["rss_kb"] > 0

    memory = results["memory"]
    assert memory["idle_after_start_kb"]["VmRSS"] > 0
    streams = memory["streams"]
    assert streams["held"] == 10 and streams["ready"] == 10 and streams["errors"] == 0
    assert _is_number(streams["kb_per_stream"])

    cost = results["metrics_cost"]
    assert _is_number(cost["rps_ratio_on_over_off"]) and cost["rps_ratio_on_over_off"] > 0
    # 20 requests may cost less than one clock tick of CPU: then no ratio.
    cpu_ratio = cost["cpu_ratio_on_over_off"]
    assert cpu_ratio is None or (_is_number(cpu_ratio) and cpu_ratio >= 0)


FLOOR = BENCH.parent / "bench_floor.py"


def test_floor_benchmark_relays_every_frame_and_reports_its_cost(tmp_path: Path) -> None:
    output = tmp_path / "floor.json"
    result = subprocess.run(
        [sys.executable, str(FLOOR), "--replies", "2", "--relay-cpu", "", "--output", str(output)],
        capture_output=True, text=True, timeout=SMOKE_TIMEOUT_SECONDS, check=False,
    )
    assert result.returncode == 0, result.stderr

    results = json.loads(output.read_text())
    assert set(results) == {"epoll", "trio", "lean", "ccag-relay"}
    for kind, numbers in results.items():
        # 16 streams of 2 x 50 deltas and 5 other events went through each relay.
        assert numbers["events"] == 16 * (2 * 50 + 5), kind
        assert numbers["us_per_event"] > 0 and _is_number(numbers["us_per_event"]), kind
        assert numbers["frames_per_read"] >= 1.0, kind
    assert "ccag-relay" in result.stdout
