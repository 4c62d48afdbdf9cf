"""``rag ingest --engine ray`` on one local Ray cluster for the whole session (2 CPUs, started once,
stopped at the end): it must end where the in-process job ends, and survive ``kill -9``.

The ingest runs are drivers in processes of their own that connect to the session's cluster with
``--ray-address`` (as on a real cluster), so a kill takes the driver, the one writer, and Ray
removes its actors; the re-run after a kill runs in this process, on the same cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.job import IngestSummary, run_ingest
from ingest.ray_job import run_ray_ingest
from rag.check import check_knowledge_base
from rag.config import AppConfig, load_config
from rag.faults import CRASH_ENV
from rag.kb import open_knowledge_base
from tests.crashrun import crash_config
from tests.fakes import FakeEmbedder
from tests.filefactory import make_binary_txt
from tests.integration.cli import REPO, clean_environment, rag
from tests.integration.test_crash import _committed, _state, _write_docs

pytestmark = pytest.mark.integration

SAMPLES = REPO / "samples"


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """One local Ray cluster for the session, on loopback; its address for ``--ray-address``."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:
        # Its workers import this checkout's packages, and tests.fakes (pickled by reference).
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
        context = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield str(context.address_info["gcs_address"])
    ray.shutdown()


def _config(kb: Path) -> AppConfig:
    return load_config(overrides={"kb_dir": kb}, environ={})


def _outcomes(summary: dict[str, Any]) -> dict[str, Any]:
    facts = {k: v for k, v in summary.items() if k != "seconds"}
    facts["failed"] = sorted((Path(f["path"]).name, f["reason"]) for f in summary["failed"])
    return facts


def test_ray_engine_matches_the_in_process_job_on_the_samples(
    ray_address: str, tmp_path: Path, real_embedder: Any
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    (docs / "empty.pdf").write_bytes(b"")
    make_binary_txt(docs / "binary.txt")
    ray_kb = tmp_path / "kb-ray"

    result = rag("ingest", str(docs), "--kb", str(ray_kb), "--engine", "ray", "--ray-address", ray_address, "--json")

    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    expected = run_ingest([docs], _config(tmp_path / "kb-inprocess"), real_embedder)
    assert _outcomes(summary) == _outcomes(expected.as_dict())
    assert summary["added"] == 4 and {name for name, _ in _outcomes(summary)["failed"]} == {"empty.pdf", "binary.txt"}
    for name in ("empty.pdf", "binary.txt"):
        assert name in result.stderr, "each failure is reported as the driver stores it, by name"
    ray_config, inprocess_config = _config(ray_kb), _config(tmp_path / "kb-inprocess")
    with (
        open_knowledge_base(ray_kb, ray_config) as a,
        open_knowledge_base(inprocess_config.kb_dir, inprocess_config) as b,
    ):
        assert a.consistency_problems(ray_config) == [] and b.consistency_problems(inprocess_config) == []
        assert sorted(c.id for c, _ in a.all_chunks()) == sorted(c.id for c, _ in b.all_chunks())
        assert (a.stats().documents, a.stats().pages, a.stats().chunks) == (
            b.stats().documents,
            b.stats().pages,
            b.stats().chunks,
        )
        assert a.stats().last_run is not None and a.stats().last_run.status == "completed with failures"


@pytest.fixture(scope="module")
def clean_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a clean in-process run of the crash tests' documents leaves."""
    root = tmp_path_factory.mktemp("ray-clean")
    _write_docs(root / "docs", range(10))
    assert not run_ingest([root / "docs"], crash_config(root / "kb"), FakeEmbedder()).failed
    return _state(root / "kb")


# Killed after the first commit of documents (the run's 1st commit records the run itself): right
# after SQLite committed it, and later with a block stored but not committed.
@pytest.mark.parametrize("crash", ["sqlite-committed:2", "stored:3"])
def test_killed_ray_ingest_rerun_equals_a_clean_run(
    ray_address: str, tmp_path: Path, clean_state: dict[str, Any], crash: str
) -> None:
    docs, kb = tmp_path / "docs", tmp_path / "kb"
    _write_docs(docs, range(10))
    killed = subprocess.run(
        [sys.executable, "-m", "tests.crashrun", str(kb), str(docs), "--ray", ray_address],
        cwd=REPO,
        env=clean_environment() | {CRASH_ENV: crash},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, f"the crash point was not reached: {killed.stderr[-3000:]}"
    committed = _committed(kb)
    assert 0 < len(committed) < 10, f"the kill lands mid-run: {len(committed)} documents committed"
    assert check_knowledge_base(kb, crash_config(kb)).whole

    done = {s for s, digest in committed.items() if hashlib.sha256(Path(s).read_bytes()).hexdigest() == digest}
    resumed: IngestSummary = run_ray_ingest([docs], crash_config(kb), FakeEmbedder)  # on the session's cluster
    assert not resumed.failed
    assert resumed.unchanged == len(done), "files committed before the kill are not redone"
    assert resumed.added == 10 - len(done)
    assert _state(kb) == clean_state, "no duplicate, no orphan: the same documents, chunks and rankings"
    assert check_knowledge_base(kb, crash_config(kb)).findings == []
