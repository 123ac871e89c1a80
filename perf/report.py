"""Printing benchmark results: the side-by-side table and run-to-run changes."""

from __future__ import annotations

from typing import Any

# The targets of the 1 KB streamed case (see the perf issue).
TARGET_RPS_ONE_CORE = 1000.0
TARGET_ADDED_TTFB_P50_MS = 1.0
TARGET_ADDED_TTFB_P99_MS = 5.0
TARGET_IDLE_RSS_MB = 80.0
TARGET_KB_PER_STREAM = 64.0


def _median(stats: dict[str, float] | None) -> float | None:
    return None if not stats else stats["median"]


def _spread(stats: dict[str, float] | None) -> str:
    """The run-to-run spread as ±half the range, in % of the median."""
    if not stats or not stats["median"]:
        return ""
    half_range = (stats["max"] - stats["min"]) / 2.0
    return f"±{100.0 * half_range / stats['median']:.0f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def progress_line(name: str, summary: dict[str, Any]) -> str:
    parts = [f"{name:<16}"]
    for target, found in summary.items():
        parts.append(
            f"{target} {_num(_median(found['rps']), 0)} req/s {_spread(found['rps'])}"
            f" ttfb p50 {_num(_median(found['ttfb_p50_ms']), 2)} ms"
        )
        if "ccag" in found:
            parts.append(f"cpu {_num(_median(found['ccag']['cpu_ms_per_request']), 3)} ms/req")
            parts.append(
                f"waited for a CPU {_num(_median(found['ccag'].get('runqueue_wait_ms_per_request')), 3)} ms/req"
            )
        if found["errors"]:
            parts.append(f"ERRORS {found['errors']}")
    return "  ".join(parts)


def memory_line(memory: dict[str, Any]) -> str:
    streams = memory["streams"]
    return (
        f"idle RSS {memory['idle_after_start_kb'].get('VmRSS', 0) / 1024:.1f} MB at start, "
        f"{memory['idle_after_load_kb'].get('VmRSS', 0) / 1024:.1f} MB after load; "
        f"{streams['ready']}/{streams['held']} streams held: "
        f"{streams['rss_before_kb'] / 1024:.1f} -> {streams['rss_during_kb'] / 1024:.1f} MB, "
        f"{streams['kb_per_stream']:.1f} KB per stream"
    )


def metrics_line(cost: dict[str, Any]) -> str:
    return (
        f"metrics ({cost['config']}): OTLP on (closed port) / off: "
        f"throughput x{_num(cost['rps_ratio_on_over_off'], 3)}, "
        f"ccag CPU per request x{_num(cost['cpu_ratio_on_over_off'], 3)}"
    )


def render(results: dict[str, Any]) -> str:
    """The whole report: one row per configuration, direct and ccag side by side."""
    header = (
        f"{'config':<16} {'req/s direct':>14} {'req/s ccag':>14} {'ccag cpu':>9} "
        f"{'1-core':>7} {'ttfb p50 d/c':>15} {'ttfb p99 d/c':>15} "
        f"{'total p50 d/c':>15} {'total p99 d/c':>15} {'ccag HWM':>9}"
    )
    units = (
        f"{'':<16} {'':>14} {'':>14} {'ms/req':>9} {'req/s':>7} {'ms':>15} {'ms':>15} "
        f"{'ms':>15} {'ms':>15} {'MB':>9}"
    )
    lines = [
        f"pinning: {results.get('pinning')}  (cpus: {results.get('cpus')})",
        header,
        units,
    ]
    for name, entry in results["configs"].items():
        summary = entry["summary"]
        direct = summary.get("direct")
        ccag = summary["ccag"]
        cpu = _median(ccag["ccag"]["cpu_ms_per_request"])

        def pair(key: str) -> str:
            left = _num(_median(direct[key]), 2) if direct else "-"
            return f"{left}/{_num(_median(ccag[key]), 2)}"

        direct_rps = f"{_num(_median(direct['rps']), 0)} {_spread(direct['rps'])}" if direct else "-"
        lines.append(
            f"{name:<16} {direct_rps:>14} "
            f"{_num(_median(ccag['rps']), 0) + ' ' + _spread(ccag['rps']):>14} "
            f"{_num(cpu, 3):>9} {_num(1000.0 / cpu if cpu else None, 0):>7} "
            f"{pair('ttfb_p50_ms'):>15} {pair('ttfb_p99_ms'):>15} "
            f"{pair('total_p50_ms'):>15} {pair('total_p99_ms'):>15} "
            f"{ccag['ccag']['hwm_kb'] / 1024:>9.1f}"
        )
        errors = ccag["errors"] + (direct["errors"] if direct else 0)
        if errors:
            lines.append(f"{'':<16} ERRORS: {errors}")
    lines.append(
        "1-core req/s = 1000 / ccag CPU ms per request: what ccag alone could serve on one "
        "core; the measured req/s is bounded by the simulator."
    )
    if results["memory"].get("streams"):
        lines.append(memory_line(results["memory"]))
    if results.get("metrics_cost"):
        lines.append(metrics_line(results["metrics_cost"]))
    lines.append("")
    lines.extend(targets(results))
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[str]:
    """Where the 1 KB streamed case stands against the targets."""
    lines = ["targets (1 KB streamed):"]
    configs = results["configs"]
    best_cpu = [
        _median(entry["summary"]["ccag"]["ccag"]["cpu_ms_per_request"])
        for entry in configs.values()
        if entry["mode"] == "stream" and entry["size"] == "1k"
    ]
    best_cpu = [value for value in best_cpu if value]
    if best_cpu:
        capacity = 1000.0 / min(best_cpu)
        lines.append(
            f"  >= {TARGET_RPS_ONE_CORE:.0f} req/s on one core: {capacity:.0f} "
            f"({'met' if capacity >= TARGET_RPS_ONE_CORE else 'NOT met'})"
        )
    entry = configs.get("stream/1k/c16")
    if entry and "direct" in entry["summary"]:
        for key, limit in (("ttfb_p50_ms", TARGET_ADDED_TTFB_P50_MS), ("ttfb_p99_ms", TARGET_ADDED_TTFB_P99_MS)):
            added = _median(entry["summary"]["ccag"][key]) - _median(entry["summary"]["direct"][key])
            lines.append(
                f"  added {key[:-3].replace('_', ' ')} at 16 clients < {limit:g} ms: {added:.2f} ms "
                f"({'met' if added < limit else 'NOT met'})"
            )
    memory = results["memory"]
    if memory.get("idle_after_start_kb"):
        idle = memory["idle_after_start_kb"]["VmRSS"] / 1024
        lines.append(
            f"  idle RSS < {TARGET_IDLE_RSS_MB:g} MB: {idle:.1f} MB "
            f"({'met' if idle < TARGET_IDLE_RSS_MB else 'NOT met'})"
        )
    if memory.get("streams"):
        per_stream = memory["streams"]["kb_per_stream"]
        lines.append(
            f"  < {TARGET_KB_PER_STREAM:g} KB per open stream: {per_stream:.1f} KB "
            f"({'met' if per_stream < TARGET_KB_PER_STREAM else 'NOT met'})"
        )
    return lines


def _compare_value(label: str, old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return f"    {label:<26} {_num(old, 3):>10} -> {_num(new, 3):>10}"
    change = f"{100.0 * (new - old) / old:+.1f}%" if old else ""
    return f"    {label:<26} {old:>10.3f} -> {new:>10.3f}  {change}"


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Per configuration, the medians that moved between two result files."""
    lines = [f"changes since {old.get('started')}:"]
    for name, entry in new["configs"].items():
        previous = old.get("configs", {}).get(name)
        if previous is None:
            continue
        lines.append(f"  {name}")
        before, after = previous["summary"]["ccag"], entry["summary"]["ccag"]
        for label, key in (
            ("ccag req/s", "rps"),
            ("ccag ttfb p50 ms", "ttfb_p50_ms"),
            ("ccag ttfb p99 ms", "ttfb_p99_ms"),
            ("ccag total p50 ms", "total_p50_ms"),
            ("ccag total p99 ms", "total_p99_ms"),
        ):
            lines.append(_compare_value(label, _median(before[key]), _median(after[key])))
        lines.append(
            _compare_value(
                "ccag cpu ms/request",
                _median(before["ccag"]["cpu_ms_per_request"]),
                _median(after["ccag"]["cpu_ms_per_request"]),
            )
        )
        lines.append(
            _compare_value("ccag HWM MB", before["ccag"]["hwm_kb"] / 1024, after["ccag"]["hwm_kb"] / 1024)
        )
    old_memory, new_memory = old.get("memory", {}), new.get("memory", {})
    if old_memory.get("streams") and new_memory.get("streams"):
        lines.append("  memory")
        lines.append(
            _compare_value(
                "idle RSS MB",
                old_memory["idle_after_start_kb"]["VmRSS"] / 1024,
                new_memory["idle_after_start_kb"]["VmRSS"] / 1024,
            )
        )
        lines.append(
            _compare_value(
                "KB per open stream",
                old_memory["streams"]["kb_per_stream"],
                new_memory["streams"]["kb_per_stream"],
            )
        )
    if old.get("metrics_cost") and new.get("metrics_cost"):
        lines.append(
            _compare_value(
                "metrics rps ratio",
                old["metrics_cost"]["rps_ratio_on_over_off"],
                new["metrics_cost"]["rps_ratio_on_over_off"],
            )
        )
    return "\n".join(lines)
