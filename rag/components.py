"""The one place that builds the product's components from an :class:`AppConfig`.

The ``rag`` command, the web page's service, the evaluation runner and the benchmarks get their
embedder, generators, tokenizer, retriever, support scorer and model server from a
:class:`Components`, and :func:`rag.pipeline.build_pipeline` wires what it builds. Unit tests
hand in a fake one (``tests.fakes.FakeComponents``) instead of patching module attributes.

Constructing a ``Components`` costs nothing. Every call of a method builds a new component that
the caller owns; share one by passing it on. Nothing is cached here, so no model outlives the
code that asked for it. Each method says whether what it returns is loaded.

Importing this module imports no model library and not FAISS: each implementation is imported
in the method that builds it, so a command that needs one component loads nothing else. The
implementations import torch, vLLM and bm25s only when they load. Keep it that way: vLLM's CPU
worker processes fail to start with numba (which bm25s brings) loaded, and a spawned worker
re-imports its parent's main module (``rag.keyword._bm25s``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag.config import AppConfig, EmbeddingConfig

if TYPE_CHECKING:
    from rag.citations import Citer
    from rag.embedder import Embedder
    from rag.generator import EngineGenerator, Generator
    from rag.kb import KnowledgeBase
    from rag.prompt import ChatTokenizer
    from rag.retriever import CrossEncoderScorer, Retriever
    from rag.server import ModelServerControl
    from rag.support import SupportScorer


class Components:
    """Builds the components ``config`` describes. Cheap to construct; see the module doc."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config

    # -- models --------------------------------------------------------------------------------

    def embedder(self, embedding: EmbeddingConfig | None = None) -> Embedder:
        """The embedding model of ``embedding`` (default: the configuration's), loaded.

        ``rag check --repair`` passes the settings a knowledge base was built with, which may
        differ from the configuration's. With ``embedding.backend`` onnx or openvino the model's
        export is made into ``data_dir`` on first use (seconds for MiniLM) and reused after.
        Raises :class:`rag.errors.ModelLoadError`.
        """
        from rag.embedder import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(embedding or self.config.embedding, data_dir=self.config.data_dir)
        embedder.load()
        return embedder

    def chat_tokenizer(self) -> ChatTokenizer:
        """The generator model's tokenizer and chat template, loaded: prompts are sized with it.

        Raises :class:`rag.errors.ModelLoadError`, also when the default generator is not
        provisioned yet (the message says to run ``make install``).
        """
        from rag.models import resolve_generator_location
        from rag.prompt import HuggingFaceChatTokenizer

        return HuggingFaceChatTokenizer(resolve_generator_location(self.config))

    def vllm_generator(self) -> EngineGenerator:
        """vLLM in this process for the configured generator, not loaded.

        The caller calls ``load()`` when it is ready to wait for the engine (about a minute on
        a CPU, so build what can fail quickly first) and ``close()`` when done. A script that
        loads one needs the ``if __name__ == "__main__":`` guard (vLLM spawns its engine).
        Raises :class:`rag.errors.ModelLoadError` when the default generator is not provisioned.
        """
        from rag.generator import VllmGenerator
        from rag.models import resolve_generator_location

        return VllmGenerator(self.config, resolve_generator_location(self.config))

    def reranker(self) -> CrossEncoderScorer | None:
        """The cross-encoder of ``retrieval.reranker_model``, loaded; None when none is configured.
        Raises :class:`rag.errors.ModelLoadError`."""
        if not self.config.retrieval.reranker_model:
            return None
        from rag.retriever import CrossEncoderScorer

        scorer = CrossEncoderScorer(self.config.retrieval.reranker_model)
        scorer.load()
        return scorer

    def support_scorer(self, embedder: Embedder | None) -> SupportScorer:
        """The scorer that decides whether a passage supports a claim, loaded: NLI when
        ``citations.support_model`` is set, else embedding+lexical over ``embedder`` (loaded,
        shared, not reloaded), else lexical. Raises :class:`rag.errors.ModelLoadError`."""
        from rag.support import EmbeddingSupport, LexicalSupport, NliSupport

        if self.config.citations.support_model:
            scorer = NliSupport(self.config.citations.support_model)
            scorer.load()
            return scorer
        if embedder is not None:
            return EmbeddingSupport(embedder)
        return LexicalSupport()

    # -- what is built over the models ---------------------------------------------------------

    def retriever(self, kb: KnowledgeBase, embedder: Embedder) -> Retriever:
        """The retriever ``retrieval`` asks for (dense, keyword or hybrid, pages ranked as
        ``page_scoring`` says, reranked when a reranker is configured) over one consistent
        snapshot of ``kb``'s indexes. ``embedder`` must be loaded; a reranker is loaded here.

        Raises :class:`rag.errors.KnowledgeBaseDamagedError` when an index cannot be read.
        """
        from rag.retriever import assemble_retriever

        return assemble_retriever(self.config.retrieval, kb.searcher(self.config), embedder, self.reranker())

    def citer(self, embedder: Embedder | None) -> Citer:
        """The configured :class:`Citer`, with :meth:`support_scorer` over ``embedder``."""
        from rag.citations import Citer

        return Citer(self.config.answer, self.config.citations, self.support_scorer(embedder))

    # -- the model server ----------------------------------------------------------------------

    def server_url(self) -> str:
        """The configured model server's OpenAI-compatible API: ``generator.base_url`` when set,
        else the local server's ``http://host:port/v1``."""
        from rag.server import api_base_url

        generator = self.config.generator
        return generator.base_url or api_base_url(generator.host, generator.port)

    def server_generator(self, config: AppConfig | None = None) -> Generator:
        """A client of the model server at :meth:`server_url`, sampling as ``config`` says
        (default: this configuration; the page passes each session's settings). Cheap: it
        connects on its first request and raises :class:`rag.errors.GeneratorUnavailableError`
        then if the server does not answer."""
        from rag.generator import ServerGenerator

        return ServerGenerator(config or self.config, self.server_url())

    def model_server(self) -> ModelServerControl:
        """Starts, watches and stops the configured vLLM server; building it starts nothing. With
        ``generator.base_url`` set, the server there, which it only watches (``managed`` is False)."""
        from rag.server import ExternalModelServer, ModelServer

        return ExternalModelServer(self.config) if self.config.generator.base_url else ModelServer(self.config)
