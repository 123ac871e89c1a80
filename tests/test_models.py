"""Model name resolution."""

from __future__ import annotations

import pytest

from ccag.anthropic.models import ModelCatalog
from ccag.bedrock.facts import default_geo_prefix, shipped_models
from ccag.errors import ApiError

CATALOG = ModelCatalog(shipped_models())


@pytest.mark.parametrize(
    ("name", "prefix", "bedrock_id", "canonical"),
    [
        ("claude-sonnet-4-5", "us", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "global", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("Claude-Haiku-4-5", "jp", "jp.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("claude-opus-4-8", "eu", "eu.anthropic.claude-opus-4-8", "claude-opus-4-8"),
        ("claude-3-5-haiku-latest", "", "anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku-20241022"),
    ],
)
def test_resolve_anthropic_names(name: str, prefix: str, bedrock_id: str, canonical: str) -> None:
    resolved = CATALOG.resolve(name, prefix)
    assert resolved.requested == name
    assert resolved.bedrock_id == bedrock_id
    assert resolved.canonical == canonical
    assert resolved.base_model_id == bedrock_id.split(".", 1)[1] if prefix else bedrock_id
    assert resolved.one_million is False


def test_resolve_one_million_suffix() -> None:
    resolved = CATALOG.resolve("claude-sonnet-4-5[1m]", "us")
    assert resolved.one_million is True
    assert resolved.canonical == "claude-sonnet-4-5"
    assert resolved.requested == "claude-sonnet-4-5[1m]"


def test_resolve_bedrock_ids_and_arns_pass_through() -> None:
    profile = CATALOG.resolve("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "us")
    assert profile.bedrock_id == "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert profile.base_model_id == "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert profile.canonical == "claude-sonnet-4-5"

    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    resolved = CATALOG.resolve(arn, "us")
    assert resolved.bedrock_id == arn
    assert resolved.canonical == "other"

    unknown = CATALOG.resolve("anthropic.claude-future-9-v1:0", "us")
    assert unknown.bedrock_id == "anthropic.claude-future-9-v1:0"
    assert unknown.canonical == "other"


def test_resolve_unknown_name_is_404_naming_the_model() -> None:
    with pytest.raises(ApiError) as raised:
        CATALOG.resolve("gpt-9", "us")
    assert raised.value.status == 404
    assert raised.value.error_type == "not_found_error"
    assert raised.value.message == "model: gpt-9"


def test_resolve_unsupported_prefix_names_the_ones_offered() -> None:
    with pytest.raises(ApiError) as raised:
        CATALOG.resolve("claude-opus-4-1", "eu")
    assert raised.value.status == 400
    assert "prefixes offered: us" in raised.value.message
    with pytest.raises(ApiError):
        CATALOG.resolve("claude-sonnet-4-5", "")


def test_catalog_extra_table_adds_and_replaces_models() -> None:
    extra = {
        "claude-test-1": {
            "display_name": "Test", "created_at": "2026-12-01T00:00:00Z",
            "aliases": ["test-alias"], "bedrock_id": "anthropic.claude-test-1",
            "geo_prefixes": ["us"], "context_window": 1000, "one_million": False,
            "max_output": 10, "betas": [], "fields": {}, "thinking": [],
            "cache_ttl_1h": False, "system_role_message": True, "count_tokens": False,
            "pricing": {"input": 1, "output": 2, "cache_read": 0, "cache_write_5m": 1, "cache_write_1h": 2},
        }
    }
    catalog = ModelCatalog(shipped_models(), extra)
    resolved = catalog.resolve("test-alias", "us")
    assert resolved.bedrock_id == "us.anthropic.claude-test-1"
    assert "claude-test-1" in catalog.canonical_names()
    assert catalog.list_models()[0]["id"] == "claude-test-1"


def test_list_models_has_anthropic_format_newest_first() -> None:
    models = CATALOG.list_models()
    assert {tuple(sorted(entry)) for entry in models} == {("created_at", "display_name", "id", "type")}
    assert all(entry["type"] == "model" for entry in models)
    dates = [entry["created_at"] for entry in models]
    assert dates == sorted(dates, reverse=True)
    assert {"claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5"} <= {m["id"] for m in models}


def test_canonical_names_are_bounded_and_include_other() -> None:
    names = CATALOG.canonical_names()
    assert "other" in names
    assert len(names) == len(shipped_models()) + 1


@pytest.mark.parametrize(
    ("region", "prefix"),
    [("us-east-1", "us"), ("eu-west-1", "eu"), ("ap-northeast-1", "jp"),
     ("ap-southeast-2", "au"), ("us-gov-west-1", "us-gov"), ("me-central-1", "global")],
)
def test_default_geo_prefix_by_region(region: str, prefix: str) -> None:
    assert default_geo_prefix(region) == prefix


def test_every_shipped_model_has_consistent_facts() -> None:
    for name, facts in shipped_models().items():
        assert facts.bedrock_id and facts.bedrock_id.startswith("anthropic.")
        assert facts.geo_prefixes or facts.in_region, name
        for path, beta in facts.fields.items():
            assert beta is None or beta in facts.betas, (name, path)
        assert facts.pricing.output >= facts.pricing.input > 0
