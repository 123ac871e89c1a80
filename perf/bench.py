"""The benchmark: ccag against a direct connection to the simulator.

One command starts the Bedrock simulator and ccag as processes of their own
(ccag signs with SigV4 to the simulator as it would to Bedrock), then runs a
load generator process (perf/loadgen.py: raw keep-alive HTTP/1.1 sockets)
against each in turn, with the same upstream payload: the direct client sends
the Bedrock body ccag's translation makes, SigV4-signed.

Measured per configuration (streamed 50-delta reply or not, 1 KB or 76 KB
request, 1/16/64 clients), each run several times (median and spread):
requests per second, CPU milliseconds of the ccag process per request
(/proc/<pid>/stat), time to first byte and total time (p50, p99), peak RSS
(VmHWM); then idle RSS, memory per open stream (1,000 streams the simulator
stalls mid-reply) and the cost of metrics (OTLP on, to a closed port, vs off).

CPUs: with two or more cores, ccag is pinned to one core and the simulator
and the load generator share another (``taskset``), so the upstream has the
same CPU with and without ccag in between.

Usage::

    python perf/bench.py [--quick] [--output FILE] [--compare OLD.json]
    python perf/bench.py --smoke        # the smallest run (the smoke test)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import processes  # noqa: E402
import report  # noqa: E402
import workload  # noqa: E402

RESULTS_DIR = os.path.join(HERE, "results")
LOADGEN = os.path.join(HERE, "loadgen.py")

MODES = ("stream", "json")
SIZES = ("1k", "76k")
CONCURRENCY = (1, 16, 64)

# Streams held open at once for the memory-per-stream figure.
HELD_STREAMS = 1000

# How long the simulator stalls each held stream: far longer than a hold run.
STALL_SECONDS = 120.0

# The configuration the metrics cost is measured on.
METRICS_CONFIG = ("stream", "1k", 16)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows (1 s), 3 runs")
    parser.add_argument("--smoke", action="store_true", help="20 requests, 1 client, one configuration")
    parser.add_argument("--runs", type=int, default=None, help="runs per configuration (default 5, quick 3)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring")
    parser.add_argument("--modes", default=",".join(MODES), help="stream,json")
    parser.add_argument("--sizes", default=",".join(SIZES), help="1k,76k")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--streams", type=int, default=None, help=f"held streams (default {HELD_STREAMS})")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct-to-simulator runs")
    parser.add_argument(
        "--metrics", choices=("compare", "off", "on"), default="compare",
        help="compare: also measure ccag with OTLP on (to a closed port); on: run the "
        "whole matrix with OTLP on; off: do neither",
    )
    parser.add_argument(
        "--pin", default="auto",
        help="CPU pinning: auto (ccag on CPU 0, simulator and load on CPU 1 when there "
        "are 2+ CPUs), none, or ccag=0,sim=1,load=1",
    )
    parser.add_argument("--output", help="the JSON results file (default perf/results/bench-<time>.json)")
    parser.add_argument("--compare", metavar="OLD_JSON", help="print differences against an earlier run")
    parser.add_argument(
        "--profile", metavar="FILE",
        help="record ccag with py-spy during the matrix runs (collapsed stacks to FILE)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="print where the logs are and keep them")
    return parser.parse_args(argv)


def pinning(spec: str) -> dict[str, str | None]:
    if spec == "none":
        return {"ccag": None, "sim": None, "load": None}
    if spec == "auto":
        if (os.cpu_count() or 1) < 2:
            return {"ccag": None, "sim": None, "load": None}
        return {"ccag": "0", "sim": "1", "load": "1"}
    chosen: dict[str, str | None] = {"ccag": None, "sim": None, "load": None}
    for part in spec.split(","):
        name, _, cpus = part.partition("=")
        chosen[name.strip()] = cpus.strip() or None
    return chosen


class Bench:
    """The running processes and the loadgen runs against them."""

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.pins = pinning(args.pin)
        self.counter = itertools.count()
        self.simulator: processes.SimulatorProcess | None = None
        self.gateways: dict[str, processes.GatewayProcess] = {}
        self.key = ""
        self.idle_at_start: dict[str, int] = {}

    # Processes

    def start(self, with_otlp_gateway: bool, otlp_everywhere: bool) -> None:
        self.simulator = processes.start_simulator(self.pins["sim"])
        store = os.path.join(self.workdir, "store.sqlite3")
        self.key = processes.create_key(store)
        otlp = self.otlp_environ()
        self.gateways["ccag"] = processes.start_gateway(
            self.simulator, store, os.path.join(self.workdir, "ccag.log"), self.pins["ccag"],
            otlp if otlp_everywhere else None,
        )
        if with_otlp_gateway:
            self.gateways["ccag-otlp"] = processes.start_gateway(
                self.simulator, store, os.path.join(self.workdir, "ccag-otlp.log"),
                self.pins["ccag"], otlp,
            )

    def otlp_environ(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{processes.closed_port()}",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }

    def stop(self) -> None:
        for gateway in self.gateways.values():
            processes.stop(gateway.process, gateway.log)
        if self.simulator is not None:
            processes.stop(self.simulator.process)

    # Requests

    def request_bytes(self, target: str, mode: str, size: str) -> bytes:
        assert self.simulator is not None
        stream = mode == "stream"
        if target == "direct":
            sim = self.simulator
            return workload.direct_request(
                sim.host, sim.port, size, stream,
                access_key=sim.access_key, secret_key=sim.secret_key, region=sim.region,
            )
        return workload.gateway_request("127.0.0.1", self.gateways[target].port, self.key, size, stream)

    def target_port(self, target: str) -> int:
        assert self.simulator is not None
        return self.simulator.port if target == "direct" else self.gateways[target].port

    def watched(self, target: str) -> dict[str, int]:
        assert self.simulator is not None
        pids = {"sim": processes.pid_of(self.simulator.process)}
        if target != "direct":
            pids["ccag"] = processes.pid_of(self.gateways[target].process)
        return pids

    def loadgen(self, target: str, mode: str, size: str, spec: dict[str, Any]) -> dict[str, Any]:
        """One load generator process against ``target``; its JSON result."""
        assert self.simulator is not None
        # The simulator records every request; forget them so its memory stays flat.
        self.simulator.control("/_sim/reset", {})
        number = next(self.counter)
        request_file = os.path.join(self.workdir, f"request-{number}.http")
        with open(request_file, "wb") as file:
            file.write(self.request_bytes(target, mode, size))
        spec = {
            "host": "127.0.0.1",
            "port": self.target_port(target),
            "request_file": request_file,
            "watch_pids": self.watched(target),
            **spec,
        }
        spec_file = os.path.join(self.workdir, f"spec-{number}.json")
        with open(spec_file, "w", encoding="utf-8") as file:
            json.dump(spec, file)
        command = processes.pinned([processes.PYTHON, LOADGEN, spec_file], self.pins["load"])
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"the load generator failed:\n{result.stderr[-2000:]}")
        os.unlink(request_file)
        return json.loads(result.stdout)

    def rate_spec(self, concurrency: int) -> dict[str, Any]:
        args = self.args
        if args.smoke:
            return {"mode": "rate", "concurrency": 1, "warmup": 0.0, "requests": 20}
        duration = args.duration or (1.0 if args.quick else 3.0)
        warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
        return {"mode": "rate", "concurrency": concurrency, "warmup": warmup, "duration": duration}

    def memory_snapshot(self, target: str) -> dict[str, int]:
        pid = processes.pid_of(self.gateways[target].process)
        return _memory_kb(pid)


def _memory_kb(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as file:
        for line in file:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread (min, max) of each number over the runs."""

    def stats(values: list[float | None]) -> dict[str, float] | None:
        present = [value for value in values if value is not None]
        if not present:
            return None
        return {
            "median": round(statistics.median(present), 4),
            "min": round(min(present), 4),
            "max": round(max(present), 4),
        }

    summary: dict[str, Any] = {
        "rps": stats([run["rps"] for run in runs]),
        "ttfb_p50_ms": stats([run["ttfb_ms"]["p50"] for run in runs]),
        "ttfb_p99_ms": stats([run["ttfb_ms"]["p99"] for run in runs]),
        "total_p50_ms": stats([run["total_ms"]["p50"] for run in runs]),
        "total_p99_ms": stats([run["total_ms"]["p99"] for run in runs]),
        "loadgen_cpu_share": stats(
            [run["loadgen_cpu_s"] / run["window_s"] for run in runs if run["window_s"]]
        ),
        "errors": sum(run["errors"] for run in runs),
        "completed": sum(run["completed"] for run in runs),
    }
    for name in ("ccag", "sim"):
        per_process = [run["processes"].get(name) for run in runs]
        if all(per_process):
            summary[name] = {
                "cpu_ms_per_request": stats([p["cpu_ms_per_request"] for p in per_process]),
                "cpu_share": stats(
                    [p["cpu_s"] / run["window_s"] for p, run in zip(per_process, runs) if run["window_s"]]
                ),
                "runqueue_wait_ms_per_request": stats(
                    [p.get("runqueue_wait_ms_per_request") for p in per_process]
                ),
                "hwm_kb": max(p["hwm_kb"] for p in per_process),
                "rss_kb": per_process[-1]["rss_kb"],
            }
    return summary


def run_matrix(bench: Bench, results: dict[str, Any]) -> None:
    args = bench.args
    runs = args.runs or (1 if args.smoke else 3 if args.quick else 5)
    modes = args.modes.split(",")
    sizes = args.sizes.split(",")
    concurrencies = [1] if args.smoke else [int(value) for value in args.concurrency.split(",")]
    if args.smoke:
        modes, sizes = modes[:1], sizes[:1]
    targets = ["ccag"] if args.no_direct else ["direct", "ccag"]

    for mode, size, concurrency in itertools.product(modes, sizes, concurrencies):
        name = f"{mode}/{size}/c{concurrency}"
        collected: dict[str, list[dict[str, Any]]] = {target: [] for target in targets}
        # Runs alternate between targets so that drift hits both alike.
        for _ in range(runs):
            for target in targets:
                spec = bench.rate_spec(concurrency)
                collected[target].append(bench.loadgen(target, mode, size, spec))
        entry = {
            "mode": mode, "size": size, "concurrency": concurrency,
            "runs": collected,
            "summary": {target: summarize_runs(found) for target, found in collected.items()},
        }
        results["configs"][name] = entry
        print(report.progress_line(name, entry["summary"]), flush=True)


def run_idle_and_streams(bench: Bench, results: dict[str, Any]) -> None:
    """Idle RSS, then memory per open stream with many stalled streams."""
    assert bench.simulator is not None
    args = bench.args
    streams = args.streams or (10 if args.smoke else HELD_STREAMS)
    results["memory"]["idle_after_start_kb"] = bench.idle_at_start
    results["memory"]["idle_after_load_kb"] = bench.memory_snapshot("ccag")

    bench.simulator.control("/_sim/reset", {})
    scenario = {
        "type": "stall", "seconds": STALL_SECONDS, "after_events": 2,
        "answer": {"type": "text", "deltas": 50},
    }
    request_file_spec = {"mode": "hold", "concurrency": streams}
    bench.simulator.control(
        "/_sim/script",
        {"scenarios": [scenario] * streams, "kind": "invoke-with-response-stream"},
    )
    # Not through Bench.loadgen: its reset would drop the scripted stalls.
    held = _hold(bench, request_file_spec)
    bench.simulator.control("/_sim/reset", {})
    before = held["before"]["ccag"]["VmRSS"]
    during = held["during"]["ccag"]["VmRSS"]
    results["memory"]["streams"] = {
        "held": held["streams"],
        "ready": held["ready"],
        "errors": held["errors"],
        "error_samples": held["error_samples"],
        "rss_before_kb": before,
        "rss_during_kb": during,
        "kb_per_stream": round((during - before) / max(held["ready"], 1), 2),
    }
    print(report.memory_line(results["memory"]), flush=True)


def _hold(bench: Bench, spec: dict[str, Any]) -> dict[str, Any]:
    assert bench.simulator is not None
    number = next(bench.counter)
    request_file = os.path.join(bench.workdir, f"request-{number}.http")
    with open(request_file, "wb") as file:
        file.write(bench.request_bytes("ccag", "stream", "1k"))
    full = {
        "host": "127.0.0.1", "port": bench.target_port("ccag"), "request_file": request_file,
        "watch_pids": bench.watched("ccag"), **spec,
    }
    spec_file = os.path.join(bench.workdir, f"spec-{number}.json")
    with open(spec_file, "w", encoding="utf-8") as file:
        json.dump(full, file)
    command = processes.pinned([processes.PYTHON, LOADGEN, spec_file], bench.pins["load"])
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def run_metrics_cost(bench: Bench, results: dict[str, Any]) -> None:
    """Throughput and CPU per request with OTLP on (closed port) against off."""
    args = bench.args
    mode, size, concurrency = METRICS_CONFIG
    if args.smoke:
        concurrency = 1
    runs = args.runs or (1 if args.smoke else 3 if args.quick else 5)
    collected: dict[str, list[dict[str, Any]]] = {"ccag": [], "ccag-otlp": []}
    for _ in range(runs):
        for target in collected:
            collected[target].append(bench.loadgen(target, mode, size, bench.rate_spec(concurrency)))
    summary = {target: summarize_runs(found) for target, found in collected.items()}
    off, on = summary["ccag"], summary["ccag-otlp"]
    results["metrics_cost"] = {
        "config": f"{mode}/{size}/c{concurrency}",
        "summary": summary,
        "rps_ratio_on_over_off": _ratio(on["rps"], off["rps"]),
        "cpu_ratio_on_over_off": _ratio(
            on["ccag"]["cpu_ms_per_request"], off["ccag"]["cpu_ms_per_request"]
        ),
    }
    print(report.metrics_line(results["metrics_cost"]), flush=True)


def _ratio(numerator: dict[str, float] | None, denominator: dict[str, float] | None) -> float | None:
    if not numerator or not denominator or not denominator["median"]:
        return None
    return round(numerator["median"] / denominator["median"], 4)


def start_profiler(bench: Bench, output: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the ccag process (``pip install py-spy``)."""
    pid = processes.pid_of(bench.gateways["ccag"].process)
    command = [
        os.path.join(os.path.dirname(processes.PYTHON), "py-spy"), "record", "--pid", str(pid),
        "--format", "raw", "--rate", "250", "--nonblocking", "--output", output,
    ]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return profiler


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output = args.output or os.path.join(
        RESULTS_DIR, time.strftime("bench-%Y%m%d-%H%M%S.json")
    )
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv[1:] if argv is None else argv,
        "cpus": os.cpu_count(),
        "configs": {},
        "memory": {},
    }
    workdir = tempfile.mkdtemp(prefix="ccag-bench-")
    bench = Bench(args, workdir)
    results["pinning"] = bench.pins
    try:
        bench.start(with_otlp_gateway=args.metrics == "compare", otlp_everywhere=args.metrics == "on")
        time.sleep(0.5)
        bench.idle_at_start = bench.memory_snapshot("ccag")
        profiler = start_profiler(bench, args.profile) if args.profile else None
        run_matrix(bench, results)
        if profiler is not None:
            processes.stop_profiler(profiler)
        run_idle_and_streams(bench, results)
        if args.metrics == "compare":
            run_metrics_cost(bench, results)
    finally:
        bench.stop()
        if args.keep_logs:
            print(f"logs and requests kept in {workdir}")
        else:
            subprocess.run(["rm", "-rf", workdir], check=False)

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1)
    print()
    print(report.render(results))
    print(f"\nresults written to {output}")
    if args.compare:
        with open(args.compare, encoding="utf-8") as file:
            print()
            print(report.compare(json.load(file), results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
