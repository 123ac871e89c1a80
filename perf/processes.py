"""Starting the simulator and the gateway as processes of their own.

Each process can be pinned to CPUs with ``taskset`` so that the gateway has a
core to itself while the simulator and the load generator share the other:
on a 2-core machine that is the only split in which the gateway's numbers are
its own and the upstream costs the same with and without the gateway.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import IO, Any

import attrs

PYTHON = sys.executable

# How long a process may take to start listening: imports plus store setup.
START_TIMEOUT_SECONDS = 30.0

_LISTENING = re.compile(r"ccag listening on http://[^\s:]+:(\d+)")


def pinned(command: list[str], cpus: str | None) -> list[str]:
    """``command`` under ``taskset -c cpus`` when pinning was asked for."""
    if not cpus:
        return command
    if shutil.which("taskset") is None:
        raise RuntimeError("pinning needs taskset (util-linux), which is not installed")
    return ["taskset", "-c", cpus, *command]


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: no AWS settings from outside, never IMDS."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "OTEL_", "CCAG_"))
    }
    environ.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        PYTHONDONTWRITEBYTECODE="1",
    )
    environ.update(extra or {})
    return environ


@attrs.define
class SimulatorProcess:
    process: subprocess.Popen[str]
    url: str
    host: str
    port: int
    access_key: str
    secret_key: str
    region: str

    def control(self, path: str, document: Any = None) -> Any:
        """Call the simulator's control API (``/_sim/...``)."""
        data = None if document is None else json.dumps(document).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="POST" if data is not None or path != "/_sim/requests" else "GET"
        )
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def start_simulator(cpus: str | None) -> SimulatorProcess:
    """``python -m ccag simulate`` on a free loopback port."""
    command = pinned([PYTHON, "-m", "ccag", "simulate", "--host", "127.0.0.1"], cpus)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=clean_environment(),
    )
    assert process.stdout is not None
    values: dict[str, str] = {}
    while len(values) < 4:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the simulator exited before it printed its address")
        name, _, value = line.strip().partition("=")
        values[name] = value
    url = values["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"]
    host, _, port = url.removeprefix("http://").rpartition(":")
    return SimulatorProcess(
        process, url, host, int(port), values["AWS_ACCESS_KEY_ID"],
        values["AWS_SECRET_ACCESS_KEY"], values["AWS_REGION"],
    )


def create_key(store: str) -> str:
    """A fresh API key in ``store``, made with ``ccag keys create``."""
    result = subprocess.run(
        [PYTHON, "-m", "ccag", "keys", "create", "bench", "--store", store],
        capture_output=True, text=True, check=True, env=clean_environment(),
    )
    return result.stdout.strip().splitlines()[-1]


@attrs.define
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]


def start_gateway(
    simulator: SimulatorProcess,
    store: str,
    log_path: str,
    cpus: str | None,
    extra_environ: dict[str, str] | None = None,
) -> GatewayProcess:
    """``python -m ccag serve`` against the simulator, as Bedrock with SigV4.

    The log (access log included, at the default level) goes to a file:
    writing it is part of the work measured, and a pipe nobody reads would
    stall the gateway.
    """
    environ = clean_environment(
        {
            "AWS_ACCESS_KEY_ID": simulator.access_key,
            "AWS_SECRET_ACCESS_KEY": simulator.secret_key,
            **(extra_environ or {}),
        }
    )
    command = pinned(
        [
            PYTHON, "-m", "ccag", "serve", "--simulator", "off",
            "--endpoint-url", simulator.url, "--region", simulator.region,
            "--store", store, "--host", "127.0.0.1", "--port", "0",
            "--admin-password", "bench-admin-password",
        ],
        cpus,
    )
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(command, stdout=log, stderr=log, env=environ)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with open(log_path, encoding="utf-8", errors="replace") as file:
            match = _LISTENING.search(file.read())
        if match:
            return GatewayProcess(process, int(match.group(1)), log)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    with open(log_path, encoding="utf-8", errors="replace") as file:
        raise RuntimeError("ccag did not start:\n" + file.read()[-2000:])


def stop(process: subprocess.Popen[Any], log: IO[bytes] | None = None) -> None:
    """SIGTERM, then SIGKILL if it does not stop within a few seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if log is not None:
        log.close()


def stop_profiler(profiler: subprocess.Popen[Any]) -> None:
    """py-spy writes its output when interrupted."""
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(timeout=30)
    except subprocess.TimeoutExpired:
        profiler.kill()


def closed_port() -> int:
    """A loopback port nobody listens on (for OTLP pointed at nothing)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pid_of(process: subprocess.Popen[Any]) -> int:
    """The pid of the real process: taskset execs it, so the pid is the same."""
    return process.pid
