"""Rewrite the expected ``*.out.json`` files from the current translator.

Run by hand only (``python tests/golden/translate/regenerate.py``), then read
the diff before committing: the golden test never rewrites anything itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent.parent.parent))

from golden_translate import run_case

if __name__ == "__main__":
    for case in sorted(HERE.glob("*.in.json")):
        out = run_case(json.loads(case.read_text()))
        target = case.with_name(case.name.replace(".in.json", ".out.json"))
        target.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        print("wrote", target.name)
