"""The real Claude Code CLI for end-to-end tests: install it once, run it.

:func:`install_claude_code` puts ``@anthropic-ai/claude-code`` at a pinned
version in a cache directory (``$CCAG_TEST_CACHE`` or
``~/.cache/ccag-tests``) with npm, once; later runs reuse it after checking
that the binary answers ``--version``. When npm is missing or the install
fails the calling test fails with npm's output: these tests are part of CI,
never skipped.

:func:`run_claude` runs ``claude -p PROMPT --output-format json`` against a
gateway in a scrubbed environment (only what points it at the gateway, keeps
it quiet and bounds its retries), and :func:`record_gateway_exchanges`
records the method, target and status of every request the gateway answers,
which is how a test sees the CLI's connectivity probe.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import ccag.app
from ccag.server.types import Handler, Request, Responder

CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_CODE_VERSION = "2.1.332"

# A cold npm install downloads the CLI's native binary (a few hundred MB
# unpacked); on a slow CI network that takes minutes, not hours.
NPM_INSTALL_TIMEOUT_SECONDS = 900

# ``claude --version`` starts the binary and prints one line.
VERSION_CHECK_TIMEOUT_SECONDS = 60

# How long one ``claude -p`` run may take: a session is one to three model
# calls against a local simulator, a second or two of work; the margin is for
# a loaded CI machine, and a hang still fails instead of stalling the job.
DEFAULT_RUN_TIMEOUT_SECONDS = 90

# Enough of a process's output to explain a failure in a test report.
MAX_REPORTED_OUTPUT_CHARS = 8000

# Where the CLI looks for programs (its Bash tool runs ``echo`` and friends).
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def cache_root() -> Path:
    """Where test downloads are kept between runs."""
    configured = os.environ.get("CCAG_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "ccag-tests"


def install_dir(version: str = CLAUDE_CODE_VERSION) -> Path:
    return cache_root() / f"claude-code-{version}"


def binary_in(prefix: Path) -> Path:
    return prefix / "node_modules" / ".bin" / "claude"


def _tail(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-MAX_REPORTED_OUTPUT_CHARS:]


def installed_version(binary: Path) -> str | None:
    """What ``claude --version`` prints, or None when it does not run."""
    if not binary.exists():
        return None
    try:
        completed = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            check=False,
            timeout=VERSION_CHECK_TIMEOUT_SECONDS,
            env={
                "PATH": SYSTEM_PATH,
                "HOME": tempfile.gettempdir(),
                "DISABLE_AUTOUPDATER": "1",
            },
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.decode("utf-8", "replace").strip()


def install_claude_code(version: str = CLAUDE_CODE_VERSION) -> Path:
    """The path of a working ``claude`` binary at ``version``, installing it if needed.

    The install goes to a fresh directory next to the cache entry and is
    renamed into place only when it works, so an interrupted install is never
    mistaken for a good one, and two concurrent test runs cannot break each
    other.

    Raises:
        pytest.fail.Exception: npm is missing, the install failed, or the
            installed binary does not report ``version``.
    """
    target = install_dir(version)
    reported = installed_version(binary_in(target))
    if reported is not None and version in reported:
        return binary_in(target)

    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"npm is not on PATH ({os.environ.get('PATH')!r}); it is needed to install Claude Code"
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    command = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(staging),
        f"{CLAUDE_CODE_PACKAGE}@{version}",
    ]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            check=False,
            timeout=NPM_INSTALL_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(
            f"{' '.join(command)} did not finish in {NPM_INSTALL_TIMEOUT_SECONDS} s\n"
            f"stdout:\n{_tail(exc.stdout or b'')}\nstderr:\n{_tail(exc.stderr or b'')}"
        )
    if completed.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(
            f"{' '.join(command)} failed with exit code {completed.returncode}\n"
            f"stdout:\n{_tail(completed.stdout)}\nstderr:\n{_tail(completed.stderr)}"
        )

    reported = installed_version(binary_in(staging))
    if reported is None or version not in reported:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(
            f"npm installed {CLAUDE_CODE_PACKAGE}@{version} but `claude --version` reports {reported!r}\n"
            f"npm output:\n{_tail(completed.stdout)}\n{_tail(completed.stderr)}"
        )

    # A broken earlier install is replaced; a good one from a concurrent run wins.
    if target.exists() and installed_version(binary_in(target)) is None:
        shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return binary_in(target)


@attrs.frozen
class ClaudeRun:
    """One finished ``claude -p`` run.

    Attributes:
        returncode: the process's exit status.
        stdout: what it printed (the JSON result).
        stderr: its diagnostics.
        document: ``stdout`` parsed: the ``--output-format json`` result.
    """

    returncode: int
    stdout: str
    stderr: str
    document: dict[str, Any]

    @property
    def result(self) -> str:
        return str(self.document.get("result"))

    @property
    def is_error(self) -> bool:
        return self.document.get("is_error") is True

    @property
    def num_turns(self) -> int | None:
        turns = self.document.get("num_turns")
        return turns if isinstance(turns, int) else None

    def explain(self) -> str:
        """The run's output, for an assertion message."""
        return f"exit {self.returncode}\nstdout:\n{_tail(self.stdout)}\nstderr:\n{_tail(self.stderr)}"


def claude_environment(base_url: str, api_key: str, home: Path) -> dict[str, str]:
    """The whole environment of a run: nothing inherited could point it elsewhere."""
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "HOME": str(home),
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
    }


async def run_claude(
    binary: Path,
    prompt: str,
    *,
    base_url: str,
    api_key: str,
    home: Path,
    args: Sequence[str] = (),
    timeout: float = DEFAULT_RUN_TIMEOUT_SECONDS,
) -> ClaudeRun:
    """Run ``claude -p PROMPT --output-format json ARGS`` against a gateway.

    Args:
        binary: from :func:`install_claude_code`.
        prompt: the one-shot prompt.
        base_url: the gateway's URL (``ANTHROPIC_BASE_URL``).
        api_key: the ccag key (``ANTHROPIC_API_KEY``).
        home: a scratch directory used as ``HOME`` and as the working directory.
        args: more command-line arguments (``--allowedTools Bash``, ``--model ...``).
        timeout: seconds before the run is killed and the test fails.

    Raises:
        pytest.fail.Exception: the run timed out or printed no JSON result.
    """
    home.mkdir(parents=True, exist_ok=True)
    command = [str(binary), "-p", prompt, "--output-format", "json", *args]
    try:
        with trio.fail_after(timeout):
            completed = await trio.run_process(
                command,
                env=claude_environment(base_url, api_key, home),
                cwd=str(home),
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    except trio.TooSlowError:
        pytest.fail(f"{' '.join(command)} did not finish in {timeout} s")

    stdout = completed.stdout.decode("utf-8", "replace")
    stderr = completed.stderr.decode("utf-8", "replace")
    try:
        document = json.loads(stdout)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        pytest.fail(
            f"claude printed no JSON result (exit {completed.returncode})\n"
            f"stdout:\n{_tail(stdout)}\nstderr:\n{_tail(stderr)}"
        )
    return ClaudeRun(completed.returncode, stdout, stderr, document)


@attrs.frozen
class Exchange:
    """One request the gateway answered: how it was asked and the status it gave."""

    method: str
    target: str
    status: int | None


class _StatusRecordingResponder:
    def __init__(self, inner: Responder, exchange: list[int]) -> None:
        self._inner = inner
        self._status = exchange

    @property
    def is_started(self) -> bool:
        return self._inner.is_started

    @property
    def body_flushed(self) -> bool:
        return self._inner.body_flushed

    async def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._status.append(status)
        await self._inner.start_response(status, headers)

    async def send_data(self, data: bytes) -> None:
        await self._inner.send_data(data)

    async def end_response(self) -> None:
        await self._inner.end_response()


def record_gateway_exchanges(monkeypatch: pytest.MonkeyPatch) -> list[Exchange]:
    """Record every request the next gateway started in this test answers.

    The gateway's own handler is wrapped where :mod:`ccag.app` hands it to
    the server, so the record is of what went over the wire to the client,
    and nothing else in the gateway changes.

    Returns:
        A list that fills up, in order, as requests finish.
    """
    exchanges: list[Exchange] = []
    serve = ccag.app.serve

    def recording_serve(handler: Handler, *args: Any, **kwargs: Any) -> Any:
        async def recording_handler(request: Request, responder: Responder) -> None:
            status: list[int] = []
            try:
                await handler(request, _StatusRecordingResponder(responder, status))
            finally:
                exchanges.append(
                    Exchange(
                        request.method, request.target, status[0] if status else None
                    )
                )

        return serve(recording_handler, *args, **kwargs)

    monkeypatch.setattr(ccag.app, "serve", recording_serve)
    return exchanges
