"""The knowledge base contract: the same tests for every backend (the embedded directory and Milvus
Lite, both real), through the factories everything above the store uses."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.chunking import chunk_pages
from rag.config import AppConfig, load_config
from rag.errors import KnowledgeBaseNotFoundError, ManifestMismatchError
from rag.kb import KnowledgeBaseWriter, document_id_for, open_knowledge_base, open_writer
from rag.types import Chunk, Document, Page, TextBox
from tests.fakes import FakeEmbedder

EMBEDDER = FakeEmbedder()
BACKENDS = ["embedded", "milvus-lite"]


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AppConfig]:
    location = str(tmp_path / "kb") if request.param == "embedded" else f"milvus-lite:{tmp_path / 'kb.db'}"
    yield load_config(overrides={"kb_dir": location, "embedding.model": "fake/hashing-64"}, environ={})


def _document(source: str, pages: tuple[Page, ...]) -> tuple[Document, list[Chunk]]:
    doc_id = document_id_for(source)
    version = hashlib.sha256("|".join(page.text for page in pages).encode()).hexdigest()
    chunks = chunk_pages(doc_id, version, pages, EMBEDDER.tokenizer, AppConfig().chunking)
    document = Document(doc_id, source, version, "text/plain", Path(source).stem, len(pages), 10, 0, "now")
    return document, chunks


def _put(writer: KnowledgeBaseWriter, source: str, *texts: str) -> list[int]:
    pages = tuple(Page(number, text) for number, text in enumerate(texts, start=1))
    document, chunks = _document(source, pages)
    writer.put_document(document, pages, chunks, EMBEDDER.embed_documents([c.text for c in chunks]))
    return [c.id for c in chunks]


def _write(config: AppConfig, files: dict[str, tuple[str, ...]]) -> dict[str, list[int]]:
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        ids = {source: _put(writer, source, *texts) for source, texts in files.items()}
        writer.commit(keyword=True)
    return ids


def test_a_knowledge_base_that_does_not_exist_is_not_found(config: AppConfig) -> None:
    with pytest.raises(KnowledgeBaseNotFoundError, match="rag ingest"):
        open_knowledge_base(config.kb_dir, config)


def test_added_documents_are_found_by_id_page_and_search(config: AppConfig) -> None:
    ids = _write(
        config,
        {
            "/docs/fruit.txt": ("apples grow on trees in the orchard", "bananas are yellow"),
            "/docs/cars.txt": ("brakes",),
        },
    )
    with open_knowledge_base(config.kb_dir, config) as kb:
        assert kb.manifest.documents == 2 and kb.manifest.chunks == sum(map(len, ids.values()))
        assert [d.source for d in kb.documents()] == ["/docs/cars.txt", "/docs/fruit.txt"]
        fruit = document_id_for("/docs/fruit.txt")
        stored = kb.document(fruit)
        assert stored is not None and stored.title == "fruit" and stored.page_count == 2
        page = kb.page(fruit, 2)
        assert page is not None and page.text == "bananas are yellow"
        assert kb.page(fruit, 3) is None
        found = kb.chunks([*ids["/docs/fruit.txt"], 999])
        assert set(found) == set(ids["/docs/fruit.txt"]) and {source for _, source in found.values()} == {
            "/docs/fruit.txt"
        }
        assert [chunk.id for chunk, _ in kb.all_chunks()] == ids["/docs/cars.txt"] + ids["/docs/fruit.txt"]

        searcher = kb.searcher(config)
        [dense] = searcher.dense(EMBEDDER.embed_queries(["bananas are yellow"]), 1)
        assert dense[0].chunk.page == 2 and dense[0].source == "/docs/fruit.txt" and dense[0].retrievers == ("dense",)
        keyword = searcher.keyword(["orchard", "brakes", "", "zebra"], 5)
        assert [hit.chunk.page for hit in keyword[0]] == [1] and keyword[0][0].retrievers == ("bm25",)
        assert [hit.source for hit in keyword[1]] == ["/docs/cars.txt"]
        assert keyword[2] == [] and keyword[3] == []
        assert kb.consistency_problems(config) == []


def test_stemmed_and_mixed_words_match_as_keyword_search_promises(config: AppConfig) -> None:
    _write(config, {"/a.txt": ("revenue grew in FY2023",), "/b.txt": ("the cherries were running",)})
    with open_knowledge_base(config.kb_dir, config) as kb:
        searcher = kb.searcher(config)
        assert [hit.source for hit in searcher.keyword(["2023"], 5)[0]] == ["/a.txt"]
        assert [hit.source for hit in searcher.keyword(["cherry runs"], 5)[0]] == ["/b.txt"]


def test_a_changed_document_replaces_its_chunks_and_pages(config: AppConfig) -> None:
    old = _write(config, {"/a.txt": ("first version text", "a second page")})["/a.txt"]
    new = _write(config, {"/a.txt": ("second version text",)})["/a.txt"]
    assert set(old).isdisjoint(new)
    with open_knowledge_base(config.kb_dir, config) as kb:
        assert [chunk.id for chunk, _ in kb.all_chunks()] == new
        assert kb.chunks(old) == {}
        assert kb.page(document_id_for("/a.txt"), 2) is None
        [hits] = kb.searcher(config).keyword(["first"], 5)
        assert hits == []
        assert kb.manifest.chunks == len(new) and kb.consistency_problems(config) == []


def test_a_removed_document_leaves_nothing_behind(config: AppConfig) -> None:
    ids = _write(config, {"/a.txt": ("apples",), "/b.txt": ("bananas",)})
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        writer.remove_document(document_id_for("/a.txt"))
        writer.commit(keyword=True)
    with open_knowledge_base(config.kb_dir, config) as kb:
        assert [d.source for d in kb.documents()] == ["/b.txt"]
        assert kb.chunks(ids["/a.txt"]) == {} and kb.page(document_id_for("/a.txt"), 1) is None
        assert [
            hit.source for hits in kb.searcher(config).dense(EMBEDDER.embed_queries(["apples"]), 5) for hit in hits
        ] == ["/b.txt"]
        assert kb.consistency_problems(config) == []


def test_uncommitted_work_is_dropped_when_the_writer_closes(config: AppConfig) -> None:
    _write(config, {"/a.txt": ("apples",)})
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        _put(writer, "/b.txt", "bananas")
    with open_knowledge_base(config.kb_dir, config) as kb:
        assert [d.source for d in kb.documents()] == ["/a.txt"]


def test_the_writer_knows_what_is_stored(config: AppConfig) -> None:
    _write(config, {"/a.txt": ("apples", " \n"), "/b.txt": ("bananas",)})
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        stored = writer.stored_documents()
        assert set(stored) == {"/a.txt", "/b.txt"} and stored["/a.txt"].id == document_id_for("/a.txt")
        assert [page.text for page in writer.stored_pages(stored["/a.txt"].id)] == ["apples", " \n"]
        assert writer.sources_with_empty_pages() == {"/a.txt"}
        writer.update_file_stat(stored["/b.txt"].id, 1234, 5678)
        writer.commit()
        assert writer.built_with is not None and writer.built_with.documents == 2
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        b = writer.stored_documents()["/b.txt"]
        assert (b.size_bytes, b.mtime_ns, b.content_hash) == (1234, 5678, stored["/b.txt"].content_hash)


def test_long_pages_and_ocr_boxes_are_kept_whole(config: AppConfig) -> None:
    long_text = "word " * 20_000  # 100,000 characters: more than one Milvus VARCHAR holds
    boxes = (TextBox(0, 4, 0.1, 0.1, 0.2, 0.15),)
    pages = (Page(1, long_text), Page(2, "scanned line", None, "tesseract", boxes))
    document, chunks = _document("/scan.pdf", pages)
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        writer.put_document(document, pages, chunks, EMBEDDER.embed_documents([c.text for c in chunks]))
        writer.commit(keyword=True)
    with open_knowledge_base(config.kb_dir, config) as kb:
        assert kb.page(document.id, 1) == pages[0]
        assert kb.page(document.id, 2) == pages[1]
        assert kb.stats().ocr_pages == 1 and kb.stats().pages == 2


def test_a_knowledge_base_built_with_another_model_is_refused(config: AppConfig) -> None:
    _write(config, {"/a.txt": ("apples",)})
    other = config.model_copy(update={"embedding": config.embedding.model_copy(update={"model": "fake/other"})})
    with pytest.raises(ManifestMismatchError, match="--reindex"):
        open_knowledge_base(other.kb_dir, other)
    with pytest.raises(ManifestMismatchError):
        open_writer(other.kb_dir, other, dimension=EMBEDDER.dimension)
    chunking = config.model_copy(update={"chunking": config.chunking.model_copy(update={"chunk_tokens": 99})})
    with pytest.raises(ManifestMismatchError, match="chunk_tokens=200"):
        open_writer(chunking.kb_dir, chunking, dimension=EMBEDDER.dimension)


def test_the_run_log_records_runs_and_failed_files(config: AppConfig) -> None:
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        first = writer.start_run()
        _put(writer, "/a.txt", "apples")
        writer.record_file(first, "/a.txt", "added", chunks=1)
        writer.record_file(first, "/bad.pdf", "failed", "encrypted: a password is required")
        writer.commit(keyword=True)
        writer.finish_run(first, "completed with failures", {"added": 1, "failed": 1})
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        second = writer.start_run()  # killed: never finished
    assert second > first
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        writer.commit()
    with open_knowledge_base(config.kb_dir, config) as kb:
        last = kb.stats().last_run
        assert last is not None and last.id == second and last.status == "interrupted"
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        third = writer.start_run()
        writer.finish_run(third, "completed", {"added": 0})
    with open_knowledge_base(config.kb_dir, config) as kb:
        last = kb.stats().last_run
        assert last is not None and (last.id, last.status, last.summary) == (third, "completed", {"added": 0})
        assert last.finished_at is not None and last.failed == []


def test_failed_files_of_the_last_run_are_listed(config: AppConfig) -> None:
    with open_writer(config.kb_dir, config, dimension=EMBEDDER.dimension) as writer:
        run = writer.start_run()
        _put(writer, "/a.txt", "apples")
        writer.record_file(run, "/z.pdf", "failed", "not a PDF file")
        writer.record_file(run, "/bad.pdf", "failed", "encrypted")
        writer.commit(keyword=True)
        writer.finish_run(run, "completed with failures", {"failed": 2})
    with open_knowledge_base(config.kb_dir, config) as kb:
        last = kb.stats().last_run
        assert last is not None and [(f.path, f.reason) for f in last.failed] == [
            ("/bad.pdf", "encrypted"),
            ("/z.pdf", "not a PDF file"),
        ]


def test_the_generation_moves_on_with_each_commit(config: AppConfig) -> None:
    _write(config, {"/a.txt": ("apples",)})
    with open_knowledge_base(config.kb_dir, config) as kb:
        before = kb.generation()
        assert kb.searcher(config).generation == before
        _write(config, {"/b.txt": ("bananas",)})
        assert kb.generation() != before
        assert [d.source for d in kb.documents()] == ["/a.txt", "/b.txt"]


def test_milvus_index_follows_the_configured_kind() -> None:
    from rag.config import IndexConfig
    from rag.kb.milvus import _index_params

    assert _index_params(IndexConfig())[0] == "FLAT"
    assert _index_params(IndexConfig(kind="hnsw", hnsw_m=16, hnsw_ef_search=80)) == (
        "HNSW",
        {"M": 16, "efConstruction": 32},
        {"ef": 80},
    )
    assert _index_params(IndexConfig(kind="ivf", ivf_nlist=64, ivf_nprobe=8))[::2] == ("IVF_FLAT", {"nprobe": 8})
    gpu = {kind: _index_params(IndexConfig(kind=kind, milvus_gpu=True))[0] for kind in ("flat", "ivf", "hnsw")}
    assert gpu == {"flat": "GPU_BRUTE_FORCE", "ivf": "GPU_IVF_FLAT", "hnsw": "GPU_CAGRA"}


def test_an_hnsw_knowledge_base_in_milvus_lite_searches(tmp_path: Path) -> None:
    location = f"milvus-lite:{tmp_path / 'kb.db'}"
    config = load_config(
        overrides={"kb_dir": location, "embedding.model": "fake/hashing-64", "index.kind": "hnsw"}, environ={}
    )
    _write(config, {"/a.txt": ("apples grow on trees",), "/b.txt": ("bananas are yellow",)})
    with open_knowledge_base(config.kb_dir, config) as kb:
        assert kb.stats().index == "milvus HNSW"
        [hits] = kb.searcher(config).dense(EMBEDDER.embed_queries(["bananas are yellow"]), 1)
        assert hits[0].source == "/b.txt"


def test_milvus_lite_releases_its_file_when_the_last_client_closes_or_an_open_is_refused(tmp_path: Path) -> None:
    from milvus_lite.server_manager import server_manager_instance

    location = f"milvus-lite:{tmp_path / 'kb.db'}"
    config = load_config(overrides={"kb_dir": location, "embedding.model": "fake/hashing-64"}, environ={})
    _write(config, {"/a.txt": ("apples",)})
    served = str(tmp_path / "kb.db")
    assert served not in server_manager_instance._servers  # another process may open it now
    other = config.model_copy(update={"embedding": config.embedding.model_copy(update={"model": "fake/other"})})
    with pytest.raises(ManifestMismatchError):
        open_knowledge_base(other.kb_dir, other)
    assert served not in server_manager_instance._servers
    with open_knowledge_base(config.kb_dir, config) as first, open_knowledge_base(config.kb_dir, config) as second:
        first.close()  # one of two clients gone: the other still reads
        assert [d.source for d in second.documents()] == ["/a.txt"]
        assert served in server_manager_instance._servers
    assert served not in server_manager_instance._servers
