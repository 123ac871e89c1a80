"""Spend records in the store: batching, a store that goes away, poison records,
budget totals shared through the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from ccag.bedrock.facts import shipped_models
from ccag.config import load_config
from ccag.spend.budgets import Budget, save_budget
from ccag.spend.pricing import PriceTable
from ccag.spend.queries import spend_by
from ccag.spend.recorder import SpendRecord, SpendRecorder
from ccag.spend.system import SpendSystem
from ccag.store import open_store_sync
from tests.postgres_fixture import BACKENDS, postgres_server  # noqa: F401
from tests.postgres_fixture import free_loopback_port as _free_loopback_port
from tests.postgres_fixture import fresh_postgres_database as _fresh_postgres_database
from tests.postgres_fixture import postgres_binary as _postgres_binary


class Counter:
    """The telemetry calls the recorder makes."""

    def __init__(self) -> None:
        self.flush_errors = 0
        self.quarantined = 0

    def spend_flush_error(self) -> None:
        self.flush_errors += 1

    def spend_quarantined(self, n: int) -> None:
        self.quarantined += n


def _record(**changes: Any) -> SpendRecord:
    fields: dict[str, Any] = {
        "at": time.time(),
        "model": "claude-sonnet-4-5",
        "status": 200,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.001,
        "key_id": "key_1",
        "user_name": "alice",
        "team_name": "red",
    }
    fields.update(changes)
    return SpendRecord.create(**fields)


def _count(store: Any) -> int:
    return int(
        store.call(lambda c: c.query("SELECT COUNT(*) FROM spend_records"))[0][0]
    )


@pytest.fixture(params=BACKENDS)
def store_url(request: Any, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ccag.sqlite3")
    else:
        yield from _fresh_postgres_database(request.getfixturevalue("postgres_server"))


async def test_records_are_written_in_batches_and_once(
    store_url: str, tmp_path: Any
) -> None:
    with open_store_sync(store_url) as store:
        recorder = SpendRecorder(
            store, Counter(), str(tmp_path / "q.jsonl"), batch_size=3
        )
        records = [_record() for _ in range(7)]
        for record in records:
            recorder.add(record)

        assert await recorder.flush() is True
        # A batch retried after an unknown commit outcome is not counted twice.
        for record in records[:2]:
            recorder.add(record)
        assert await recorder.flush() is True

        assert _count(store) == 7
        assert recorder.pending() == []


async def test_a_poison_record_is_quarantined_and_the_rest_written(
    store_url: str, tmp_path: Any
) -> None:
    quarantine = tmp_path / "quarantine.jsonl"
    counter = Counter()
    with open_store_sync(store_url) as store:
        recorder = SpendRecorder(store, counter, str(quarantine), batch_size=10)
        poison = _record(input_tokens=-5)  # the schema refuses negative counts
        recorder.add(_record())
        recorder.add(poison)
        recorder.add(_record())

        assert await recorder.flush() is True

        assert _count(store) == 2
    lines = quarantine.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [poison.id]
    assert json.loads(lines[0])["input_tokens"] == -5
    assert (counter.quarantined, counter.flush_errors) == (1, 0)


async def test_spend_queries_group_and_filter_by_time(
    store_url: str, tmp_path: Any
) -> None:
    day = 86400.0
    base = 20_000 * day
    with open_store_sync(store_url) as store:
        recorder = SpendRecorder(store, Counter(), str(tmp_path / "q.jsonl"))
        recorder.add(_record(at=base + 10, cost_usd=1.25, user_name="a", model="m1"))
        recorder.add(_record(at=base + 20, cost_usd=0.75, user_name="b", model="m1"))
        recorder.add(
            _record(at=base + day + 5, cost_usd=2.0, user_name="a", model="m2")
        )
        recorder.add(_record(at=base - 5, cost_usd=100.0, user_name="a", model="m2"))
        await recorder.flush()

        by_user = store.call(lambda c: spend_by(c, "user", base, base + 2 * day))
        by_day = store.call(lambda c: spend_by(c, "day", base, base + 2 * day))
        only_a = store.call(
            lambda c: spend_by(c, "model", base, base + 2 * day, user="a")
        )

    assert [(row["user"], row["cost_usd"], row["requests"]) for row in by_user] == [
        ("a", 3.25, 2),
        ("b", 0.75, 1),
    ]
    assert [row["cost_usd"] for row in by_day] == [2.0, 2.0]
    assert {row["model"]: row["cost_usd"] for row in only_a} == {"m2": 2.0, "m1": 1.25}


async def test_a_second_gateway_sees_the_first_ones_spend_after_a_refresh(
    store_url: str, tmp_path: Any
) -> None:
    config = load_config(
        {"store": store_url, "spend_quarantine_file": str(tmp_path / "q")}, environ={}
    )
    with open_store_sync(store_url) as store:
        now = time.time()
        store.call(
            lambda c: save_budget(
                c, Budget("b1", "team", "red", "monthly", 10.0, "block"), now
            )
        )
        first = SpendSystem(config, store, Counter(), PriceTable(shipped_models()))
        second = SpendSystem(config, store, Counter(), PriceTable(shipped_models()))
        await first.refresh()
        await second.refresh()

        first.add(_record(cost_usd=4.0))
        await first.recorder.flush()
        first.add(_record(cost_usd=1.0))  # still buffered: only the first sees it
        await second.refresh()
        await first.refresh()

        (seen_by_second,) = second.budgets.statuses("alice", "red")
        (seen_by_first,) = first.budgets.statuses("alice", "red")
    assert seen_by_second.spent_usd == pytest.approx(4.0)
    assert seen_by_first.spent_usd == pytest.approx(5.0)


# -- a PostgreSQL server this test stops and starts -------------------------


class StoppablePostgres:
    """A throwaway PostgreSQL on 127.0.0.1 that a test can stop and restart."""

    def __init__(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="ccag-spend-pg-")
        self.data = os.path.join(self.workdir, "data")
        self.port = _free_loopback_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            account = pwd.getpwnam("postgres")
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            self.as_user
            + [
                _postgres_binary("initdb"),
                "-D",
                self.data,
                "-U",
                "ccag",
                "--auth=trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://ccag@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            self.as_user
            + [
                _postgres_binary("pg_ctl"),
                "start",
                "-w",
                "-D",
                self.data,
                "-l",
                os.path.join(self.workdir, "log"),
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.workdir} -c fsync=off",
            ],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self.as_user
            + [
                _postgres_binary("pg_ctl"),
                "stop",
                "-w",
                "-D",
                self.data,
                "-m",
                "immediate",
            ],
            check=True,
            capture_output=True,
        )

    def remove(self) -> None:
        subprocess.run(
            self.as_user
            + [_postgres_binary("pg_ctl"), "stop", "-D", self.data, "-m", "immediate"],
            check=False,
            capture_output=True,
        )
        subprocess.run(["rm", "-rf", self.workdir], check=False)


async def _records_survive_the_store_going_away_and_coming_back(tmp_path: Any) -> None:
    server = StoppablePostgres()
    counter = Counter()
    try:
        server.start()
        with trio.fail_after(60):
            with open_store_sync(server.url) as store:
                recorder = SpendRecorder(
                    store, counter, str(tmp_path / "q.jsonl"), batch_size=2
                )
                recorder.add(_record())
                assert await recorder.flush() is True

                await trio.to_thread.run_sync(server.stop)
                written_while_down = [_record() for _ in range(5)]
                for record in written_while_down:
                    recorder.add(record)
                assert await recorder.flush() is False
                assert await recorder.flush() is False
                assert len(recorder.pending()) == 5

                await trio.to_thread.run_sync(server.start)
                recorder.add(_record(output_tokens=-1))  # and one poison record
                assert await recorder.flush() is True

                ids = {
                    row[0]
                    for row in store.call(
                        lambda c: c.query("SELECT id FROM spend_records")
                    )
                }
    finally:
        server.remove()

    assert {record.id for record in written_while_down} <= ids
    assert len(ids) == 6
    assert counter.flush_errors == 2
    assert counter.quarantined == 1
    assert len((tmp_path / "q.jsonl").read_text().splitlines()) == 1


if "postgres" in BACKENDS:  # CCAG_TEST_POSTGRES=0 leaves PostgreSQL out
    test_records_survive_the_store_going_away_and_coming_back = (
        _records_survive_the_store_going_away_and_coming_back
    )
