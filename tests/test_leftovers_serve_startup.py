"""`ccag serve` checks its port before starting anything, and always says where it listens."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.e2e_client import request

CLI = [sys.executable, "-m", "ccag"]
TIMEOUT_S = 60
# How long a start (imports, store, simulator) and a graceful stop may take.
STARTUP_S = 30
STOP_S = 10

# The line perf/processes.py and operators look for.
LISTENING = re.compile(rb"ccag listening on http://127\.0\.0\.1:(\d+)\n")
DEMO_KEY = re.compile(rb"simulator mode: created the API key \S+ \(name simulator-demo\)")


def environment(tmp_path: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}


def test_a_port_in_use_stops_the_start_before_the_store_or_simulator(tmp_path: Path) -> None:
    store = tmp_path / "fresh.sqlite3"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*CLI, "serve", "--simulator", "on", "--host", "127.0.0.1", "--port", str(port),
             "--store", str(store)],
            capture_output=True, text=True, timeout=TIMEOUT_S, env=environment(tmp_path),
            check=False,
        )

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert len(lines) == 1, lines
    assert lines[0].endswith(f"cannot start: Address already in use (127.0.0.1:{port})"), lines
    assert not store.exists()


async def read_until_listening(stderr: trio.abc.ReceiveStream) -> bytes:
    """What the process logged up to its listening line, or all it logged by a timeout."""
    seen = b""
    with trio.move_on_after(STARTUP_S):
        while not LISTENING.search(seen):
            data = await stderr.receive_some(65536)
            if not data:
                break
            seen += data
    return seen


async def stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGINT)
    with trio.move_on_after(STOP_S):
        await process.wait()
        return
    process.kill()
    await process.wait()


@pytest.mark.parametrize("level", ["warning", "error"])
async def test_a_quiet_log_level_still_says_where_ccag_listens(tmp_path: Path, level: str) -> None:
    process = await trio.lowlevel.open_process(
        [*CLI, "serve", "--simulator", "on", "--port", "0", "--log-level", level,
         "--store", str(tmp_path / "s.sqlite3")],
        stderr=subprocess.PIPE, env=environment(tmp_path),
    )
    try:
        assert process.stderr is not None
        seen = await read_until_listening(process.stderr)
        listening = LISTENING.search(seen)
        assert listening is not None, seen.decode(errors="replace")
        port = int(listening.group(1))
        with trio.fail_after(STOP_S):
            health = await request(port, "GET", "/health")
    finally:
        await stop(process)

    assert port != 0 and health.status == 200
    assert DEMO_KEY.search(seen), seen
    assert b"bundled Bedrock SIMULATOR" in seen
    assert b"well-known default password" in seen
    assert process.returncode == 0
