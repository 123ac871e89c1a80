"""``ccag serve`` in simulator mode: the first port a reader finds in the log
with "listening on" is the gateway's, not the embedded simulator's."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

from tests.e2e_client import request

CLI = [sys.executable, "-m", "ccag"]
# How long a start (imports, store, simulator) and a graceful stop may take.
STARTUP_S = 30
STOP_S = 10

# The gateway's line, as perf/processes.py and operators parse it.
GATEWAY_LINE = re.compile(rb"ccag listening on http://127\.0\.0\.1:(\d+)\n")
# Any server's announcement, bare or named: "... listening on|at [URL]HOST:PORT".
LISTENING_ON = re.compile(r"listening (?:on|at) (?:https?://)?[\w.:\[\]-]+?:(\d+)")


async def log_until_gateway_line(stderr: trio.abc.ReceiveStream) -> bytes:
    seen = b""
    with trio.move_on_after(STARTUP_S):
        while not GATEWAY_LINE.search(seen):
            data = await stderr.receive_some(65536)
            if not data:
                break
            seen += data
    return seen


async def test_the_first_listening_on_port_is_the_gateways_and_the_simulator_names_itself(
    tmp_path: Path,
) -> None:
    process = await trio.lowlevel.open_process(
        [*CLI, "serve", "--simulator", "on", "--host", "127.0.0.1", "--port", "0",
         "--store", str(tmp_path / "s.sqlite3")],
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"},
    )
    try:
        assert process.stderr is not None
        seen = await log_until_gateway_line(process.stderr)
        gateway = GATEWAY_LINE.search(seen)
        assert gateway is not None, seen.decode(errors="replace")
        gateway_port = int(gateway.group(1))
        with trio.fail_after(STOP_S):
            assert (await request(gateway_port, "GET", "/health")).status == 200
    finally:
        process.send_signal(signal.SIGINT)
        with trio.move_on_after(STOP_S):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()

    lines = seen.decode().splitlines()
    announcements = [
        (line, int(match.group(1)))
        for line in lines
        if (match := LISTENING_ON.search(line)) is not None
    ]
    # Every other server that announces itself says it is the simulator...
    others = [line for line, port in announcements if port != gateway_port]
    assert any("Bedrock simulator listening on" in line for line in others), lines
    assert all("simulator listening" in line for line in others), lines
    # ...so the first port not named as the simulator's is the gateway's.
    unnamed = [port for line, port in announcements if "simulator" not in line]
    assert unnamed[0] == gateway_port, lines
