"""`ccag serve` checks its port before starting anything."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "ccag"]
TIMEOUT_S = 60


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

