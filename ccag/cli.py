"""The ``ccag`` command: serve, simulate, keys.

``ccag serve`` takes every setting of :mod:`ccag.config` as a flag; the same
settings come from ``CCAG_*`` variables and an optional TOML file
(``--config`` or ``CCAG_CONFIG``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ccag import __version__
from ccag.config import SETTINGS, load_config
from ccag.errors import ConfigError
from ccag.store.base import StoreError

logger = logging.getLogger("ccag")

SERVE_HELP = """\
Run the gateway. Claude Code and Anthropic SDK clients point ANTHROPIC_BASE_URL
at it and use a ccag key as their API key. With no AWS credentials (or with
--simulator on) it serves from the bundled Bedrock simulator and says so in
its first log line. Every flag can also be set as CCAG_<NAME> in the
environment or as <name> = value in a TOML file given by --config."""


def _add_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway",
        description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML file of settings (also CCAG_CONFIG)")
    for setting in SETTINGS:
        default = "" if setting.default is None else f" (default: {setting.default})"
        if setting.kind is bool:
            parser.add_argument(
                setting.flag, dest=setting.name, action=argparse.BooleanOptionalAction,
                default=None, help=setting.help + default,
            )
        else:
            parser.add_argument(
                setting.flag, dest=setting.name, default=None, metavar=setting.name.upper(),
                help=setting.help + default,
            )
    parser.set_defaults(func=_serve)


def configure_logging(level: str) -> None:
    # Every request logs an access line. The format shows none of the
    # caller's file, line, thread or process, so skip finding them for each
    # record (the logging HOWTO's "Optimization" switches): ~25% of the
    # line's cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> int:
    flags = {setting.name: getattr(args, setting.name) for setting in SETTINGS}
    try:
        config = load_config(flags, file=args.config)
    except ConfigError as exc:
        print(f"ccag: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    return run_reporting_startup_errors(_serve_until_signalled, config)


# What a setting that looked valid can still run into when the gateway
# starts: a port in use, a certificate that does not load, a store that
# cannot be opened, a file it cannot read. Each is the operator's to fix, so
# it is said in one line, not as a traceback.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (ConfigError, StoreError, OSError, ssl.SSLError)


def run_reporting_startup_errors(main: Any, *args: Any) -> int:
    """``trio.run(main, *args)``; a start-up error is logged as one line, exit 2."""
    try:
        trio.run(main, *args)
    except STARTUP_ERRORS as exc:
        _report(exc)
        return 2
    except BaseExceptionGroup as group:
        # Errors raised inside a nursery arrive wrapped in a group.
        known, rest = group.split(STARTUP_ERRORS)
        if known is None or rest is not None:
            raise
        for error in _leaves(known):
            _report(error)
        return 2
    return 0


def _report(error: BaseException) -> None:
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        logger.error("cannot start: %s%s", error.strerror, where)
    else:
        logger.error("cannot start: %s", error)
    logger.debug("start-up failure", exc_info=error)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        else:
            found.append(error)
    return found


async def _serve_until_signalled(config: Any) -> None:
    from ccag.app import run_gateway

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, shutdown, nursery.cancel_scope)
        await run_gateway(config, shutdown=shutdown)
        nursery.cancel_scope.cancel()


async def _watch_signals(shutdown: trio.Event, everything: trio.CancelScope) -> None:
    """First SIGTERM/SIGINT: graceful shutdown. Second: stop at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not shutdown.is_set():
                logger.info("%s: closing the listener, finishing in-flight requests",
                            signal.Signals(signum).name)
                shutdown.set()
            else:
                logger.warning("second signal: stopping now")
                everything.cancel()
                return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccag",
        description="ccag: Claude Code and the Anthropic API on Amazon Bedrock.",
    )
    parser.add_argument("--version", action="version", version=f"ccag {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(subparsers)

    from ccag.admin_cli import register as register_admin
    from ccag.auth.cli import register as register_keys
    from ccag.simulator.cli import register as register_simulator

    register_simulator(subparsers)
    register_keys(subparsers)
    register_admin(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
