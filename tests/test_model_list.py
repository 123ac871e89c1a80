"""``GET /v1/models/{id}`` through the official SDK: every name that
``POST /v1/messages`` accepts retrieves its model; unknown names are 404."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
import trio

from ccag.anthropic.models import ModelCatalog
from ccag.bedrock.facts import shipped_models
from tests.gateway_fixture import open_gateway

TIMEOUT = 30


@pytest.fixture(autouse=True)
def no_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    yield


async def test_retrieve_accepts_dated_names_aliases_and_1m_and_404s_unknown_names(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            with anthropic.Anthropic(base_url=running.url, api_key=running.key, max_retries=0) as client:
                listed = {model.id: model for model in await trio.to_thread.run_sync(
                    lambda: list(client.models.list()))}
                retrieve = functools.partial(trio.to_thread.run_sync, client.models.retrieve)
                dated = await retrieve("claude-sonnet-4-5-20250929")
                alias = await retrieve("claude-3-5-sonnet-latest")
                one_million = await retrieve("claude-sonnet-4-5[1m]")
                listed_id = await retrieve("claude-haiku-4-5")
                with pytest.raises(anthropic.NotFoundError) as unknown:
                    await retrieve("claude-nonexistent-9")

    # Each name gives the model it points to, exactly as the list shows it.
    assert dated == listed["claude-sonnet-4-5"]
    assert alias == listed["claude-3-5-sonnet-20241022"]
    assert one_million == listed["claude-sonnet-4-5"]
    assert listed_id == listed["claude-haiku-4-5"]
    assert dated.display_name and dated.created_at.year == 2025

    assert unknown.value.status_code == 404
    body = unknown.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "claude-nonexistent-9" in body["error"]["message"]


def test_known_canonical_takes_every_spelling_resolve_knows_and_no_other() -> None:
    catalog = ModelCatalog(shipped_models())

    for name in (
        "claude-sonnet-4-5", "CLAUDE-SONNET-4-5-20250929", " claude-sonnet-4-5[1m] ",
        "anthropic.claude-sonnet-4-5-20250929-v1:0", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-sonnet-4-5-20250929[1M]",
    ):
        assert catalog.known_canonical(name) == "claude-sonnet-4-5", name
        assert catalog.resolve(name, "us").canonical == "claude-sonnet-4-5", name
    assert catalog.known_canonical("claude-3-5-sonnet-latest") == "claude-3-5-sonnet-20241022"

    for name in ("claude-nonexistent-9", "anthropic.claude-made-up-v1:0", "[1m]", "",
                 "arn:aws:bedrock:us-east-1:111122223333:inference-profile/x"):
        assert catalog.known_canonical(name) is None, name
