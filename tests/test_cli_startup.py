"""`ccag serve` and `ccag simulate` refuse what they cannot run with one line."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "ccag"]
TIMEOUT_S = 60


def run(*args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
    )


def test_a_port_in_use_is_one_clear_line_and_exit_2(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            "serve", "--simulator", "on", "--port", str(port),
            "--store", str(tmp_path / "s.sqlite3"), tmp_path=tmp_path,
        )
        simulate = run("simulate", "--port", str(port), tmp_path=tmp_path)

    assert result.returncode == 2
    assert f"cannot start: Address already in use (127.0.0.1:{port})" in result.stderr
    assert "Traceback" not in result.stderr
    assert simulate.returncode == 2 and "Traceback" not in simulate.stderr


def test_a_missing_certificate_is_named(tmp_path) -> None:
    result = run(
        "serve", "--simulator", "on", "--port", "0", "--store", str(tmp_path / "s.sqlite3"),
        "--tls-cert", str(tmp_path / "no.pem"), "--tls-key", str(tmp_path / "no.key"),
        tmp_path=tmp_path,
    )

    assert result.returncode == 2
    assert "cannot load" in result.stderr and "no.pem" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_store_that_cannot_be_created_is_named(tmp_path) -> None:
    result = run(
        "serve", "--simulator", "on", "--port", "0", "--store", "/proc/ccag/s.sqlite3",
        tmp_path=tmp_path,
    )

    assert result.returncode == 2
    assert "/proc/ccag/s.sqlite3" in result.stderr
    assert "Traceback" not in result.stderr


def test_boolean_settings_can_be_turned_off_on_the_command_line(tmp_path) -> None:
    result = run("serve", "--help", tmp_path=tmp_path)

    assert "--no-web-search" in result.stdout


def test_endpoints_with_their_own_credentials_are_not_simulator_mode(tmp_path) -> None:
    from ccag.app import simulator_wanted
    from ccag.config import load_config

    endpoint = {
        "id": "use1", "region": "us-east-1",
        "credentials": {"type": "static", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "x"},
    }
    with_endpoints = load_config({"endpoints": [endpoint]}, environ={})
    without = load_config({}, environ={})

    assert simulator_wanted(with_endpoints, environ={"AWS_EC2_METADATA_DISABLED": "true"}) is False
    assert simulator_wanted(without, environ={"AWS_EC2_METADATA_DISABLED": "true"}) is True


def test_a_bad_endpoint_is_the_first_and_only_error(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[endpoints]]\nid = "a"\n')

    result = run(
        "serve", "--config", str(config), "--port", "0",
        "--store", str(tmp_path / "s.sqlite3"), tmp_path=tmp_path,
    )

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "endpoint 'a': region is required" in lines[0]
    assert not (tmp_path / "s.sqlite3").exists()


def test_a_setting_of_the_wrong_kind_says_what_is_expected(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('port = "x1"\n')

    result = run("serve", "--config", str(config), tmp_path=tmp_path)

    assert result.returncode == 2
    assert "'x1' is not valid for port: must be a whole number" in result.stderr
    assert "invalid literal" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--ping-interval", "nan"),
        ("--keepalive-timeout", "nan"),
        ("--request-timeout", "inf"),
        ("--write-timeout", "-inf"),
        ("--upstream-idle-timeout", "NaN"),
    ],
)
def test_a_time_that_is_not_a_finite_number_stops_the_start(tmp_path, flag: str, value: str) -> None:
    result = run(
        "serve", f"{flag}={value}", "--port", "0", "--store", str(tmp_path / "s.sqlite3"),
        tmp_path=tmp_path,
    )

    assert result.returncode == 2
    setting = flag.removeprefix("--").replace("-", "_")
    assert f"{value!r} is not valid for {setting}: must be a finite number" in result.stderr
    assert not (tmp_path / "s.sqlite3").exists()
