"""``rag check`` and ``--repair`` on knowledge bases damaged the ways disks and people damage them.

Each case builds a real knowledge base (real SQLite, FAISS and BM25; the fake embedder), damages
one part, and checks three things: the check names the damage; every command that meets it
fails with one line pointing to ``rag check --repair`` (or still gives right results, where the
part is derived and rebuilt in memory); and the repair brings back the same search results as
before the damage without deleting a row, or says what it could not save.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.job import run_ingest
from rag.check import check_knowledge_base, repair_knowledge_base
from rag.config import AppConfig
from rag.errors import KnowledgeBaseDamagedError
from rag.kb.embedded import EmbeddedKnowledgeBase
from rag.kb.generations import MANIFEST_NAME, index_file_name, keyword_dir_name
from rag.kb.sqlite_rows import DB_NAME
from tests.fakes import FakeEmbedder
from ui.cli import main as rag

QUERIES = ("orchard apples", "yellow bananas", "citrus grove")


class CountingFactory:
    """Builds fake embedders for a repair and remembers whether it was asked to."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, config: AppConfig) -> FakeEmbedder:
        self.built.append(config.embedding.model)
        return FakeEmbedder(model_id=config.embedding.model)


@pytest.fixture
def built(tmp_path: Path, make_config: Any) -> tuple[AppConfig, dict[str, Any]]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Apples grow on trees in the orchard. " * 30)
    (docs / "b.md").write_text("# Bananas\n\nBananas are yellow and grow in bunches. " * 20)
    (docs / "c.txt").write_text("Lemons and oranges grow in a citrus grove. " * 25)
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    assert not run_ingest([docs], config, FakeEmbedder()).failed
    return config, _observe(config)


def _observe(config: AppConfig) -> dict[str, Any]:
    """Rows and results a user sees: what a repair must bring back."""
    embedder = FakeEmbedder()
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        assert kb.consistency_problems(config) == []
        searcher = kb.searcher(config)
        keyword = searcher.keyword_index
        chunks = sorted((c.id, c.text) for c, _ in kb.all_chunks())
        # Whole rankings with ties in id order: a rebuilt index holds equal vectors in another order.
        dense = searcher.dense(embedder.embed_queries(list(QUERIES)), len(chunks))
        return {
            "chunks": chunks,
            "documents": [d.source for d in kb.documents()],
            "dense": [sorted((-round(h.score, 5), h.chunk.id) for h in hits) for hits in dense],
            "keyword": [sorted((-round(s, 5), i) for i, s in keyword.search(q, len(chunks))) for q in QUERIES],
        }


def _index_file(config: AppConfig) -> Path:
    return next(config.kb_dir.glob("index-*.faiss"))


def _parts(config: AppConfig) -> list[str]:
    return [f.part for f in check_knowledge_base(config.kb_dir, config).findings if f.level != "note"]


def _repair(config: AppConfig, factory: Callable[[AppConfig], FakeEmbedder] | None = None) -> Any:
    return repair_knowledge_base(config.kb_dir, config, factory or CountingFactory())


def test_a_whole_knowledge_base_checks_whole(built: tuple[AppConfig, dict[str, Any]]) -> None:
    config, _ = built
    report = check_knowledge_base(config.kb_dir, config)
    assert report.whole and report.findings == []
    generation = _index_file(config).name
    factory = CountingFactory()
    assert _repair(config, factory).repaired == [] and factory.built == [], "nothing to repair: nothing rebuilt"
    assert _index_file(config).name == generation


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.unlink(), id="deleted"),
        pytest.param(lambda path: path.write_bytes(b""), id="zero-length"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), id="truncated"),
        pytest.param(lambda path: path.write_bytes(b"not an index at all" * 100), id="overwritten"),
    ],
)
def test_a_damaged_faiss_file_is_named_and_embedded_again(
    built: tuple[AppConfig, dict[str, Any]], damage: Callable[[Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    config, before = built
    index_file = _index_file(config)
    damage(index_file)

    assert _parts(config) == [index_file.name]
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb, pytest.raises(KnowledgeBaseDamagedError) as error:
        kb.load_indexes(config)
    assert index_file.name in str(error.value) and f"rag check --repair --kb {config.kb_dir}" in str(error.value)
    # A plain re-run of the ingest meets it the same way: one clear error, not a FAISS stack trace.
    with pytest.raises(KnowledgeBaseDamagedError, match="rag check --repair"):
        run_ingest([], config, FakeEmbedder())

    factory = CountingFactory()
    report = _repair(config, factory)
    assert factory.built == ["fake/hashing-64"], "the knowledge base's own model embeds again"
    assert report.whole and not report.not_saved
    assert any("embedded again" in line for line in report.repaired)
    assert _observe(config) == before
    assert rag(["check", "--kb", str(config.kb_dir), "--set", "embedding.model=fake/hashing-64"]) == 0
    assert "whole" in capsys.readouterr().out


def test_a_damaged_manifest_row_is_rebuilt_from_manifest_json(
    built: tuple[AppConfig, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, before = built
    with sqlite3.connect(config.kb_dir / DB_NAME) as db:
        db.execute("UPDATE meta SET value = '{\"format_version\": \"one\"}' WHERE key = 'manifest'")

    with pytest.raises(KnowledgeBaseDamagedError, match=r"manifest .*format_version.*rag check --repair"):
        EmbeddedKnowledgeBase.open(config.kb_dir, config)
    for command in (["info"], ["search", "apples"]):  # both fail before a model would load
        assert rag([*command, "--kb", str(config.kb_dir), "--set", "embedding.model=fake/hashing-64"]) == 1
        err = capsys.readouterr().err
        assert "rag check --repair" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    with pytest.raises(KnowledgeBaseDamagedError, match="rag check --repair"):
        run_ingest([], config, FakeEmbedder(), reindex=True)  # not even --reindex gets past it
    assert _parts(config) == [f"{DB_NAME} (manifest)"]

    factory = CountingFactory()
    report = _repair(config, factory)
    assert report.whole and report.repaired[0] == f"the manifest, from {MANIFEST_NAME}"
    assert factory.built == [], "the index file still matches the rows: nothing is embedded again"
    assert _observe(config) == before


def test_a_lost_manifest_row_and_copy_are_rebuilt_from_the_configuration(
    built: tuple[AppConfig, dict[str, Any]],
) -> None:
    config, before = built
    with sqlite3.connect(config.kb_dir / DB_NAME) as db:
        db.execute("DELETE FROM meta WHERE key = 'manifest'")
    (config.kb_dir / MANIFEST_NAME).write_text("{ garbage")
    assert f"{DB_NAME} (manifest)" in _parts(config)

    report = _repair(config)
    assert report.whole, report.not_saved
    assert "the configuration (embedding model fake/hashing-64" in report.repaired[0]
    assert _observe(config) == before


@pytest.mark.parametrize("damage", ["garbage", "deleted", "stale"])
def test_manifest_json_is_written_again(built: tuple[AppConfig, dict[str, Any]], damage: str) -> None:
    config, before = built
    copy = config.kb_dir / MANIFEST_NAME
    if damage == "garbage":
        copy.write_text("\x00\x01 not json")
    elif damage == "deleted":
        copy.unlink()
    else:
        copy.write_text(copy.read_text().replace('"documents": 3', '"documents": 2'))
    levels = {f.part: f.level for f in check_knowledge_base(config.kb_dir, config).findings}
    assert levels == {MANIFEST_NAME: "note" if damage == "deleted" else "warning"}
    assert _observe(config) == before, "readers never use the copy"
    assert _repair(config).whole
    assert check_knowledge_base(config.kb_dir, config).findings == []


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_damaged_bm25_folder_is_rebuilt(built: tuple[AppConfig, dict[str, Any]], damage: str) -> None:
    config, before = built
    folder = next(config.kb_dir.glob("bm25-*"))
    if damage == "deleted":
        shutil.rmtree(folder)
    else:
        for file in folder.iterdir():
            file.write_bytes(b"")
    assert _parts(config) == [folder.name]
    assert _observe(config) == before, "readers rebuild BM25 in memory meanwhile"
    factory = CountingFactory()
    assert _repair(config, factory).whole and factory.built == []
    # Written beside the damaged one, for the next generation, and the damaged one removed.
    assert [p.name for p in config.kb_dir.glob("bm25-*")] == [f"bm25-{int(folder.name[5:]) + 1:08d}"]
    assert check_knowledge_base(config.kb_dir, config).findings == []
    assert _observe(config) == before


def test_leftovers_of_a_killed_commit_are_a_note_and_removed(built: tuple[AppConfig, dict[str, Any]]) -> None:
    config, before = built
    index_file = _index_file(config)
    generation = int(index_file.stem.split("-")[1])
    shutil.copy(index_file, config.kb_dir / index_file_name(generation + 1))
    (config.kb_dir / keyword_dir_name(generation + 1)).mkdir()
    report = check_knowledge_base(config.kb_dir, config)
    assert report.whole and [f.level for f in report.findings] == ["note"]
    _repair(config)
    assert check_knowledge_base(config.kb_dir, config).findings == []
    assert _observe(config) == before


def test_damaged_sqlite_is_named_and_left_as_it_is(built: tuple[AppConfig, dict[str, Any]]) -> None:
    config, _ = built
    database = config.kb_dir / DB_NAME
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(database.read_bytes())
    # Overwrite every page but the first (the schema) with noise: the rows' pages are gone.
    for start in range(page_size, len(data), page_size):
        data[start + 8 : start + page_size] = bytes(range(256)) * ((page_size - 8) // 256)
    database.write_bytes(bytes(data))
    digest = hashlib.sha256(database.read_bytes()).hexdigest()

    report = check_knowledge_base(config.kb_dir, config)
    assert [f.part for f in report.findings] == [DB_NAME] and not report.whole
    repaired = _repair(config)
    assert repaired.not_saved and "left as it is" in repaired.not_saved[0]
    assert hashlib.sha256(database.read_bytes()).hexdigest() == digest, "the damaged file is not touched"
    assert rag(["info", "--kb", str(config.kb_dir)]) == 1


def test_check_and_ingest_without_paths_on_the_command_line(
    built: tuple[AppConfig, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = built
    _index_file(config).unlink()
    settings = ["--kb", str(config.kb_dir), "--set", "embedding.model=fake/hashing-64"]
    assert rag(["check", *settings]) == 2
    out = capsys.readouterr().out
    assert "error" in out and "rag check --repair will embed the" in out and "1 problem(s)" in out
    assert rag(["ingest", *settings]) == 1
    assert "needs a PATH" in capsys.readouterr().err


def test_chunks_whose_document_row_is_gone_keep_their_vectors_through_a_repair(
    built: tuple[AppConfig, dict[str, Any]],
) -> None:
    config, _ = built
    with sqlite3.connect(config.kb_dir / DB_NAME) as db:
        db.execute("DELETE FROM documents WHERE source LIKE '%c.txt'")
        db.execute("UPDATE chunks SET context = NULL")  # as stored before headers were kept per chunk
    _index_file(config).unlink()
    report = _repair(config)
    assert [f.part for f in report.findings if f.level != "note"] == [f"{DB_NAME} (chunks)"], report.findings
    assert report.not_saved == [f"{DB_NAME} (chunks): {report.findings[0].problem}"]
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:  # both indexes name every chunk row again
        dense, keyword = kb.load_indexes(config)
        assert len(dense) == len(keyword) == kb.stats().chunks


def test_info_says_how_the_vectors_were_made(
    built: tuple[AppConfig, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = built
    assert rag(["info", "--kb", str(config.kb_dir), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["embedding_backend"], facts["embedding_quantization"]) == ("torch", "none")
    assert rag(["info", "--kb", str(config.kb_dir)]) == 0
    assert "dimensions, torch)" in capsys.readouterr().out
