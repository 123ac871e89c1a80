"""Loading the fuzz targets under fuzz/ (scripts, not a package) in tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"


def load_target(name: str) -> ModuleType:
    """Import ``fuzz/<name>.py`` as the module ``ccag_fuzz_<name>``.

    The fuzz directory goes on ``sys.path`` first, because the targets import
    their shared runners (``protocol_runner``, ``server_harness``) the way
    they do when run as scripts.
    """
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    spec = importlib.util.spec_from_file_location(f"ccag_fuzz_{name}", FUZZ_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
