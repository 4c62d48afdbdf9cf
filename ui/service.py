"""What the web page does, without Streamlit: answer with per-session settings, describe the
knowledge base, locate a citation in its page, and add uploaded files.

One :class:`ChatService` serves every browser session of a process (the page caches it with
``st.cache_resource``): the models and the knowledge base are loaded once, in :meth:`load`,
and the parts that cost nothing (retriever, prompt sizing, generator client) are assembled per
question from that session's :class:`ChatSettings`. The shared parts are safe to use from
several threads; generation runs outside any lock, so concurrent sessions stream together and
the vLLM server batches them. ``bench/page.py`` measures the page through this class.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingest.job import IngestSummary, run_ingest
from ingest.loaders import SUPPORTED_EXTENSIONS
from ingest.progress import IngestReporter
from rag.citations import Citer
from rag.components import Components
from rag.config import AppConfig
from rag.embedder import Embedder
from rag.errors import KnowledgeBaseNotFoundError
from rag.files import write_bytes_atomic
from rag.generator import Generator
from rag.kb import KnowledgeBase, RunInfo, Searcher, open_knowledge_base
from rag.pipeline import AnswerDelta, Pipeline, prompt_builder
from rag.prompt import ChatTokenizer
from rag.retriever import CrossEncoderScorer, assemble_retriever
from rag.server import api_key, is_healthy
from rag.types import Answer, Chunk, Document, Page
from ui.render import sanitize_filename

UPLOAD_DIR_NAME = "uploads"


def upload_folder(config: AppConfig) -> Path:
    """Where the page keeps uploaded files: inside an embedded knowledge base's directory, and for
    one in Milvus under ``data_dir`` (``uploads/COLLECTION``), since its files are not in Milvus."""
    if isinstance(config.kb_dir, Path):
        return config.kb_dir / UPLOAD_DIR_NAME
    return config.data_dir / UPLOAD_DIR_NAME / config.kb_dir.collection


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """What one browser session may change; everything else comes from the configuration."""

    top_k: int
    mode: Literal["hybrid", "dense"]
    rerank: bool
    temperature: float
    max_answer_tokens: int

    @classmethod
    def defaults(cls, config: AppConfig) -> ChatSettings:
        mode = config.retrieval.mode if config.retrieval.mode in ("hybrid", "dense") else "hybrid"
        return cls(
            top_k=config.retrieval.top_k,
            mode=mode,
            rerank=config.retrieval.reranker_model is not None,
            temperature=config.generator.temperature,
            max_answer_tokens=config.generator.max_answer_tokens,
        )

    def apply(self, config: AppConfig) -> AppConfig:
        """``config`` with these settings, validated as the configuration would be."""
        data = config.model_dump(mode="python")
        data["retrieval"] |= {"top_k": self.top_k, "mode": self.mode}
        if not self.rerank:
            data["retrieval"]["reranker_model"] = None
        data["generator"] |= {"temperature": self.temperature, "max_answer_tokens": self.max_answer_tokens}
        return AppConfig.model_validate(data)


@dataclass(frozen=True, slots=True)
class KnowledgeBaseFacts:
    directory: str  # where the knowledge base is, as --kb takes it
    documents: int
    pages: int
    chunks: int
    embedding_model: str
    generator_model: str
    last_run: RunInfo | None


@dataclass(frozen=True, slots=True)
class SourceView:
    """A passage located in its file: the page's text and where the passage (or quote) is."""

    document: Document
    page: Page
    start: int
    end: int

    @property
    def path(self) -> Path:
        return Path(self.document.source)

    @property
    def is_pdf(self) -> bool:
        return self.document.mime_type == "application/pdf"


@dataclass(frozen=True, slots=True)
class UploadResult:
    saved: list[Path]
    rejected: list[tuple[str, str]]  # (name as uploaded, why)
    summary: IngestSummary | None


def server_readiness(components: Components) -> str | None:
    """None when the configured model server answers; else what to tell the user."""
    config = components.config
    server = components.model_server()
    if not server.managed:
        if server.status().healthy:
            return None
        return (
            f"The model server at {components.server_url()} (generator.base_url) does not answer. "
            "It runs elsewhere: start it there, or check generator.api_key."
        )
    host, port = config.generator.host, config.generator.port
    if is_healthy(host, port, key=api_key(config)):
        return None
    status = server.status()
    if status.running:
        return "The model server is still starting (about a minute on a CPU). Ask again in a moment."
    return (
        f"The model server at {host}:{port} is not running. Start it with `rag model start`, "
        "or run `rag serve`, which starts it with the page."
    )


class ChatService:
    """The page's work for every session of one process. Call :meth:`load` once, first.

    ``components`` builds the models and the model server's clients (default:
    ``Components(config)``; the tests pass a fake). ``embedder``, loaded, is shared instead of
    loading another (the benchmarks ingest with it first). ``readiness`` says whether questions
    can be answered (default :func:`server_readiness`).
    """

    def __init__(
        self,
        config: AppConfig,
        *,
        components: Components | None = None,
        embedder: Embedder | None = None,
        readiness: Callable[[Components], str | None] = server_readiness,
    ) -> None:
        self.config = config
        self._components = components or Components(config)
        self._embedder = embedder
        self._chat_tokenizer: ChatTokenizer | None = None
        self._readiness = readiness
        self._rerank_scorer: CrossEncoderScorer | None = None
        self._citer: Citer | None = None
        self._kb: KnowledgeBase | None = None
        self._searcher: Searcher | None = None
        self._generators: dict[tuple[float, int], Generator] = {}
        self._lock = threading.Lock()  # guards the lazily opened KB, the indexes and the clients

    def load(self) -> None:
        """Load the embedding model, the generator's tokenizer and a configured reranker.

        Raises :class:`rag.errors.ModelLoadError` when one cannot load. A missing or empty
        knowledge base is not an error here: the page offers to add documents.
        """
        if self._embedder is None:
            self._embedder = self._components.embedder()
        if self._chat_tokenizer is None:
            self._chat_tokenizer = self._components.chat_tokenizer()
        if self._citer is None:
            self._citer = self._components.citer(self._embedder)
        if self._rerank_scorer is None:
            self._rerank_scorer = self._components.reranker()

    @property
    def reranker_available(self) -> bool:
        return self._rerank_scorer is not None

    def knowledge_base(self) -> KnowledgeBase | None:
        """The knowledge base, opened on first use; None while it does not exist or is empty."""
        with self._lock:
            if self._kb is None:
                try:
                    self._kb = open_knowledge_base(self.config.kb_dir, self.config)
                except KnowledgeBaseNotFoundError:
                    return None
            return self._kb

    def facts(self) -> KnowledgeBaseFacts | None:
        kb = self.knowledge_base()
        if kb is None:
            return None
        stats = kb.stats()
        return KnowledgeBaseFacts(
            directory=str(self.config.kb_dir),
            documents=stats.documents,
            pages=stats.pages,
            chunks=stats.chunks,
            embedding_model=stats.embedding_model,
            generator_model=self.config.generator.model,
            last_run=stats.last_run,
        )

    def readiness(self) -> str | None:
        """None when questions can be answered; else why not, in words for the user."""
        if self.knowledge_base() is None:
            return (
                f"The knowledge base at {self.config.kb_dir} is empty. Add documents from the sidebar, "
                f"or run `rag ingest PATH --kb {self.config.kb_dir}`."
            )
        return self._readiness(self._components)

    def pipeline(self, settings: ChatSettings) -> Pipeline:
        """A pipeline with this session's settings over the shared models and indexes (cheap)."""
        kb = self.knowledge_base()
        if kb is None:
            raise KnowledgeBaseNotFoundError(
                f"knowledge base {self.config.kb_dir} is empty; add documents with "
                f"`rag ingest PATH --kb {self.config.kb_dir}`"
            )
        assert self._embedder is not None and self._chat_tokenizer is not None, "call load() first"
        assert self._citer is not None, "call load() first"
        config = settings.apply(self.config)
        reranker = self._rerank_scorer if settings.rerank else None
        retriever = assemble_retriever(config.retrieval, self._current_searcher(kb), self._embedder, reranker)
        prompts = prompt_builder(config, self._chat_tokenizer)
        return Pipeline(config, retriever, prompts, self._generator(config), self._citer)

    def stream(self, question: str, settings: ChatSettings) -> Iterator[AnswerDelta | Answer]:
        """The answer's pieces as they are generated, then the cited :class:`Answer`."""
        return self.pipeline(settings).stream(question)

    def _current_searcher(self, kb: KnowledgeBase) -> Searcher:
        """Search over the committed state, loaded again when an ingest has moved it on."""
        generation = kb.generation()
        with self._lock:
            if self._searcher is None or self._searcher.generation != generation:
                self._searcher = kb.searcher(self.config)
            return self._searcher

    def _generator(self, config: AppConfig) -> Generator:
        key = (config.generator.temperature, config.generator.max_answer_tokens)
        with self._lock:
            if key not in self._generators:
                self._generators[key] = self._components.server_generator(config)
            return self._generators[key]

    def source(self, chunk: Chunk, start: int | None = None, end: int | None = None) -> SourceView | None:
        """The page ``chunk`` came from, with the span to mark (the chunk's, unless given);
        None when the document has since been removed or changed."""
        kb = self.knowledge_base()
        if kb is None:
            return None
        document = kb.document(chunk.document_id)
        page = kb.page(chunk.document_id, chunk.page)
        if document is None or page is None or page.text[chunk.start : chunk.end] != chunk.text:
            return None
        return SourceView(document, page, chunk.start if start is None else start, chunk.end if end is None else end)

    def add_files(self, files: Sequence[tuple[str, bytes]], reporter: IngestReporter | None = None) -> UploadResult:
        """Store uploaded files in ``<kb_dir>/uploads`` and ingest them as ``rag ingest`` would.

        Names are sanitised (:func:`ui.render.sanitize_filename`); files over
        ``ui.max_upload_mb`` or of an unsupported type are rejected, with the reason. A name
        already taken by different content gets a numbered name; the same content is reused.
        """
        limit = self.config.ui.max_upload_mb
        upload_dir = upload_folder(self.config)
        saved: list[Path] = []
        rejected: list[tuple[str, str]] = []
        for name, data in files:
            safe = sanitize_filename(name)
            if Path(safe).suffix.lower() not in SUPPORTED_EXTENSIONS:
                supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
                rejected.append((name, f"unsupported file type (supported: {supported})"))
            elif len(data) > limit * 1024 * 1024:
                size = len(data) / 1024 / 1024
                rejected.append((name, f"{size:.1f} MB is over the {limit:g} MB limit (ui.max_upload_mb)"))
            else:
                saved.append(_store_upload(upload_dir, safe, data))
        if not saved:
            return UploadResult(saved, rejected, None)
        assert self._embedder is not None, "call load() first"
        # An upload is the least trusted input there is: it is loaded in one worker process under
        # ingest.file_timeout_s and ingest.file_memory_mb, so a zip bomb or a PDF that never ends
        # fails alone instead of taking the page's process with it. Starting the worker costs
        # 1.5-3 s per upload on 2 cores.
        config = self.config.model_copy(update={"ingest": self.config.ingest.model_copy(update={"workers": 1})})
        summary = run_ingest(saved, config, self._embedder, reporter)
        return UploadResult(saved, rejected, summary)


def _store_upload(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``directory/name`` (or ``stem-2.ext``... when taken by other content).

    ``name`` must be a bare file name (:func:`ui.render.sanitize_filename`). A symbolic link or
    anything but a regular file at a name counts as taken: it is never written through, read,
    or handed to ingestion, so the stored file is always inside ``directory``."""
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"not a bare file name: {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(name).stem, Path(name).suffix
    digest = hashlib.sha256(data).digest()
    for attempt in range(1, 10_000):
        target = directory / (name if attempt == 1 else f"{stem}-{attempt}{suffix}")
        if target.is_symlink() or (target.exists() and not target.is_file()):
            continue
        if target.exists():
            if hashlib.sha256(target.read_bytes()).digest() == digest:
                return target
            continue
        write_bytes_atomic(target, data)
        return target
    raise OSError(f"{directory}: no free name for {name}")
