from __future__ import annotations

import pytest

from rag.errors import QuestionTooLongError
from rag.prompt import SYSTEM_PROMPT, PromptBuilder
from rag.types import Chunk, ScoredChunk
from tests.fakes import FakeChatTokenizer


def _hit(n: int, words: int) -> ScoredChunk:
    text = " ".join(f"w{n}_{i}" for i in range(words))
    chunk = Chunk(n, "d", n, text, n, None, 0, len(text), words)
    return ScoredChunk(chunk=chunk, source=f"/docs/file{n}.pdf", score=1.0 / n, retrievers=("dense",))


def test_all_passages_fit_and_are_numbered_with_file_and_page() -> None:
    builder = PromptBuilder(FakeChatTokenizer(), max_model_len=2000, max_answer_tokens=100)
    prompt = builder.build("What is w1?", [_hit(1, 10), _hit(2, 10)])
    assert prompt.dropped == 0 and len(prompt.passages) == 2
    assert "[1] file1.pdf, page 1\nw1_0" in prompt.text and "[2] file2.pdf, page 2" in prompt.text
    assert prompt.messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert prompt.text.startswith(f"<|system|> {SYSTEM_PROMPT}"), "fixed text first, for the prefix cache"
    assert prompt.text.index("Question: What is w1?") > prompt.text.index("[2] file2.pdf")


def test_passages_that_do_not_fit_are_dropped_lowest_rank_first() -> None:
    tokenizer = FakeChatTokenizer()
    builder = PromptBuilder(tokenizer, max_model_len=400, max_answer_tokens=100)
    passages = [_hit(n, 60) for n in range(1, 8)]
    prompt = builder.build("Which?", passages)
    assert 0 < len(prompt.passages) < 7
    assert list(prompt.passages) == passages[: len(prompt.passages)]
    assert prompt.dropped == 7 - len(prompt.passages)
    assert prompt.token_count == tokenizer.count(prompt.text) <= 300
    bigger = PromptBuilder(tokenizer, max_model_len=400 + 70, max_answer_tokens=100).build("Which?", passages)
    assert len(bigger.passages) == len(prompt.passages) + 1


def test_a_question_longer_than_the_context_is_refused() -> None:
    builder = PromptBuilder(FakeChatTokenizer(), max_model_len=300, max_answer_tokens=100)
    with pytest.raises(QuestionTooLongError, match="shorten the question"):
        builder.build("word " * 300, [_hit(1, 5)])


def test_no_passages_still_makes_a_prompt() -> None:
    prompt = PromptBuilder(FakeChatTokenizer(), 1000, 100).build("Anything?", [])
    assert prompt.passages == () and "(no passages were found)" in prompt.text
