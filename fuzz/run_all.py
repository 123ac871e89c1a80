"""Run every fuzz target for a while; exit non-zero on any crash, with a reproducer.

Usage::

    python fuzz/run_all.py [--seconds 60] [--engine auto|atheris|hypothesis]
                           [--only fuzz_http2 ...]
    python fuzz/run_all.py --reproduce fuzz_http2 path/to/crash-file

Each target (``fuzz/fuzz_*.py``) runs in a process of its own, so that one
crash (or an atheris abort) does not stop the others and every target gets
its full time. With atheris importable (the ``fuzz`` extra) the child runs
libFuzzer for ``--seconds``; otherwise Hypothesis generates inputs in
batches until the time is up. A failing input is written to
``--artifacts`` (default ``fuzz/artifacts``) and the command that replays it
is printed.

Targets take bytes (``check(data: bytes)``), except ``fuzz_translate``,
whose Hypothesis run draws request bodies from its own strategy and whose
atheris run reads the bytes as JSON; its crash files hold that JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent

DEFAULT_SECONDS = 60.0

# Hypothesis examples per batch: short enough that the time limit is kept to
# within a second or two, long enough that a batch's set-up cost is noise.
HYPOTHESIS_BATCH = 200

# Largest input the byte-level Hypothesis runs draw; the targets' frames and
# requests are small, and larger inputs only slow the search.
MAX_INPUT_BYTES = 4096

# How much longer than its fuzzing time a child may take (imports, start-up,
# shrinking a failure) before it counts as hung.
CHILD_GRACE_SECONDS = 120.0


def target_names(directory: Path = FUZZ_DIR) -> list[str]:
    return sorted(path.stem for path in directory.glob("fuzz_*.py"))


def load_target(name: str, directory: Path = FUZZ_DIR) -> ModuleType:
    for path in (FUZZ_DIR, directory):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"no fuzz target {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def has_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


# -- one target, in the child process ------------------------------------------


def bytes_input(name: str, module: ModuleType) -> Callable[[bytes], None]:
    """What one raw input does to the target (atheris and reproducers)."""
    if name == "fuzz_translate":

        def one_json_input(data: bytes) -> None:
            try:
                body = json.loads(data)
            except (ValueError, UnicodeDecodeError, RecursionError):
                return
            if isinstance(body, dict) and set(body) == {"body", "args"}:
                # A crash file of a Hypothesis run: the body and the other arguments.
                module.check(body["body"], *body["args"])
                return
            module.check(body, None, len(data), len(data) // 7)

        return one_json_input

    def one_input(data: bytes) -> None:
        module.check(data)

    return one_input


def save_crash(artifacts: Path, name: str, data: bytes) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"crash-{name}-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def run_atheris(name: str, module: ModuleType, seconds: float, artifacts: Path) -> None:
    import atheris  # type: ignore[import-not-found, unused-ignore]

    one_input = bytes_input(name, module)
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={max(1, int(seconds))}",
        f"-artifact_prefix={artifacts}/crash-{name}-",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def run_hypothesis(
    name: str, module: ModuleType, seconds: float, artifacts: Path
) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    failing: list[bytes] = []
    if name == "fuzz_translate":
        strategy = st.tuples(
            module.BODIES,
            st.one_of(st.none(), st.text(max_size=40)),
            st.integers(0, 3),
            st.integers(0, 1),
        )

        def check(drawn: Any) -> None:
            body, *args = drawn
            try:
                module.check(body, *args)
            except BaseException:
                failing[:] = [json.dumps({"body": body, "args": args}).encode()]
                raise

    else:
        strategy = st.binary(max_size=MAX_INPUT_BYTES)

        def check(drawn: Any) -> None:
            try:
                module.check(drawn)
            except BaseException:
                failing[:] = [bytes(drawn)]
                raise

    batch = settings(
        max_examples=HYPOTHESIS_BATCH,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(check))
    deadline = time.monotonic() + seconds
    examples = 0
    seeds = list(getattr(module, "SEEDS", []))
    try:
        for seed in seeds:
            check(seed)
        while time.monotonic() < deadline:
            batch()
            examples += HYPOTHESIS_BATCH
    except BaseException:
        if failing:
            path = save_crash(artifacts, name, failing[-1])
            print(f"{name}: failing input written to {path}", file=sys.stderr)
        raise
    print(
        f"{name}: {examples + len(seeds)} Hypothesis examples passed in {seconds:.0f}s"
    )


def reproduce(name: str, crash_file: Path, directory: Path = FUZZ_DIR) -> None:
    module = load_target(name, directory)
    bytes_input(name, module)(crash_file.read_bytes())
    print(f"{name}: {crash_file} no longer fails")


# -- the driver ----------------------------------------------------------------


def run_child(
    name: str, seconds: float, engine: str, artifacts: Path, directory: Path
) -> tuple[bool, str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--seconds",
        str(seconds),
        "--engine",
        engine,
        "--artifacts",
        str(artifacts),
        "--targets",
        str(directory),
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=seconds + CHILD_GRACE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            False,
            f"{name}: hung (no result {CHILD_GRACE_SECONDS:.0f}s past its time)",
        )
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, output


def crash_files(artifacts: Path, name: str) -> list[Path]:
    return sorted(
        artifacts.glob(f"crash-{name}-*"), key=lambda path: path.stat().st_mtime
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"fuzzing time per target (default {DEFAULT_SECONDS:.0f})",
    )
    parser.add_argument(
        "--engine", choices=("auto", "atheris", "hypothesis"), default="auto"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="TARGET", help="run only these targets"
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=FUZZ_DIR / "artifacts",
        help="where failing inputs are written",
    )
    parser.add_argument(
        "--reproduce",
        nargs=2,
        metavar=("TARGET", "FILE"),
        help="run one saved input through a target",
    )
    parser.add_argument(
        "--targets",
        type=Path,
        default=FUZZ_DIR,
        help="directory of fuzz_*.py targets (default: this one)",
    )
    parser.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.reproduce:
        reproduce(args.reproduce[0], Path(args.reproduce[1]), args.targets)
        return 0

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if has_atheris() else "hypothesis"

    if args.child:
        if engine == "atheris":
            import atheris  # type: ignore[import-not-found, unused-ignore]

            # Coverage feedback from our code only: instrumenting every
            # library too makes start-up take minutes.
            with atheris.instrument_imports(include=["ccag"]):
                module = load_target(args.child, args.targets)
            run_atheris(args.child, module, args.seconds, args.artifacts)
            return 0
        module = load_target(args.child, args.targets)
        run_hypothesis(args.child, module, args.seconds, args.artifacts)
        return 0

    names = args.only or target_names(args.targets)
    unknown = sorted(set(names) - set(target_names(args.targets)))
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    print(
        f"fuzzing {len(names)} targets for {args.seconds:.0f}s each with {engine}",
        flush=True,
    )
    failed = []
    for name in names:
        before = set(crash_files(args.artifacts, name))
        passed, output = run_child(
            name, args.seconds, engine, args.artifacts, args.targets
        )
        if passed:
            print(f"ok    {name}", flush=True)
            continue
        failed.append(name)
        print(f"CRASH {name}\n{output[-4000:]}", flush=True)
        for path in [p for p in crash_files(args.artifacts, name) if p not in before]:
            where = "" if args.targets == FUZZ_DIR else f" --targets {args.targets}"
            print(
                f"reproduce: python fuzz/run_all.py{where} --reproduce {name} {path}",
                flush=True,
            )
    if failed:
        print(f"{len(failed)} target(s) failed: {', '.join(failed)}")
        return 1
    print("every target held its invariant")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
