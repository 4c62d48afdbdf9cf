"""What importing the core loads, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_core_does_not_load_numba() -> None:
    # vLLM's CPU worker processes fail to start when numba's llvmlite is loaded in them, and a
    # spawned worker re-imports the main module: a script importing these at the top, then
    # starting in-process vLLM, must not have loaded numba (bm25s and ranx import it).
    code = (
        "import sys, rag.pipeline, rag.retriever, rag.keyword, eval.runner, eval.report, eval.compare, ui.service; "
        "loaded = sorted(m for m in ('numba', 'llvmlite', 'ranx', 'bm25s') if m in sys.modules); "
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
