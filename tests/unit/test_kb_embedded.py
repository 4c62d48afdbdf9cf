from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ingest.chunking import chunk_pages
from rag.config import AppConfig
from rag.errors import KnowledgeBaseLockedError, KnowledgeBaseNotFoundError, ManifestMismatchError
from rag.kb import document_id_for
from rag.kb.embedded import EmbeddedKnowledgeBase, EmbeddedWriter
from rag.kb.generations import index_file_name, keyword_dir_name
from rag.keyword import TOKENIZATION
from rag.types import Document, Page
from tests.fakes import FakeEmbedder

EMBEDDER = FakeEmbedder()


def _config(tmp_path: Path, model: str = "fake/hashing-64") -> AppConfig:
    return AppConfig.model_validate({"kb_dir": tmp_path / "kb", "embedding": {"model": model}})


def _put(writer: EmbeddedWriter, source: str, text: str) -> list[int]:
    doc_id = document_id_for(source)
    pages = (Page(1, text),)
    chunks = chunk_pages(doc_id, f"hash-{text}", pages, EMBEDDER.tokenizer, AppConfig().chunking)
    document = Document(doc_id, source, f"hash-{text}", "text/plain", source, 1, len(text), 0, "now")
    writer.put_document(document, pages, chunks, EMBEDDER.embed_documents([c.text for c in chunks]))
    return [c.id for c in chunks]


def _one_document_kb(tmp_path: Path) -> AppConfig:
    config = _config(tmp_path)
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        _put(writer, "/a.txt", "text")
        writer.commit()
    return config


def test_readers_see_only_committed_state(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        _put(writer, "/a.txt", "apples grow on trees")
        writer.commit()
        with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
            assert reader.stats().documents == 1
            _put(writer, "/b.txt", "bananas are yellow")  # staged, not committed
            assert reader.stats().documents == 1
            assert len(reader.load_index(config)) == 1
            assert reader.consistency_problems(config) == []
            writer.commit()
            assert reader.stats().documents == 2
            assert len(reader.load_index(config)) == 2
            assert reader.consistency_problems(config) == []


def test_uncommitted_work_is_discarded_and_orphan_index_files_removed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        kept = _put(writer, "/a.txt", "apples grow on trees")
        writer.commit()
        _put(writer, "/b.txt", "bananas are yellow")
        # A crash between writing the next index file and the SQLite commit:
        writer.index.write(config.kb_dir / index_file_name(writer.manifest.generation + 1))
    files = sorted(p.name for p in config.kb_dir.glob("index-*.faiss"))
    assert len(files) == 2  # the orphan is still there until the next writer opens
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64):
        pass
    assert [p.name for p in config.kb_dir.glob("index-*.faiss")] == [index_file_name(1)]
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
        assert reader.consistency_problems(config) == []
        assert sorted(reader.load_index(config).ids().tolist()) == sorted(kept)


def test_replacing_a_document_replaces_its_chunks_and_vectors(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        old = _put(writer, "/a.txt", "first version of the file")
        writer.commit()
        new = _put(writer, "/a.txt", "second version, rewritten")
        writer.commit()
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
        ids = set(reader.load_index(config).ids().tolist())
        assert ids == set(new) and not ids & set(old)
        assert [c.text for c, _ in reader.all_chunks()] == ["second version, rewritten"]
        assert reader.consistency_problems(config) == []


def test_search_returns_chunks_with_sources(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        _put(writer, "/fruit.txt", "apples and pears are fruit")
        _put(writer, "/cars.txt", "engines wheels and brakes")
        writer.commit()
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
        hits = reader.searcher(config).dense(EMBEDDER.embed_queries(["brakes and wheels"]), 2)[0]
    assert [h.source for h in hits] == ["/cars.txt", "/fruit.txt"]
    assert hits[0].score > hits[1].score and hits[0].retrievers == ("dense",)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with (
        EmbeddedWriter.open(config.kb_dir, config, dimension=64),
        pytest.raises(KnowledgeBaseLockedError, match="another process"),
    ):
        EmbeddedWriter.open(config.kb_dir, config, dimension=64)
    EmbeddedWriter.open(config.kb_dir, config, dimension=64).close()


def test_model_mismatch_is_refused_with_reindex_hint(tmp_path: Path) -> None:
    config = _one_document_kb(tmp_path)
    other = _config(tmp_path, model="other/model")
    with pytest.raises(ManifestMismatchError, match=r"rag ingest PATH --reindex"):
        EmbeddedKnowledgeBase.open(config.kb_dir, other)
    with pytest.raises(ManifestMismatchError, match="fake/hashing-64"):
        EmbeddedWriter.open(config.kb_dir, other, dimension=32)
    changed_chunking = AppConfig.model_validate(
        {"kb_dir": config.kb_dir, "embedding": {"model": "fake/hashing-64"}, "chunking": {"chunk_tokens": 99}}
    )
    with pytest.raises(ManifestMismatchError, match="chunk_tokens"):
        EmbeddedWriter.open(config.kb_dir, changed_chunking, dimension=64)


def _with_vectors(config: AppConfig, backend: str, quantization: str = "none") -> AppConfig:
    embedding = config.embedding.model_copy(update={"backend": backend, "quantization": quantization})
    return config.model_copy(update={"embedding": embedding})


def test_float32_vectors_of_any_backend_share_an_index_and_int8_ones_do_not(tmp_path: Path) -> None:
    config = _one_document_kb(tmp_path)  # torch, unquantised
    for backend in ("onnx", "openvino"):
        EmbeddedKnowledgeBase.open(config.kb_dir, _with_vectors(config, backend)).close()
        EmbeddedWriter.open(config.kb_dir, _with_vectors(config, backend), dimension=64).close()
    int8 = _with_vectors(config, "onnx", "int8")
    with pytest.raises(ManifestMismatchError, match=r"float32 vectors.*onnx int8 vectors.*--reindex.*'none'"):
        EmbeddedKnowledgeBase.open(config.kb_dir, int8)
    with pytest.raises(ManifestMismatchError, match=r"--reindex"):
        EmbeddedWriter.open(config.kb_dir, int8, dimension=64)

    with EmbeddedWriter.open(config.kb_dir, int8, dimension=64, reindex=True) as writer:
        _put(writer, "/a.txt", "text")
        writer.commit()
    with EmbeddedKnowledgeBase.open(config.kb_dir, int8) as reader:
        assert (reader.manifest.embedding_backend, reader.manifest.embedding_quantization) == ("onnx", "int8")
    assert json.loads((config.kb_dir / "manifest.json").read_text())["embedding_quantization"] == "int8"
    # An int8 index is searched only with the same backend's int8 vectors.
    for other in (config, _with_vectors(config, "onnx"), _with_vectors(config, "openvino", "int8")):
        with pytest.raises(ManifestMismatchError, match=r"holds onnx int8 vectors.*--reindex.*backend = 'onnx'"):
            EmbeddedKnowledgeBase.open(config.kb_dir, other)


def test_a_manifest_from_before_the_backend_setting_reads_as_torch_float32(tmp_path: Path) -> None:
    config = _one_document_kb(tmp_path)
    with sqlite3.connect(config.kb_dir / "kb.sqlite") as db:
        stored = json.loads(db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0])
        del stored["embedding_backend"], stored["embedding_quantization"]
        db.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", (json.dumps(stored),))
    with EmbeddedKnowledgeBase.open(config.kb_dir, _with_vectors(config, "openvino")) as reader:
        assert (reader.manifest.embedding_backend, reader.manifest.embedding_quantization) == ("torch", "none")
    with pytest.raises(ManifestMismatchError, match=r"--reindex"):
        EmbeddedKnowledgeBase.open(config.kb_dir, _with_vectors(config, "openvino", "int8"))


def test_a_database_a_first_ingest_has_not_yet_given_tables_reads_as_empty(tmp_path: Path) -> None:
    """A reader racing the first ingest can meet kb.sqlite before its tables exist."""
    tmp_path.joinpath("kb").mkdir()
    sqlite3.connect(tmp_path / "kb" / "kb.sqlite").close()
    with pytest.raises(KnowledgeBaseNotFoundError, match="is empty"):
        EmbeddedKnowledgeBase.open(tmp_path / "kb")


def test_missing_knowledge_base_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseNotFoundError, match=r"rag ingest PATH --kb"):
        EmbeddedKnowledgeBase.open(tmp_path / "nothing")


def test_reindex_keeps_old_state_until_commit(tmp_path: Path) -> None:
    config = _one_document_kb(tmp_path)
    other = _config(tmp_path, model="other/model")
    writer = EmbeddedWriter.open(config.kb_dir, other, dimension=32, reindex=True)
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
        assert reader.manifest.embedding_model == "fake/hashing-64"
        assert reader.stats().chunks == 1
    writer.close()  # abandoned: nothing changes
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
        assert reader.consistency_problems(config) == []
        assert len(reader.load_index(config)) == 1
        assert np.asarray(reader.load_index(config).ids()).size == 1


def test_keyword_index_always_describes_the_committed_chunks(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        apples = _put(writer, "/a.txt", "apples grow on trees")
        writer.commit(keyword=True)
        assert (config.kb_dir / keyword_dir_name(1)).is_dir()
        with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
            _, keyword = reader.load_indexes(config)
            assert [cid for cid, _ in keyword.search("apple trees", 5)] == apples
            bananas = _put(writer, "/b.txt", "bananas are yellow")
            writer.commit()  # an intermediate commit: the BM25 files on disk are one generation old
            _, keyword = reader.load_indexes(config)
            assert [cid for cid, _ in keyword.search("yellow bananas", 5)] == bananas
            writer.commit(keyword=True)
            assert sorted(p.name for p in config.kb_dir.glob("bm25-*")) == [keyword_dir_name(2)]
            _, keyword = reader.load_indexes(config)
            assert len(keyword) == 2 and [cid for cid, _ in keyword.search("bananas", 5)] == bananas


def test_a_keyword_index_from_an_earlier_tokenization_is_rebuilt(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        filing = _put(writer, "/a.txt", "Net sales for FY2023 rose.")
        writer.commit(keyword=True)
    folder = config.kb_dir / keyword_dir_name(1)
    meta = json.loads((folder / "keyword.json").read_text())
    (folder / "keyword.json").write_text(json.dumps({**meta, "tokenization": 1}))  # as an older version wrote it
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
        _, keyword = reader.load_indexes(config)  # rebuilt in memory, with this version's tokens
        assert [cid for cid, _ in keyword.search("2023", 5)] == filing
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        writer.commit(keyword=True)  # a run with nothing new still writes it again
    assert sorted(p.name for p in config.kb_dir.glob("bm25-*")) == [keyword_dir_name(1)]
    assert json.loads((folder / "keyword.json").read_text())["tokenization"] == TOKENIZATION


def test_a_chunks_table_from_before_headers_were_stored_gains_the_column(tmp_path: Path) -> None:
    config = _one_document_kb(tmp_path)
    database = sqlite3.connect(config.kb_dir / "kb.sqlite")
    database.execute("ALTER TABLE chunks DROP COLUMN context")
    database.commit()
    database.close()
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        _put(writer, "/b.txt", "bananas are yellow")
        writer.commit(keyword=True)
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as reader:
        assert reader.stats().documents == 2 and reader.consistency_problems(config) == []
