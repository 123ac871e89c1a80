"""The simulator and the gateway as processes of their own, for resilience tests.

A leak or a signal is only honest across a process boundary: the gateway's
file descriptors, tasks and memory are its own, SIGTERM reaches its real
signal handling, and its exit code is what an operator's supervisor sees.
The process machinery is perf/processes.py's (the benchmark starts the same
pair); this module adds API keys, settings and the runtime readings.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

_PROCESSES_FILE = Path(__file__).resolve().parent.parent / "perf" / "processes.py"


def _load_processes() -> Any:
    spec = importlib.util.spec_from_file_location(
        "ccag_perf_processes", _PROCESSES_FILE
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


processes = _load_processes()

# How long a test waits for a JSON answer from a process on loopback.
HTTP_TIMEOUT_SECONDS = 10.0


@attrs.define
class RunningPair:
    """A simulator and a gateway in front of it, both running."""

    simulator: Any
    gateway: subprocess.Popen[bytes]
    port: int
    key: str
    admin_key: str
    store: str
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.gateway.pid)

    def runtime(self) -> dict[str, Any]:
        """The gateway's ``/admin/debug/runtime`` reading."""
        return get_json(self.port, "/admin/debug/runtime", self.admin_key)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def spend_rows(self) -> list[tuple[str, int, int]]:
        """(request id, status, output tokens) of every stored spend record."""
        with sqlite3.connect(self.store) as connection:
            return list(
                connection.execute(
                    "SELECT request_id, status, output_tokens FROM spend_records"
                )
            )


def get_json(port: int, path: str, key: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"x-api-key": key}
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
        return json.loads(response.read())


def create_key(store: str, name: str, *extra: str) -> str:
    result = subprocess.run(
        [
            processes.PYTHON,
            "-m",
            "ccag",
            "keys",
            "create",
            name,
            "--store",
            store,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=processes.clean_environment(),
    )
    return str(result.stdout.strip().splitlines()[-1])


def open_fd_count(pid: int) -> int:
    """File descriptors a process holds, from /proc."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


@contextmanager
def running_pair(
    tmp_path: Path, settings: dict[str, str] | None = None
) -> Iterator[RunningPair]:
    """Start the simulator and ``ccag serve``; stop both (by pid) afterwards.

    Args:
        settings: ``ccag serve`` settings by name (``shutdown_grace``...),
            passed as ``CCAG_*`` variables.
    """
    store = str(tmp_path / "gateway.sqlite3")
    log_path = tmp_path / "gateway.log"
    environ = {
        f"CCAG_{name.upper()}": value for name, value in (settings or {}).items()
    }
    simulator = processes.start_simulator(None)
    gateway = None
    try:
        key = create_key(store, "resilience")
        admin_key = create_key(store, "resilience-admin", "--role", "admin")
        started = processes.start_gateway(
            simulator, store, str(log_path), None, environ
        )
        gateway = started.process
        yield RunningPair(
            simulator, gateway, started.port, key, admin_key, store, log_path
        )
    finally:
        if gateway is not None:
            processes.stop(gateway, started.log)
        processes.stop(simulator.process)
        if simulator.process.stdout is not None:
            simulator.process.stdout.close()


def is_refused(port: int) -> bool:
    """Whether a new connection to ``port`` is refused (nobody listens)."""
    with socket.socket() as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return True
    return False
