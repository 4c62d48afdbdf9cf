"""Running the ``rag`` command as a user runs it: a subprocess, with no ``RAG_*`` variables
leaking in from the test environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}


def rag(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``rag ARGS...`` from the repository root and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "ui.cli", *args],
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
