"""The question-to-answer pipeline: retrieve, build the prompt, generate, cite.

``build_pipeline(config, generator)`` wires the stages from one configuration; the caller picks
the generator (the server client for interactive use, in-process vLLM for batches) and owns it.
Each stage's output is kept on the :class:`Answer`, so evaluation and debugging see everything.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rag.citations import cite
from rag.config import AppConfig
from rag.embedder import Embedder, SentenceTransformerEmbedder
from rag.generator import Generation, Generator
from rag.models import resolve_generator_location
from rag.prompt import HuggingFaceChatTokenizer, Prompt, PromptBuilder
from rag.retriever import Retriever, build_retriever
from rag.store import KnowledgeBase
from rag.types import Answer, ScoredChunk


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """A piece of an answer being streamed."""

    text: str


class Pipeline:
    """Answers questions over one knowledge base. Build it with :func:`build_pipeline`."""

    def __init__(
        self, config: AppConfig, kb: KnowledgeBase, retriever: Retriever, prompts: PromptBuilder, generator: Generator
    ) -> None:
        self.config = config
        self.kb = kb
        self.retriever = retriever
        self.prompts = prompts
        self.generator = generator

    def retrieve(self, question: str, k: int | None = None) -> list[ScoredChunk]:
        return self.retriever.retrieve(question, k or self.config.retrieval.top_k)

    def prepare(self, question: str) -> tuple[Prompt, dict[str, float]]:
        """Retrieve and build the prompt, with the time each took."""
        started = time.perf_counter()
        passages = self.retrieve(question)
        retrieved = time.perf_counter()
        prompt = self.prompts.build(question, passages)
        return prompt, {"retrieve_s": retrieved - started, "prompt_s": time.perf_counter() - retrieved}

    def answer(self, question: str) -> Answer:
        return self.answer_many([question])[0]

    def answer_many(self, questions: Sequence[str]) -> list[Answer]:
        """All answers from one generator call: in-process vLLM batches them."""
        prepared = [self.prepare(question) for question in questions]
        generations = self.generator.generate([prompt for prompt, _ in prepared])
        return [
            self._finish(prompt, generation.text, {**timings, "generate_s": generation.seconds}, generation)
            for (prompt, timings), generation in zip(prepared, generations, strict=True)
        ]

    def stream(self, question: str) -> Iterator[AnswerDelta | Answer]:
        """Pieces of the answer as they are generated, then the cited :class:`Answer`."""
        prompt, timings = self.prepare(question)
        started = time.perf_counter()
        pieces: list[str] = []
        first: float | None = None
        for piece in self.generator.stream(prompt):
            first = first if first is not None else time.perf_counter() - started
            pieces.append(piece)
            yield AnswerDelta(piece)
        timings = {**timings, "generate_s": time.perf_counter() - started, "first_token_s": first or 0.0}
        yield self._finish(prompt, "".join(pieces), timings, None)

    def _finish(self, prompt: Prompt, raw: str, timings: dict[str, float], generation: Generation | None) -> Answer:
        return cited_answer(prompt, raw, timings, self.generator.model_id, generation)


def cited_answer(
    prompt: Prompt, raw: str, timings: dict[str, float], model_id: str, generation: Generation | None = None
) -> Answer:
    """The :class:`Answer` for a generator's ``raw`` output to ``prompt``: citations checked and located.

    The last stage of :class:`Pipeline`, for callers that run the stages themselves (the
    evaluation runner batches retrieval and generation across questions). ``timings`` gains
    ``total_s``, and ``completion_tokens`` when ``generation`` is given.
    """
    cited = cite(raw, prompt.passages)
    timings = {**timings, "total_s": sum(v for k, v in timings.items() if k != "first_token_s")}
    if generation is not None:
        timings["completion_tokens"] = float(generation.completion_tokens)
    return Answer(
        question=prompt.question,
        text=cited.text,
        abstained=cited.abstained,
        citations=cited.citations,
        retrieved=prompt.passages,
        model=model_id,
        timings=timings,
        prompt=prompt.text,
        raw_output=raw,
    )


def build_pipeline(
    config: AppConfig, generator: Generator, kb: KnowledgeBase | None = None, embedder: Embedder | None = None
) -> Pipeline:
    """Open the knowledge base, load the embedder and the prompt tokenizer, wire the stages.

    ``kb`` and ``embedder`` (loaded) can be passed in to share them between pipelines.

    Raises :class:`rag.errors.KnowledgeBaseNotFoundError` (with the ingest command to run) when
    there is no knowledge base, and :class:`rag.errors.ModelLoadError` when a model cannot load.
    """
    kb = kb or KnowledgeBase.open(config.kb_dir, config)
    if embedder is None:
        embedder = SentenceTransformerEmbedder(config.embedding)
        embedder.load()
    retriever = build_retriever(config, kb, embedder)
    tokenizer = HuggingFaceChatTokenizer(resolve_generator_location(config))
    prompts = PromptBuilder(tokenizer, config.generator.max_model_len, config.generator.max_answer_tokens)
    return Pipeline(config, kb, retriever, prompts, generator)
