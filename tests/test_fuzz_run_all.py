"""fuzz/run_all.py, the long fuzzing entry (``tox -e fuzz``), in one-second runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN_ALL = Path(__file__).resolve().parent.parent / "fuzz" / "run_all.py"

# Start-up of a child per target plus a second of fuzzing each.
RUN_TIMEOUT_SECONDS = 120

BROKEN_TARGET = """
def check(data: bytes) -> None:
    assert b"\\x07" not in data, "the byte 7 breaks this target"


SEEDS = [b"fine"]
"""


def run_all(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )


def test_fuzz_run_all_runs_every_target_and_passes(tmp_path: Path) -> None:
    result = run_all(
        "--seconds", "1", "--engine", "hypothesis", "--artifacts", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("eventstream", "sse", "stream", "http1", "http2", "translate"):
        assert f"ok    fuzz_{name}" in result.stdout
    assert not list(tmp_path.iterdir())


def test_fuzz_run_all_reports_a_crash_with_a_reproducer(tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "fuzz_broken.py").write_text(BROKEN_TARGET)
    artifacts = tmp_path / "artifacts"

    result = run_all(
        "--seconds",
        "5",
        "--engine",
        "hypothesis",
        "--targets",
        str(targets),
        "--artifacts",
        str(artifacts),
    )

    assert result.returncode == 1
    assert "CRASH fuzz_broken" in result.stdout
    (crash,) = artifacts.iterdir()
    assert crash.read_bytes() == b"\x07"  # shrunk to the one byte that matters
    assert f"--reproduce fuzz_broken {crash}" in result.stdout
    replay = run_all(
        "--targets", str(targets), "--reproduce", "fuzz_broken", str(crash)
    )
    assert replay.returncode != 0
    assert "the byte 7 breaks this target" in replay.stderr
