"""What importing the core loads, and which package may import which (the layers of DESIGN.md),
checked in a fresh interpreter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# --- the layers of DESIGN.md, as the import-linter contract in pyproject.toml states them ------

LAYERED = ("rag", "ingest", "eval", "ui", "bench")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` (as ``make lint`` runs it) on the tree under ``root``, in a fresh interpreter:
    the linter finds the packages from its working directory, which must win over those this
    process has imported."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)


def test_no_benchmark_script_shadows_a_package() -> None:
    # ``python bench/<script>.py`` puts ``bench/`` first on ``sys.path``: a script named after a
    # package would be imported in its place, by the script and by every process it spawns.
    scripts = {path.stem for path in (REPO / "bench").glob("*.py")}
    assert not scripts & set(LAYERED), sorted(scripts & set(LAYERED))


def test_the_tree_keeps_the_layer_contract() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("rag/types.py", "ui.cli"),  # the core importing a front door
        ("rag/config.py", "ingest.job"),  # the core importing a layer above it
        ("ingest/chunking.py", "eval.metrics"),  # ingestion importing its sibling
        ("eval/runner.py", "ingest.chunking"),  # evaluation past ingestion's one public doorway
        ("ui/service.py", "bench.common"),  # the product importing a benchmark script
    ],
)
def test_a_planted_upward_import_breaks_the_layer_contract(tmp_path: Path, module: str, planted: str) -> None:
    for package in LAYERED:
        for source in (REPO / package).rglob("*.py"):
            copy = tmp_path / source.relative_to(REPO)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    shutil.copyfile(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert _lint_imports(tmp_path).returncode == 0  # the copy alone keeps the contract
    with open(tmp_path / module, "a", encoding="utf-8") as file:
        file.write(f"\nimport {planted}  # planted by the test\n")

    result = _lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {planted}" in result.stdout
    assert "0 kept, 1 broken" in result.stdout
