"""The prompt: fixed instructions first, then numbered passages, then the question.

The instructions come first and never change, so vLLM's prefix cache reuses their KV blocks
across questions. The prompt is measured in tokens with the served model's own tokenizer and
chat template: passages that do not fit beside the question and the answer's token budget are
dropped lowest rank first, so an over-long prompt never reaches the server.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rag.errors import ModelLoadError, QuestionTooLongError, first_line
from rag.types import ScoredChunk

ABSTENTION = "I don't know: the documents do not say."
SYSTEM_PROMPT = (
    "Answer the question using only the numbered passages given with it. "
    "Write one or two short sentences. End each sentence with the numbers of the passages it "
    "comes from in square brackets, like [1] or [1][2]. "
    f'If the passages do not answer the question, reply exactly: "{ABSTENTION}"'
)

Message = dict[str, str]


class ChatTokenizer(Protocol):
    """The served model's tokenizer and chat template."""

    def count(self, text: str) -> int:
        """Tokens in ``text`` as the model will see it (no special tokens added)."""
        ...

    def render(self, messages: Sequence[Message]) -> str:
        """``messages`` through the chat template, ending where the answer begins."""
        ...


class HuggingFaceChatTokenizer:
    """A transformers tokenizer with its chat template; loads from the model's folder or hub id."""

    def __init__(self, location: str) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok: Any = AutoTokenizer.from_pretrained(location)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot load"
            raise ModelLoadError(
                f"the tokenizer of generator model {location!r} cannot be loaded ({first_line(exc)}); "
                "a hub id needs internet access or a cached copy: set generator.model to a local folder"
            ) from None
        # Fast tokenizers are not safe to share between threads ("Already borrowed"); the web
        # page's sessions share this one.
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        with self._lock:
            return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: Sequence[Message]) -> str:
        with self._lock:
            return str(self._tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt ready for a generator: ``passages[i]`` is the passage numbered ``i + 1``.

    ``constraint`` is a regex the answer must match (:mod:`rag.grammar`), which generators
    enforce with vLLM's structured outputs; None leaves the answer free.
    """

    question: str
    messages: tuple[Message, ...]
    text: str
    token_count: int
    passages: tuple[ScoredChunk, ...]
    dropped: int
    constraint: str | None = None


def passage_header(number: int, hit: ScoredChunk) -> str:
    where = Path(hit.source).name
    if hit.chunk.page is not None:
        where += f", page {hit.chunk.page}"
    return f"[{number}] {where}"


def _user_message(question: str, passages: Sequence[ScoredChunk]) -> str:
    blocks = [f"{passage_header(n, hit)}\n{hit.chunk.text}" for n, hit in enumerate(passages, start=1)]
    body = "\n\n".join(blocks) if blocks else "(no passages were found)"
    return f"Passages:\n\n{body}\n\nQuestion: {question}"


class PromptBuilder:
    """Builds prompts that fit ``max_model_len`` with room for ``max_answer_tokens``."""

    def __init__(self, tokenizer: ChatTokenizer, max_model_len: int, max_answer_tokens: int) -> None:
        self._tokenizer = tokenizer
        self._budget = max_model_len - max_answer_tokens

    def build(self, question: str, passages: Sequence[ScoredChunk]) -> Prompt:
        """The prompt with as many of ``passages`` (best first) as fit the token budget.

        Raises :class:`QuestionTooLongError` when the question alone does not fit.
        """
        _, _, bare = self._render_full(question, [])
        if bare > self._budget:
            raise QuestionTooLongError(
                f"the question needs {bare} prompt tokens with the instructions, but only "
                f"{self._budget} fit the model's context beside the answer; shorten the question"
            )
        # Estimate each passage's cost once, then confirm by rendering the whole prompt; the
        # loop only repeats when the template's joins made the estimate a few tokens short.
        costs = [
            self._tokenizer.count(f"{passage_header(n, hit)}\n{hit.chunk.text}\n\n")
            for n, hit in enumerate(passages, 1)
        ]
        keep, used = 0, bare
        while keep < len(passages) and used + costs[keep] <= self._budget:
            used += costs[keep]
            keep += 1
        while True:
            messages, text, count = self._render_full(question, passages[:keep])
            if count <= self._budget or keep == 0:
                break
            keep -= 1
        return Prompt(question, messages, text, count, tuple(passages[:keep]), len(passages) - keep)

    def _render_full(self, question: str, passages: Sequence[ScoredChunk]) -> tuple[tuple[Message, ...], str, int]:
        messages: tuple[Message, ...] = (
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": _user_message(question, passages)},
        )
        text = self._tokenizer.render(messages)
        return messages, text, self._tokenizer.count(text)
