"""``ccag simulate``: run the Bedrock simulator in the foreground.

It prints the endpoint and the credentials to use, one ``NAME=value`` per
line, ready for ``eval`` or a test harness to read::

    AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:PORT
    AWS_ACCESS_KEY_ID=...
    AWS_SECRET_ACCESS_KEY=...
    AWS_REGION=us-east-1
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import trio

from ccag.simulator.fixture import Simulator, run_simulator
from ccag.simulator.handler import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_REGION,
    DEFAULT_SECRET_KEY,
)

SIMULATE_HELP = """\
Run a Bedrock stand-in (InvokeModel, InvokeModelWithResponseStream,
CountTokens, ListInferenceProfiles) that checks SigV4 signatures and request
bodies the way Bedrock does. Scenarios can be queued over HTTP with
POST /_sim/script; GET /_sim/requests lists what arrived."""


def register(subparsers: Any) -> None:
    """Add the ``simulate`` subcommand to the ``ccag`` parser."""
    parser = subparsers.add_parser(
        "simulate",
        help="run the Bedrock simulator",
        description=SIMULATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY, help="access key id to accept")
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY, help="secret access key to accept")
    parser.add_argument("--region", default=DEFAULT_REGION, help=f"region to stand in for (default: {DEFAULT_REGION})")
    parser.add_argument("--api-key", action="append", default=[], help="Bedrock API key to accept as a Bearer token")
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and padding (replayable runs)")
    parser.set_defaults(func=_simulate)


def describe(simulator: Simulator) -> str:
    """The lines ``ccag simulate`` prints: where to connect and how to sign."""
    return (
        f"AWS_ENDPOINT_URL_BEDROCK_RUNTIME={simulator.url}\n"
        f"AWS_ACCESS_KEY_ID={simulator.access_key}\n"
        f"AWS_SECRET_ACCESS_KEY={simulator.secret_key}\n"
        f"AWS_REGION={simulator.region}\n"
    )


def _simulate(args: argparse.Namespace) -> int:
    from ccag.cli import run_reporting_startup_errors

    return run_reporting_startup_errors(_simulate_until_signalled, args)


async def _simulate_until_signalled(args: argparse.Namespace) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        simulator: Simulator = await nursery.start(
            lambda task_status: run_simulator(
                host=args.host,
                port=args.port,
                shutdown=shutdown,
                access_key=args.access_key,
                secret_key=args.secret_key,
                region=args.region,
                api_keys=frozenset(args.api_key),
                seed=args.seed,
                task_status=task_status,
            )
        )
        sys.stdout.write(describe(simulator))
        sys.stdout.flush()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                shutdown.set()
                break
