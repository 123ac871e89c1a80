"""The Prometheus side of ccag.telemetry against METRICS.md.

The expected names, types and labels below are copied from METRICS.md by
hand, not derived from ccag.telemetry.instruments, so that a drift of the
code from the contract fails here.
"""

from __future__ import annotations

import random
import string
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccag.bedrock.facts import bedrock_facts
from ccag.errors import ConfigError
from ccag.telemetry import (
    AUTH_FAILURE_REASONS,
    ERROR_TYPES,
    MAX_RUNTIME_ENDPOINTS,
    Telemetry,
    series_cap,
)
from ccag.telemetry.otlp import OtlpSettings
from tests.prometheus_fixture import require_binary

MODELS = ["claude-sonnet-4-5", "claude-opus-4-1"]
ENDPOINTS = ["us-east-1", "us-west-2"]

# Exposed family name -> (TYPE, label names), from METRICS.md.
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "ccag_requests_total": ("counter", frozenset({"model", "streaming", "status"})),
    "ccag_request_duration_ms": ("histogram", frozenset({"model", "streaming", "status"})),
    "ccag_request_ttft_ms": ("histogram", frozenset({"model", "streaming"})),
    "ccag_requests_in_flight": ("gauge", frozenset()),
    "ccag_tokens_input_total": ("counter", frozenset({"model"})),
    "ccag_tokens_output_total": ("counter", frozenset({"model"})),
    "ccag_tokens_cache_read_total": ("counter", frozenset({"model"})),
    "ccag_tokens_cache_write_total": ("counter", frozenset({"model"})),
    "ccag_tool_calls_total": ("counter", frozenset({"tool", "type"})),
    "ccag_web_searches_total": ("counter", frozenset()),
    "ccag_errors_total": ("counter", frozenset({"error_type", "endpoint_id"})),
    "ccag_bedrock_throttles_total": ("counter", frozenset({"model", "endpoint_id"})),
    "ccag_rate_limits_total": ("counter", frozenset()),
    "ccag_auth_failures_total": ("counter", frozenset({"reason"})),
    "ccag_spend_flush_errors_total": ("counter", frozenset()),
    "ccag_spend_records_quarantined_total": ("counter", frozenset()),
}
LABEL_LESS = [name for name, (_, labels) in CONTRACT.items() if not labels]
BUCKETS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000]


def exposition(telemetry: Telemetry) -> str:
    body, content_type = telemetry.render_prometheus()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample line: (sample name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def record_one_of_everything(telemetry: Telemetry) -> None:
    telemetry.request_started()
    telemetry.request_finished("claude-sonnet-4-5", True, 200, 1234.5, 320.0)
    telemetry.usage("claude-sonnet-4-5", 100, 20, 3000, 40)
    telemetry.tool_calls(["Bash", "mcp__github__search"])
    telemetry.web_search()
    telemetry.upstream_error("throttled", "us-east-1")
    telemetry.throttle("claude-sonnet-4-5", "us-east-1")
    telemetry.rate_limited()
    telemetry.auth_failure("missing_key")
    telemetry.spend_flush_error()
    telemetry.spend_quarantined(2)


def test_telemetry_help_and_type_of_every_instrument_from_the_start() -> None:
    text = exposition(Telemetry({}, MODELS, ENDPOINTS))

    help_lines = [line for line in text.splitlines() if line.startswith("# HELP ")]
    type_lines = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert sorted(line.split()[2] for line in help_lines) == sorted(CONTRACT)
    assert {line.split()[2]: line.split()[3] for line in type_lines} == {
        name: kind for name, (kind, _) in CONTRACT.items()
    }
    assert all(len(line.split(" ", 3)[3]) > 10 for line in help_lines)


def test_telemetry_label_less_instruments_show_zero_from_the_start() -> None:
    found = samples(exposition(Telemetry({}, MODELS, ENDPOINTS)))

    assert found == {(name, frozenset()): 0.0 for name in LABEL_LESS}


def test_telemetry_sample_names_and_label_sets_match_the_contract() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS)
    record_one_of_everything(telemetry)
    text = exposition(telemetry)

    seen: dict[str, set[frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            seen.setdefault(sample.name, set()).add(frozenset(sample.labels))
    expected: dict[str, set[frozenset[str]]] = {}
    for name, (kind, labels) in CONTRACT.items():
        if kind == "histogram":
            expected[name + "_bucket"] = {labels | {"le"}}
            expected[name + "_sum"] = {labels}
            expected[name + "_count"] = {labels}
        else:
            expected[name] = {labels}
    assert seen == expected
    assert "_total_total" not in text


def test_telemetry_records_exact_values() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS)
    record_one_of_everything(telemetry)
    record_one_of_everything(telemetry)
    telemetry.request_started()
    found = samples(exposition(telemetry))

    sonnet = ("model", "claude-sonnet-4-5")
    request = frozenset({sonnet, ("streaming", "true"), ("status", "200")})
    assert found[("ccag_requests_total", request)] == 2
    assert found[("ccag_requests_in_flight", frozenset())] == 1
    assert found[("ccag_request_duration_ms_sum", request)] == 2469.0
    assert found[("ccag_request_duration_ms_count", request)] == 2
    assert found[("ccag_request_ttft_ms_count", frozenset({sonnet, ("streaming", "true")}))] == 2
    assert found[("ccag_tokens_input_total", frozenset({sonnet}))] == 200
    assert found[("ccag_tokens_output_total", frozenset({sonnet}))] == 40
    assert found[("ccag_tokens_cache_read_total", frozenset({sonnet}))] == 6000
    assert found[("ccag_tokens_cache_write_total", frozenset({sonnet}))] == 80
    assert found[("ccag_tool_calls_total", frozenset({("tool", "Bash"), ("type", "builtin")}))] == 2
    assert found[("ccag_tool_calls_total", frozenset({("tool", "mcp__github__search"), ("type", "mcp")}))] == 2
    assert found[("ccag_web_searches_total", frozenset())] == 2
    assert found[("ccag_errors_total", frozenset({("error_type", "throttled"), ("endpoint_id", "us-east-1")}))] == 2
    assert found[("ccag_bedrock_throttles_total", frozenset({sonnet, ("endpoint_id", "us-east-1")}))] == 2
    assert found[("ccag_rate_limits_total", frozenset())] == 2
    assert found[("ccag_auth_failures_total", frozenset({("reason", "missing_key")}))] == 2
    assert found[("ccag_spend_flush_errors_total", frozenset())] == 2
    assert found[("ccag_spend_records_quarantined_total", frozenset())] == 4


def test_telemetry_ttft_only_when_content_was_sent() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS)
    telemetry.request_started()
    telemetry.request_finished("claude-opus-4-1", False, 400, 3.0, None)
    found = samples(exposition(telemetry))

    assert not [key for key in found if key[0].startswith("ccag_request_ttft_ms")]
    labels = frozenset({("model", "claude-opus-4-1"), ("streaming", "false"), ("status", "400")})
    assert found[("ccag_request_duration_ms_count", labels)] == 1


def test_telemetry_histogram_buckets_are_the_documented_bounds() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS)
    # One value on each bound (inclusive: it belongs to that bucket), one
    # just above it, and one beyond the last bound.
    values = [float(b) for b in BUCKETS] + [b + 0.5 for b in BUCKETS] + [10**7]
    for value in values:
        telemetry.request_started()
        telemetry.request_finished("claude-opus-4-1", True, 200, value, value)
    found = samples(exposition(telemetry))

    for family in ("ccag_request_duration_ms", "ccag_request_ttft_ms"):
        buckets = {
            dict(labels)["le"]: value
            for (name, labels), value in found.items()
            if name == family + "_bucket"
        }
        assert list(buckets) == [f"{float(b)}" for b in BUCKETS] + ["+Inf"]
        for bound in BUCKETS:
            expected = sum(1 for value in values if value <= bound)
            assert buckets[f"{float(bound)}"] == expected, (family, bound)
        assert buckets["+Inf"] == len(values)


def test_telemetry_unknown_values_become_other() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS, max_tool_names=2)
    telemetry.request_started()
    telemetry.request_finished("gpt-4", True, 1000, 1.0, None)
    telemetry.usage("claude-sonnet-4-5-made-up", 1, 1, 1, 1)
    telemetry.tool_calls(["Read", "Write", "Edit", "mcp__x__y", "R" * 300])
    telemetry.upstream_error("DROP TABLE", "10.0.0.1")
    telemetry.throttle("gpt-4", "eu-west-1")
    telemetry.auth_failure("sk-ant-api03-secret")
    found = samples(exposition(telemetry))

    other = ("model", "other")
    assert found[("ccag_requests_total", frozenset({other, ("streaming", "true"), ("status", "other")}))] == 1
    assert found[("ccag_tokens_input_total", frozenset({other}))] == 1
    assert found[("ccag_tool_calls_total", frozenset({("tool", "Read"), ("type", "builtin")}))] == 1
    assert found[("ccag_tool_calls_total", frozenset({("tool", "Write"), ("type", "builtin")}))] == 1
    assert found[("ccag_tool_calls_total", frozenset({("tool", "other"), ("type", "builtin")}))] == 2
    assert found[("ccag_tool_calls_total", frozenset({("tool", "other"), ("type", "mcp")}))] == 1
    assert found[("ccag_errors_total", frozenset({("error_type", "other"), ("endpoint_id", "other")}))] == 1
    assert found[("ccag_bedrock_throttles_total", frozenset({other, ("endpoint_id", "other")}))] == 1
    assert found[("ccag_auth_failures_total", frozenset({("reason", "other")}))] == 1


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 40)))


def test_telemetry_random_labels_stay_within_the_series_cap() -> None:
    rng = random.Random(20240607)
    max_tools = 20
    telemetry = Telemetry({}, MODELS, ENDPOINTS, max_tool_names=max_tools)
    error_types = sorted(ERROR_TYPES)
    reasons = sorted(AUTH_FAILURE_REASONS)
    for _ in range(1000):
        model = rng.choice(MODELS + [_random_text(rng)])
        endpoint = rng.choice(ENDPOINTS + [_random_text(rng)])
        status = rng.choice([200, 400, 429, 529, rng.randint(-5, 2000)])
        telemetry.request_started()
        telemetry.request_finished(model, rng.random() < 0.5, status, rng.uniform(0, 10**6), rng.uniform(0, 10**5))
        telemetry.usage(model, 1, 2, 3, 4)
        telemetry.tool_calls([_random_text(rng), "mcp__" + _random_text(rng)])
        telemetry.upstream_error(rng.choice(error_types + [_random_text(rng)]), endpoint)
        telemetry.throttle(model, endpoint)
        telemetry.auth_failure(rng.choice(reasons + [_random_text(rng)]))
    found = samples(exposition(telemetry))

    # Histogram series counted once (by _count), as series_cap counts them.
    series = [key for key in found if not key[0].endswith(("_bucket", "_sum"))]
    cap = series_cap(len(MODELS), len(ENDPOINTS), max_tools)
    statuses = 501  # 100..599 as digits, and "other"
    models = len(MODELS) + 1
    endpoints = len(ENDPOINTS) + MAX_RUNTIME_ENDPOINTS + 1  # room for endpoints added later
    assert cap == (
        2 * models * 2 * statuses  # requests, duration
        + models * 2  # ttft
        + 4 * models  # tokens
        + max_tools + 2  # tools, plus other/builtin and other/mcp
        + (len(ERROR_TYPES) + 1) * endpoints
        + models * endpoints
        + len(AUTH_FAILURE_REASONS) + 1
        + 5  # label-less: in flight, web searches, rate limits, flush errors, quarantined
    )
    assert len(series) <= cap
    tools = {dict(labels)["tool"] for name, labels in found if name == "ccag_tool_calls_total"}
    assert len(tools) == max_tools + 1
    allowed_models = set(MODELS) | {"other"}
    for _, labels in found:
        values = dict(labels)
        assert values.get("model", "other") in allowed_models
        assert values.get("endpoint_id", "other") in set(ENDPOINTS) | {"other"}
        assert values.get("error_type", "other") in ERROR_TYPES | {"other"}
        assert values.get("reason", "other") in AUTH_FAILURE_REASONS | {"other"}
        status = values.get("status", "other")
        assert status == "other" or 100 <= int(status) <= 599


def test_telemetry_error_types_cover_the_bedrock_facts() -> None:
    metrics = {fact["metric"] for name, fact in bedrock_facts()["errors"].items() if not name.startswith("_")}
    assert metrics <= ERROR_TYPES


def test_telemetry_auth_reasons_are_the_auth_modules() -> None:
    from ccag.auth.errors import AUTH_FAILURE_REASONS as AUTH_MODULE_REASONS

    assert set(AUTH_MODULE_REASONS) == AUTH_FAILURE_REASONS


def _promtool(text: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
        check=False,
    )


# METRICS.md fixes these names; promtool's naming lint prefers spelled-out
# units ("_milliseconds"). That lint, and only it, is accepted.
ACCEPTED_LINT = {
    "ccag_request_duration_ms metric names should not contain abbreviated units",
    "ccag_request_ttft_ms metric names should not contain abbreviated units",
}


def test_telemetry_exposition_passes_promtool() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS)
    empty = _promtool(exposition(telemetry))
    record_one_of_everything(telemetry)
    full = _promtool(exposition(telemetry))

    for result in (empty, full):
        problems = {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()}
        assert problems <= ACCEPTED_LINT, problems
        # 0: clean; 3: lint findings only (parse errors exit 1).
        assert result.returncode in (0, 3), result


def test_telemetry_promtool_catches_a_broken_exposition() -> None:
    telemetry = Telemetry({}, MODELS, ENDPOINTS)
    broken = exposition(telemetry).replace("ccag_rate_limits_total 0.0", "ccag_rate_limits_total zero")

    result = _promtool(broken)

    assert result.returncode == 1


def test_otlp_settings_from_environment() -> None:
    assert OtlpSettings.from_environ({}) is None
    settings = OtlpSettings.from_environ({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_METRIC_EXPORT_INTERVAL": "1500",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=ml%20ops,authorization=Bearer abc",
        "OTEL_SERVICE_NAME": "gateway-a",
    })
    assert settings is not None
    assert settings.insecure
    assert settings.interval_s == 1.5
    assert settings.export_timeout_s == 1.5
    assert dict(settings.headers) == {"x-team": "ml ops", "authorization": "Bearer abc"}
    assert settings.service_name == "gateway-a"

    defaults = OtlpSettings.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317"})
    assert defaults is not None
    assert (defaults.interval_s, defaults.service_name, defaults.insecure) == (60.0, "ccag", False)
    assert defaults.export_timeout_s == 10.0


@pytest.mark.parametrize("interval", ["0", "-5", "soon"])
def test_otlp_settings_refuse_a_bad_interval(interval: str) -> None:
    with pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        OtlpSettings.from_environ({
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_METRIC_EXPORT_INTERVAL": interval,
        })
