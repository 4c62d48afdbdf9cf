"""The Ray engine's driver-side logic with fakes and no Ray: the stages' classes run in this process
(their output shuffled and cut into blocks, as Ray Data may deliver it), and the driver must end
where the in-process job ends."""

from __future__ import annotations

import pickle
import random
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.job import FileLoad, IngestSummary, run_ingest
from ingest.ray_job import (
    Batch,
    EmbedChunks,
    EmbedderFactory,
    FileGatherer,
    LoadAndChunk,
    plan_resources,
    rows_to_columns,
    run_ray_ingest,
)
from rag.config import AppConfig
from rag.errors import ConfigError
from rag.kb import StoredDocument, open_knowledge_base
from tests.fakes import FakeComponents, FakeEmbedder, FakeIngestReporter
from tests.filefactory import make_content_bomb_pdf
from ui.cli import main


def local_stages(seed: int) -> Any:
    """A stage runner that runs the stages in this process, rows shuffled by ``seed``."""

    def run(
        todo: Sequence[tuple[str, str | None]],
        stored: dict[str, StoredDocument],
        config: AppConfig,
        make_embedder: EmbedderFactory,
        address: str | None,
    ) -> Generator[Batch, None, None]:
        load, embed = LoadAndChunk(make_embedder, config), EmbedChunks(make_embedder, None)
        rows: list[dict[str, Any]] = []
        try:
            for path, known in todo:
                stored_id = stored[path].id if path in stored else ""
                batch = load({"path": [path], "known_hash": [known or ""], "stored_id": [stored_id]})
                rows.extend(dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True))
        finally:
            load.close()
        random.Random(seed).shuffle(rows)
        size = config.ingest.embed_batch_chunks
        for start in range(0, len(rows), size):
            yield embed(rows_to_columns(rows[start : start + size]))

    return run


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Apples grow on trees in the orchard. " * 40)
    (folder / "b.md").write_text("# Bananas\n\nBananas are yellow and grow in bunches. " * 10)
    (folder / "c.txt").write_text("Cherries are small and red.")
    (folder / "notes.xyz").write_text("unsupported")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    return folder


def _config(make_config: Any, kb: str) -> AppConfig:
    config: AppConfig = make_config(
        embedding__model="fake/hashing-64", ingest__workers=0, ingest__embed_batch_chunks=5, kb_dir=kb
    )
    return config


def _chunk_ids(config: AppConfig) -> list[int]:
    with open_knowledge_base(config.kb_dir, config) as kb:
        assert kb.consistency_problems(config) == []
        return sorted(c.id for c, _ in kb.all_chunks())


def _outcomes(summary: IngestSummary) -> dict[str, Any]:
    facts = summary.as_dict()
    del facts["seconds"]
    facts["failed"] = sorted((Path(f["path"]).name, f["reason"]) for f in facts["failed"])
    return facts


def _ray(paths: list[Path], config: AppConfig, seed: int = 0, **flags: bool) -> tuple[IngestSummary, Any]:
    reporter = FakeIngestReporter()
    summary = run_ray_ingest(paths, config, FakeEmbedder, reporter, stages=local_stages(seed), **flags)
    return summary, reporter


@pytest.mark.parametrize("seed", [0, 1])
def test_the_driver_ends_where_the_in_process_job_ends(docs: Path, make_config: Any, tmp_path: Path, seed: int) -> None:
    inprocess = _config(make_config, str(tmp_path / "kb-inprocess"))
    inprocess_reporter = FakeIngestReporter()
    expected = run_ingest([docs], inprocess, FakeEmbedder(), inprocess_reporter)
    ray = _config(make_config, str(tmp_path / "kb-ray"))
    summary, reporter = _ray([docs], ray, seed)
    assert _outcomes(summary) == _outcomes(expected)
    assert summary.added == 3 and {name for name, _ in _outcomes(summary)["failed"]} == {"empty.txt", "binary.txt"}
    assert _chunk_ids(ray) == _chunk_ids(inprocess)
    assert reporter.started == inprocess_reporter.started
    # The same events, in whatever order the files came through.
    assert sorted(reporter.events, key=repr) == sorted(inprocess_reporter.events, key=repr)


def test_rerun_skips_unchanged_files_and_replaces_edited_ones(docs: Path, make_config: Any, tmp_path: Path) -> None:
    config = _config(make_config, str(tmp_path / "kb"))
    _ray([docs], config)
    first = _chunk_ids(config)

    again, reporter = _ray([docs], config)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)
    assert reporter.started == (2, 1024), "only the two failed files are read again"
    assert _chunk_ids(config) == first

    (docs / "a.txt").write_text("Apricots are orange. " * 30)
    (docs / "c.txt").unlink()
    edited, _ = _ray([docs], config, seed=3, prune=True)
    assert (edited.added, edited.updated, edited.unchanged, edited.removed) == (0, 1, 1, 1)
    clean = _config(make_config, str(tmp_path / "kb-clean"))
    run_ingest([docs], clean, FakeEmbedder())
    assert _chunk_ids(config) == _chunk_ids(clean), "no orphan chunk of the old a.txt, no c.txt"


def test_a_file_that_kills_its_loader_fails_alone(docs: Path, make_config: Any, tmp_path: Path) -> None:
    make_content_bomb_pdf(docs / "greedy.pdf", text_objects=1_000_000)  # ~500 MB of PDFium objects
    config: AppConfig = make_config(
        embedding__model="fake/hashing-64",
        ingest__workers=1,  # each loading actor keeps a loader process, under the in-process job's limits
        ingest__file_memory_mb=300.0,
        kb_dir=str(tmp_path / "kb"),
    )
    summary, _ = _ray([docs], config)
    reasons = dict(_outcomes(summary)["failed"])
    assert "needed more than 300 MB (ingest.file_memory_mb)" in reasons["greedy.pdf"], reasons
    assert summary.added == 3


def test_reindex_is_refused_with_a_clear_error(docs: Path, make_config: Any, tmp_path: Path) -> None:
    config = _config(make_config, str(tmp_path / "kb"))
    with pytest.raises(ConfigError, match=r"--reindex .* --engine inprocess"):
        _ray([docs], config, reindex=True)
    assert not (tmp_path / "kb").exists(), "refused before anything is opened"


def test_gatherer_gives_a_file_once_all_its_rows_are_in() -> None:
    gatherer = FileGatherer()
    vector = np.ones(4, dtype=np.float32).tobytes()
    assert gatherer.add("a", 1, 2, b"", vector) is None
    assert gatherer.incomplete == ["a"]
    record = pickle.dumps(FileLoad("a", content_hash="h"))
    whole = gatherer.add("a", 0, 2, record, vector)  # the pickled record comes with row 0
    assert whole is not None and whole.item == FileLoad("a", content_hash="h") and sorted(whole.vectors) == [0, 1]
    assert gatherer.incomplete == []


def test_resources_one_gpu_actor_per_gpu_and_loaders_on_the_other_cpus() -> None:
    gpu = plan_resources({"CPU": 16.0, "GPU": 2.0})
    assert (gpu.embed_actors, gpu.embed_gpus, gpu.embed_threads, gpu.loader_actors) == (2, 1.0, None, 14)
    cpu = plan_resources({"CPU": 2.0})
    assert (cpu.embed_actors, cpu.embed_gpus, cpu.embed_cpus, cpu.embed_threads) == (1, 0.0, 1.0, 2)
    assert (cpu.loader_actors, cpu.loader_cpus) == (1, 1.0)
    tiny = plan_resources({"CPU": 1.0})
    assert tiny.embed_cpus + tiny.loader_cpus <= 1.0, "neither stage waits forever for a CPU"
    assert plan_resources({"CPU": 8.0}, embed_actors=2).embed_threads == 4


def test_cli_refuses_a_ray_address_without_the_ray_engine(docs: Path, tmp_path: Path) -> None:
    argv = ["ingest", str(docs), "--kb", str(tmp_path / "kb"), "--set", "embedding.model=fake/hashing-64"]
    assert main([*argv, "--ray-address", "127.0.0.1:6379"], components=FakeComponents) == 1
    assert main([*argv, "--engine", "ray", "--reindex"], components=FakeComponents) == 1


def test_the_driver_writes_a_knowledge_base_in_milvus_lite_as_the_in_process_job_does(
    docs: Path, make_config: Any, tmp_path: Path
) -> None:
    inprocess = _config(make_config, str(tmp_path / "kb-inprocess"))
    expected = run_ingest([docs], inprocess, FakeEmbedder())
    ray = _config(make_config, f"milvus-lite:{tmp_path / 'kb.db'}")
    summary, _ = _ray([docs], ray, seed=3)
    assert _outcomes(summary) == _outcomes(expected)
    assert _chunk_ids(ray) == _chunk_ids(inprocess)
    again, _ = _ray([docs], ray, seed=4)
    assert (again.unchanged, again.added) == (3, 0) and _chunk_ids(ray) == _chunk_ids(inprocess)
