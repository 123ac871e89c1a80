"""Model discovery: ListInferenceProfiles makes a model unknown to the table work."""

from __future__ import annotations

import json

import trio
from hypothesis import given
from hypothesis import strategies as st

from ccag.bedrock.discovery import match, models_in, profile_ids_of
from ccag.simulator import catalog
from tests.e2e_client import (
    assert_error,
    key_headers,
    message_body,
    post_messages,
    request,
)
from tests.endpoints_fixture import SimEndpoint, open_endpoints

TIMEOUT_S = 30
FUTURE_ID = "anthropic.claude-future-9-20270101-v1:0"


def future_models() -> dict[str, catalog.SimModel]:
    models = catalog.models_from_facts()
    models[FUTURE_ID] = catalog.SimModel(
        bedrock_id=FUTURE_ID,
        geo_prefixes=frozenset({"us", "global"}),
        in_region=False,
        betas=frozenset(),
        fields={},
    )
    return models


def test_match_prefers_exact_then_newest_dated() -> None:
    ids = [
        "us.anthropic.claude-x-1-20260101-v1:0",
        "us.anthropic.claude-x-1-20270101-v1:0",
        "eu.anthropic.claude-x-1-20280101-v1:0",
        "us.anthropic.claude-y-2-v1:0",
        "us.amazon.nova-pro-v1:0",
    ]
    models = models_in(ids, "us")
    assert [m.profile_id for m in models] == ids[:2] + [ids[3]]
    assert match("claude-x-1", models).profile_id == ids[1]
    assert match("Claude-X-1-20260101", models).profile_id == ids[0]
    assert match("claude-y-2", models).base_model_id == "anthropic.claude-y-2-v1:0"
    assert match("claude-z", models) is None


@given(st.lists(st.text(max_size=40), max_size=20), st.text(max_size=20))
def test_match_never_fails_on_odd_ids(ids: list[str], name: str) -> None:
    found = match(name, models_in(ids, "us"))
    assert found is None or found.profile_id in ids


def test_profile_page_reading() -> None:
    page = {
        "inferenceProfileSummaries": [
            {"inferenceProfileId": "us.anthropic.a-v1:0", "status": "ACTIVE"},
            {"inferenceProfileId": "us.anthropic.b-v1:0", "status": "INACTIVE"},
            {"noId": True},
        ],
        "nextToken": "abc",
    }
    assert profile_ids_of(page) == (["us.anthropic.a-v1:0"], "abc")


async def test_a_model_only_the_endpoint_knows_works_and_an_unknown_one_is_404(tmp_path) -> None:
    endpoint = SimEndpoint("east", "us-east-1", options={"models": future_models()})
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, [endpoint]) as running:
            simulator = running.simulators["east"]
            known = await post_messages(running.port, running.key, message_body("claude-future-9"))
            streamed = await post_messages(
                running.port, running.key, message_body("claude-future-9", stream=True)
            )
            invoked = [r.model_id for r in simulator.model_requests()]

            simulator.reset()
            unknown = await post_messages(running.port, running.key, message_body("claude-nothing-1"))
            again = await post_messages(running.port, running.key, message_body("claude-nothing-1"))
            after_unknown = simulator.requests
            listing = await request(running.port, "GET", "/v1/models", headers=key_headers(running.key))

    assert known.status == 200 and known.json()["model"] == "claude-future-9"
    assert streamed.status == 200 and b"message_stop" in streamed.body
    assert invoked == ["us." + FUTURE_ID] * 2
    assert_error(unknown, 404, "not_found_error")
    assert_error(again, 404, "not_found_error")
    # No model call; at most one listing for the unknown name (negative cache).
    assert all(r.kind == "inference-profiles" for r in after_unknown)
    assert len(after_unknown) <= 1
    ids = [model["id"] for model in json.loads(listing.body)["data"]]
    assert "claude-future-9-20270101" in ids and "claude-sonnet-4-5" in ids
