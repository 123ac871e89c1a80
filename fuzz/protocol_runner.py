"""Runs a protocol fuzz target: atheris when installed, else a long Hypothesis run.

Each target defines ``check(data: bytes)``, which raises AssertionError (or
lets an unexpected exception escape) when the invariant breaks. Arguments
after the script name go to atheris unchanged (``-runs=N``, ``-max_len=N``,
corpus directories); without atheris, ``-runs=N`` sets the number of
Hypothesis examples.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager

# Without atheris, enough examples to take minutes, not seconds.
DEFAULT_HYPOTHESIS_EXAMPLES = 200_000

try:
    import atheris  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None


def instrumented() -> AbstractContextManager[object]:
    """Wrap the imports of the code under test so atheris sees its coverage."""
    if atheris is None:
        return contextlib.nullcontext()
    instrument: AbstractContextManager[object] = atheris.instrument_imports()
    return instrument


def run(check: Callable[[bytes], None], seeds: list[bytes]) -> None:
    """Fuzz ``check`` until stopped (atheris) or for a fixed number of examples."""
    args = sys.argv[1:]
    if atheris is not None and "--hypothesis" not in args:
        atheris.Setup([sys.argv[0], *args], check)
        atheris.Fuzz()
        return

    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    examples = DEFAULT_HYPOTHESIS_EXAMPLES
    for arg in args:
        if arg.startswith("-runs="):
            examples = int(arg.split("=", 1)[1])

    test = given(st.binary(max_size=4096))(check)
    for seed in seeds:
        test = example(seed)(test)
    settings(max_examples=examples, deadline=None, database=None)(test)()
    print(f"{examples} Hypothesis examples passed")
