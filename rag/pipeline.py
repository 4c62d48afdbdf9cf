"""The question-to-answer pipeline: retrieve, build the prompts, generate, cite, in batched stages.

``build_pipeline(config, generator)`` wires the stages from one configuration; the caller picks
the generator (the server client for interactive use, in-process vLLM for batches) and owns it.
`rag ask`, `rag ask --batch`, the page and `rag eval` all go through these stages:

- :meth:`Pipeline.retrieve_many`: rankings for many questions (one embedding call, one search);
- :meth:`Pipeline.build_prompts`: each prompt sized to the context, with the answer grammar of
  ``answer.citations = "constrained"`` (:mod:`rag.grammar`) attached;
- :meth:`Pipeline.generate`: one generator call (in-process vLLM batches it);
- :meth:`Pipeline.cite_many`: citations checked, attributed and decided (:class:`rag.citations.Citer`).

Each stage's output is kept on the :class:`Answer`, so evaluation and debugging see everything.
Timings are per question: ``generate_s`` is a question's share of its generator call (vLLM
returns a batch at once, so that is the cost per question), ``generate_call_s`` the whole call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rag.citations import Citer
from rag.components import Components
from rag.config import AppConfig
from rag.embedder import Embedder
from rag.generator import Generation, Generator
from rag.grammar import answer_pattern
from rag.kb import KnowledgeBase, open_knowledge_base
from rag.prompt import ChatTokenizer, Prompt, PromptBuilder
from rag.retriever import Retriever, retrieve_many
from rag.types import Answer, ScoredChunk


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """A piece of an answer being streamed."""

    text: str


class Pipeline:
    """Answers questions. Build it with :func:`build_pipeline` (or pass the stages in, as the page does).

    ``retriever`` may be None for closed-book use: every prompt then has no passages.
    """

    def __init__(
        self,
        config: AppConfig,
        retriever: Retriever | None,
        prompts: PromptBuilder,
        generator: Generator,
        citer: Citer,
    ) -> None:
        self.config = config
        self.retriever = retriever
        self.prompts = prompts
        self.generator = generator
        self.citer = citer

    # -- the stages ----------------------------------------------------------------------------

    def retrieve_many(self, questions: Sequence[str], k: int | None = None) -> list[list[ScoredChunk]]:
        """The best ``k`` passages (default ``retrieval.top_k``) for each question, in one batch."""
        if self.retriever is None:
            return [[] for _ in questions]
        return retrieve_many(self.retriever, questions, k or self.config.retrieval.top_k)

    def build_prompt(self, question: str, passages: Sequence[ScoredChunk]) -> Prompt:
        """The prompt over the first ``retrieval.top_k`` of ``passages`` (those that fit), with the
        answer grammar attached in constrained mode. Raises :class:`rag.errors.QuestionTooLongError`."""
        prompt = self.prompts.build(question, passages[: self.config.retrieval.top_k])
        if self.config.answer.citations != "constrained":
            return prompt
        answer = self.config.answer
        pattern = answer_pattern(len(prompt.passages), answer.max_sentences)
        return dataclasses.replace(prompt, constraint=pattern)

    def generate(self, prompts: Sequence[Prompt]) -> tuple[list[Generation], float]:
        """One generator call for all ``prompts``: the generations and the call's seconds."""
        started = time.perf_counter()
        generations = self.generator.generate(prompts)
        return generations, time.perf_counter() - started

    def cite_many(
        self,
        prompts: Sequence[Prompt],
        raws: Sequence[str],
        timings: Sequence[dict[str, float]],
        generations: Sequence[Generation | None] | None = None,
    ) -> list[Answer]:
        """The :class:`Answer` of each raw output: citations checked, attributed and decided.

        ``timings`` (per question) gain ``cite_s`` (the question's share of the batch) and
        ``total_s``; ``completion_tokens`` is added where a generation gives it.
        """
        started = time.perf_counter()
        cited = self.citer.cite_many(
            raws, [prompt.passages for prompt in prompts], [prompt.question for prompt in prompts]
        )
        share = (time.perf_counter() - started) / max(1, len(prompts))
        answers = []
        gens = generations if generations is not None else [None] * len(prompts)
        for prompt, raw, result, times, generation in zip(prompts, raws, cited, timings, gens, strict=True):
            times = {**times, "cite_s": share}
            times["total_s"] = sum(v for key, v in times.items() if key.endswith("_s") and key not in _NOT_ADDED)
            if generation is not None and generation.completion_tokens is not None:
                times["completion_tokens"] = float(generation.completion_tokens)
            answers.append(
                Answer(
                    question=prompt.question,
                    text=result.text,
                    abstained=result.abstained,
                    citations=result.citations,
                    retrieved=prompt.passages,
                    model=self.generator.model_id,
                    timings=times,
                    prompt=prompt.text,
                    raw_output=raw,
                    sentences=result.sentences,
                    unverified=result.unverified,
                )
            )
        return answers

    # -- the stages composed -------------------------------------------------------------------

    def answer(self, question: str) -> Answer:
        return self.answer_many([question])[0]

    def answer_many(self, questions: Sequence[str]) -> list[Answer]:
        """All answers through the batched stages: one retrieval batch, one generator call."""
        started = time.perf_counter()
        rankings = self.retrieve_many(questions)
        retrieved = time.perf_counter()
        prompts = [self.build_prompt(question, ranking) for question, ranking in zip(questions, rankings, strict=True)]
        built = time.perf_counter()
        generations, call_s = self.generate(prompts)
        n = max(1, len(questions))
        timings = [
            {
                "retrieve_s": (retrieved - started) / n,
                "prompt_s": (built - retrieved) / n,
                "generate_s": call_s / n,
                "generate_call_s": call_s,
            }
            for _ in questions
        ]
        return self.cite_many(prompts, [g.text for g in generations], timings, generations)

    def stream(self, question: str) -> Iterator[AnswerDelta | Answer]:
        """Pieces of the answer as they are generated, then the cited :class:`Answer`."""
        started = time.perf_counter()
        ranking = self.retrieve_many([question])[0]
        retrieved = time.perf_counter()
        prompt = self.build_prompt(question, ranking)
        timings = {"retrieve_s": retrieved - started, "prompt_s": time.perf_counter() - retrieved}
        began = time.perf_counter()
        pieces: list[str] = []
        first: float | None = None
        for piece in self.generator.stream(prompt):
            first = first if first is not None else time.perf_counter() - began
            pieces.append(piece)
            yield AnswerDelta(piece)
        timings |= {"generate_s": time.perf_counter() - began, "first_token_s": first or 0.0}
        yield self.cite_many([prompt], ["".join(pieces)], [timings])[0]


# Timings that are part of another (first_token_s of generate_s, the batch call of its share).
_NOT_ADDED = frozenset({"first_token_s", "generate_call_s", "total_s"})


def build_pipeline(
    config: AppConfig,
    generator: Generator,
    kb: KnowledgeBase | None = None,
    embedder: Embedder | None = None,
    *,
    closed_book: bool = False,
    components: Components | None = None,
) -> Pipeline:
    """Open the knowledge base, load the embedder, the prompt tokenizer and the support scorer, wire the stages.

    ``kb`` and ``embedder`` (loaded) can be passed in to share them; the caller keeps owning a
    ``kb`` it passes (one opened here lives as long as the pipeline). ``closed_book`` builds a
    pipeline that retrieves nothing and opens no knowledge base. ``components`` builds the rest
    (default: ``Components(config)``; the ``rag`` command passes its own, tests a fake).

    Raises :class:`rag.errors.KnowledgeBaseNotFoundError` (with the ingest command to run) when
    there is no knowledge base, and :class:`rag.errors.ModelLoadError` when a model cannot load.
    """
    components = components or Components(config)
    if embedder is None:
        embedder = components.embedder()
    retriever = None
    if not closed_book:
        kb = kb or open_knowledge_base(config.kb_dir, config)
        retriever = components.retriever(kb, embedder)
    prompts = prompt_builder(config, components.chat_tokenizer())
    return Pipeline(config, retriever, prompts, generator, components.citer(embedder))


def prompt_builder(config: AppConfig, tokenizer: ChatTokenizer) -> PromptBuilder:
    """A :class:`PromptBuilder` for ``config``'s context length and answer budget."""
    return PromptBuilder(tokenizer, config.generator.max_model_len, config.generator.max_answer_tokens)
