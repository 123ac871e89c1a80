"""A Bedrock stand-in for tests, demos and perf runs.

It serves InvokeModel, InvokeModelWithResponseStream, CountTokens and
ListInferenceProfiles on loopback through :func:`ccag.server.serve`, checks
SigV4 signatures and bodies the way Bedrock does, and answers with scripted
or default scenarios (see :mod:`ccag.simulator.directives` for the prompt
directives and :mod:`ccag.simulator.scenarios` for what a test can script).
"""

from ccag.simulator.fixture import Simulator, open_simulator, run_simulator
from ccag.simulator.handler import BedrockSimulator, ReceivedRequest, SimulatorOptions
from ccag.simulator.scenarios import (
    Fail,
    Garbage,
    Reset,
    Stall,
    StreamException,
    Text,
    Thinking,
    ToolUse,
    Truncate,
    Usage,
    scenario_from_json,
)

__all__ = [
    "BedrockSimulator",
    "Fail",
    "Garbage",
    "ReceivedRequest",
    "Reset",
    "Simulator",
    "SimulatorOptions",
    "Stall",
    "StreamException",
    "Text",
    "Thinking",
    "ToolUse",
    "Truncate",
    "Usage",
    "open_simulator",
    "run_simulator",
    "scenario_from_json",
]
