"""CredentialSource over botocore's chain, and the has-credentials check.

Every test runs in an environment of its own: no AWS_* variables but those
it sets, config files in a temporary directory, and the instance metadata
service disabled so that nothing is sent to 169.254.169.254.
"""

from __future__ import annotations

import datetime
import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from botocore.credentials import RefreshableCredentials

from ccag.bedrock.credentials import (
    BEARER_TOKEN_ENV_VAR,
    CredentialSource,
    bearer_token,
    has_credentials,
)
from ccag.bedrock.errors import CredentialsError
from ccag.bedrock.signing import AwsCredentials

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
TIMEOUT = 10


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return tmp_path


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += datetime.timedelta(minutes=minutes)


class FakeRefresher:
    """Issues generation N credentials, valid for ``lifetime`` from the clock."""

    def __init__(self, clock: FakeClock, lifetime_minutes: float = 30) -> None:
        self.clock = clock
        self.lifetime = datetime.timedelta(minutes=lifetime_minutes)
        self.generation = 0
        self.gate: threading.Event | None = None

    def __call__(self) -> dict[str, str]:
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT)
        self.generation += 1
        return {
            "access_key": f"ASIA{self.generation}",
            "secret_key": f"secret{self.generation}",
            "token": f"token{self.generation}",
            "expiry_time": (self.clock() + self.lifetime).isoformat(),
        }


def refreshable(clock: FakeClock, refresher: FakeRefresher) -> RefreshableCredentials:
    first = refresher()
    return RefreshableCredentials(
        first["access_key"],
        first["secret_key"],
        first["token"],
        datetime.datetime.fromisoformat(first["expiry_time"]),
        refresher,
        "fake",
        time_fetcher=clock,
    )


async def test_chain_reads_environment_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")

    with trio.fail_after(TIMEOUT):
        credentials = await CredentialSource.from_chain().get()

    assert credentials == AwsCredentials("AKIAENV", "env-secret", "env-token")
    assert has_credentials()


async def test_chain_reads_a_named_profile(
    aws_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (aws_environment / "credentials").write_text(
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n"
        "[dev]\naws_access_key_id = AKIADEV\naws_secret_access_key = dev-secret\n"
    )
    (aws_environment / "config").write_text("[profile dev]\nregion = eu-west-1\n")

    with trio.fail_after(TIMEOUT):
        named = await CredentialSource.from_chain("dev").get()
        monkeypatch.setenv("AWS_PROFILE", "dev")
        from_env = await CredentialSource.from_chain().get()

    assert named == AwsCredentials("AKIADEV", "dev-secret")
    assert from_env == named
    assert has_credentials("dev")


async def test_chain_reads_keys_from_the_config_file(aws_environment: Path) -> None:
    (aws_environment / "config").write_text(
        "[profile ops]\naws_access_key_id = AKIAOPS\naws_secret_access_key = ops-secret\n"
    )

    with trio.fail_after(TIMEOUT):
        credentials = await CredentialSource.from_chain("ops").get()

    assert credentials.access_key == "AKIAOPS"


async def test_chain_without_credentials_raises_credentials_error() -> None:
    assert not has_credentials()

    with trio.fail_after(TIMEOUT):
        with pytest.raises(CredentialsError, match="no AWS credentials"):
            await CredentialSource.from_chain().get()


async def test_unknown_profile_is_a_credentials_error() -> None:
    with pytest.raises(CredentialsError, match="nope"):
        has_credentials("nope")

    with trio.fail_after(TIMEOUT):
        with pytest.raises(CredentialsError) as caught:
            await CredentialSource.from_chain("nope").get()
    assert caught.value.__cause__ is not None


def test_has_credentials_counts_a_bedrock_api_key_and_container_credentials() -> None:
    assert bearer_token({BEARER_TOKEN_ENV_VAR: "ABSK-x"}) == "ABSK-x"
    assert bearer_token({BEARER_TOKEN_ENV_VAR: ""}) is None
    assert has_credentials(environ={BEARER_TOKEN_ENV_VAR: "ABSK-x"})
    container = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"}
    assert has_credentials(environ=container)
    assert not has_credentials(environ={"AWS_EC2_METADATA_DISABLED": "true"})


async def test_static_source_hands_out_its_credentials() -> None:
    source = CredentialSource.static("AKIA", "secret", "token")

    with trio.fail_after(TIMEOUT):
        assert await source.get() == AwsCredentials("AKIA", "secret", "token")


async def test_refreshable_credentials_are_renewed_before_they_expire() -> None:
    clock = FakeClock()
    refresher = FakeRefresher(clock, lifetime_minutes=30)
    source = CredentialSource.from_botocore(refreshable(clock, refresher), clock=clock)
    seen: list[str] = []

    with trio.fail_after(TIMEOUT):
        for _ in range(8):
            seen.append((await source.get()).access_key)
            clock.advance(7)

    # 30-minute credentials, renewed once fewer than 15 minutes are left:
    # every request across three expiries signs with valid credentials.
    assert seen == ["ASIA1", "ASIA1", "ASIA1", "ASIA2", "ASIA2", "ASIA2", "ASIA3", "ASIA3"]
    assert refresher.generation == 3


async def test_refresh_runs_in_a_thread_while_others_keep_the_valid_credentials() -> None:
    clock = FakeClock()
    refresher = FakeRefresher(clock, lifetime_minutes=30)
    source = CredentialSource.from_botocore(refreshable(clock, refresher), clock=clock)
    refreshed: list[AwsCredentials] = []

    with trio.fail_after(TIMEOUT):
        assert (await source.get()).access_key == "ASIA1"
        clock.advance(20)
        refresher.gate = threading.Event()

        async with trio.open_nursery() as nursery:

            async def refresh() -> None:
                refreshed.append(await source.get())

            nursery.start_soon(refresh)
            await trio.testing.wait_all_tasks_blocked()
            # The event loop runs, and a second request is not held up.
            assert (await source.get()).access_key == "ASIA1"
            refresher.gate.set()

    assert [credentials.access_key for credentials in refreshed] == ["ASIA2"]


async def test_expired_credentials_make_callers_wait_for_the_refresh() -> None:
    clock = FakeClock()
    refresher = FakeRefresher(clock, lifetime_minutes=30)
    source = CredentialSource.from_botocore(refreshable(clock, refresher), clock=clock)
    results: list[str] = []

    with trio.fail_after(TIMEOUT):
        await source.get()
        clock.advance(31)
        refresher.gate = threading.Event()

        async with trio.open_nursery() as nursery:

            async def get() -> None:
                results.append((await source.get()).access_key)

            for _ in range(3):
                nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            assert results == []
            refresher.gate.set()

    assert results == ["ASIA2"] * 3
    assert refresher.generation == 2


async def test_a_failing_refresh_is_a_credentials_error() -> None:
    def broken() -> tuple[AwsCredentials, datetime.datetime | None]:
        raise OSError("sso portal unreachable")

    with trio.fail_after(TIMEOUT):
        with pytest.raises(CredentialsError, match="sso portal unreachable") as caught:
            await CredentialSource(broken).get()

    assert isinstance(caught.value.__cause__, OSError)
