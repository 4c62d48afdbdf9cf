"""``python -m tests.crashrun KB DOCS [--prune] [--ray ADDRESS]``: one real ingestion run in a process
of its own, for the crash tests to kill.

It is the real job (``ingest.job.run_ingest``) on real files with the real SQLite and FAISS,
embedding with :class:`tests.fakes.FakeEmbedder` (a fake: the model is not what a crash test
tests, and a real one would cost seconds per process). Every batch is a few chunks and every
batch is committed, so a small folder makes many commits. ``RAGTEST_CRASH_AT`` (rag/faults.py)
picks where it dies; the line ``running`` on stdout says the imports are done. With ``--ray
ADDRESS`` it is the Ray engine (``ingest.ray_job.run_ray_ingest``) on the Ray cluster at ADDRESS:
this process, the driver, is the one that writes, and the one killed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ingest.job import run_ingest
from rag.config import AppConfig, load_config
from tests.fakes import FakeEmbedder

SETTINGS: dict[str, Any] = {
    "embedding.model": "fake/hashing-64",
    "ingest.workers": 0,
    "ingest.embed_batch_chunks": 4,
    "ingest.commit_seconds": 1e-9,  # every batch is a commit
}


def crash_config(kb_dir: Path | str) -> AppConfig:
    """The configuration of a crash-test run: the killed one and the clean one it is compared with."""
    return load_config(environ={}, overrides={"kb_dir": kb_dir, **SETTINGS})


def main(argv: list[str]) -> int:
    kb_dir, docs = argv[0], Path(argv[1])  # a directory, or milvus-lite:PATH.db
    print("running", flush=True)
    prune = "--prune" in argv
    if "--ray" in argv:
        from ingest.ray_job import run_ray_ingest

        address = argv[argv.index("--ray") + 1]
        summary = run_ray_ingest([docs], crash_config(kb_dir), FakeEmbedder, prune=prune, address=address)
    else:
        summary = run_ingest([docs], crash_config(kb_dir), FakeEmbedder(), prune=prune)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
