"""A throwaway PostgreSQL server for tests: initdb in a temporary directory,
listening on 127.0.0.1 on a free port, stopped and removed afterwards.

The tests that use it fail if it cannot be started; set CCAG_TEST_POSTGRES=0
to leave PostgreSQL out of the run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

USE_POSTGRES = os.environ.get("CCAG_TEST_POSTGRES", "1") != "0"
BACKENDS = ["sqlite", "postgres"] if USE_POSTGRES else ["sqlite"]
POSTGRES_START_SECONDS = 30.0


def postgres_binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(
            f"PostgreSQL's {name} is not installed (apt-get install postgresql); "
            "set CCAG_TEST_POSTGRES=0 to run without PostgreSQL"
        )
    return found


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with a throwaway data directory."""
    import psycopg

    # PostgreSQL refuses to run as root; run it as the postgres user then.
    as_user: list[str] = []
    workdir = tempfile.mkdtemp(prefix="ccag-pg-")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(workdir, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(workdir, "data")
    subprocess.run(
        as_user + [postgres_binary("initdb"), "-D", data, "-U", "ccag",
                   "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )
    port = free_loopback_port()
    # Open for the server's whole life, closed in the finally below.
    log = open(os.path.join(workdir, "server.log"), "wb")  # noqa: SIM115
    server = subprocess.Popen(
        as_user + [postgres_binary("postgres"), "-D", data, "-h", "127.0.0.1",
                   "-p", str(port), "-k", workdir, "-c", "fsync=off"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"postgresql://ccag@127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + POSTGRES_START_SECONDS
        while True:
            try:
                psycopg.connect(url + "/postgres", connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    with open(log.name, "rb") as written:
                        tail = written.read()[-2000:].decode(errors="replace")
                    pytest.fail(f"PostgreSQL did not start:\n{tail}")
                time.sleep(0.1)
        yield url
    finally:
        subprocess.run(
            as_user + [postgres_binary("pg_ctl"), "stop", "-D", data, "-m", "immediate"],
            capture_output=True,
            check=False,  # a server that already stopped is fine
        )
        server.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def fresh_postgres_database(server_url: str) -> Iterator[str]:
    import psycopg

    name = "ccag_test_" + os.urandom(6).hex()
    with psycopg.connect(server_url + "/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{server_url}/{name}"
    with psycopg.connect(server_url + "/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
