"""The page's memory under many sessions: what ``bench/soak.py`` found, kept from coming back.

The page's RSS grew with every answer under eight sessions. Nothing was kept (Python objects
did not grow; ``malloc_trim`` gave the memory back): each session thread that ran the embedding
model got its own glibc malloc arena, and each arena kept the freed peak of the largest forward
pass it ran. So every encode runs on the embedder's one thread, and the page's per-answer state
must not grow either. Neither test measures RSS, which other work on the machine moves.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.job import run_ingest
from rag.config import AppConfig, EmbeddingConfig
from rag.embedder import SentenceTransformerEmbedder
from rag.generator import Generation
from rag.prompt import Prompt
from tests.fakes import FakeComponents, FakeEmbedder
from ui.service import ChatService, ChatSettings

SESSIONS = 8
WARM_UP = 2  # answers per session before the count


class ThreadRecordingModel:
    """A fake sentence-transformers model: records the thread of every encode and whether two
    ever ran at once; the vector of a text is its length, repeated."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.overlapped = False
        self._running = 0
        self._guard = threading.Lock()

    def _encode(self, texts: list[str], **_options: Any) -> np.ndarray:
        with self._guard:
            self.threads.add(threading.get_ident())
            self._running += 1
            self.overlapped |= self._running > 1
        time.sleep(0.001)  # long enough for callers to pile up
        with self._guard:
            self._running -= 1
        return np.array([[float(len(text))] * 4 for text in texts], dtype=np.float32)

    encode_document = _encode
    encode_query = _encode


def _in_sessions(work: Any, sessions: int = SESSIONS) -> list[int]:
    """Run ``work(session)`` on ``sessions`` threads at once; their idents."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [thread.ident for thread in threads if thread.ident is not None]


def test_every_encode_runs_on_the_embedders_one_thread_whatever_the_caller() -> None:
    embedder = SentenceTransformerEmbedder(EmbeddingConfig())
    model = ThreadRecordingModel()
    embedder._model = model  # type: ignore[assignment]  # loaded, without the weights
    results: dict[int, list[bool]] = {}

    def session(n: int) -> None:
        texts = ["x" * (n + i) for i in range(1, 4)]
        outcomes = []
        for _ in range(5):
            documents = embedder.embed_documents(texts)
            queries = embedder.embed_queries(texts[:1])
            outcomes.append(documents[:, 0].tolist() == [len(t) for t in texts] and queries[0, 0] == len(texts[0]))
        results[n] = outcomes

    callers = _in_sessions(session)
    assert all(all(outcomes) for outcomes in results.values()) and len(results) == SESSIONS
    assert len(model.threads) == 1, f"encodes ran on {len(model.threads)} threads: one malloc arena each"
    assert not model.threads & set(callers), "the sessions' own threads never encode"
    assert not model.overlapped, "encodes take turns (a fast tokenizer cannot be shared at once)"


def test_an_encode_failure_reaches_the_caller() -> None:
    class FailingModel:
        def encode_document(self, texts: list[str], **_options: Any) -> np.ndarray:
            raise RuntimeError("out of memory")

    embedder = SentenceTransformerEmbedder(EmbeddingConfig())
    embedder._model = FailingModel()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="out of memory"):
        embedder.embed_documents(["a passage"])
    embedder._model = ThreadRecordingModel()  # type: ignore[assignment]
    assert embedder.embed_documents(["ab"]).shape == (1, 4), "the encoding thread survives a failure"


class CitingGenerator:
    """Streams a cited sentence of the first passage; keeps nothing (unlike the recording fake)."""

    model_id = "fake/citing"

    def _text(self, prompt: Prompt) -> str:
        first = prompt.passages[0].chunk.text.split(".")[0] if prompt.passages else "I don't know"
        return f"{first} [1]. The documents say so [2]."

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        return [Generation(self._text(p), 10, "stop", 0.01) for p in prompts]

    def stream(self, prompt: Prompt) -> Iterator[str]:
        for word in self._text(prompt).split(" "):
            yield word + " "


@pytest.fixture
def service(make_config: Any, tmp_path: Path) -> ChatService:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "handbook.md").write_text(
        "# Leave\n\nFull-time employees receive 28 days of paid vacation per calendar year. "
        "Up to 5 unused days carry over.\n\n# Travel\n\nThe hotel limit in Hamburg is 180 euros per night.\n"
    )
    (docs / "robot.md").write_text(
        "# R2 robot\n\nThe R2 robot carries a payload of 40 kg. Its battery lasts 8 hours.\n"
    )
    config: AppConfig = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    run_ingest([docs], config, FakeEmbedder())
    generator = CitingGenerator()
    service = ChatService(
        config,
        components=FakeComponents(config, server_generator=lambda _config: generator),
        readiness=lambda _components: None,
    )
    service.load()
    return service


def _live_objects() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects())


def test_answers_leave_nothing_behind_in_the_shared_service(service: ChatService) -> None:
    settings = ChatSettings.defaults(service.config)
    questions = ["How many vacation days?", "What payload can the R2 robot carry?", "Hotel limit in Hamburg?"]
    answered: list[bool] = []
    warmed, counted = threading.Barrier(SESSIONS + 1), threading.Barrier(SESSIONS + 1)

    def session(n: int) -> None:
        # Sessions live through the whole test, as the soak's do: what a thread's own state
        # holds is counted both times, and no thread's teardown races the count.
        for i in range(WARM_UP + 8):
            if i == WARM_UP:  # caches that fill once are full (regexes, the indexes, the client)
                warmed.wait()
                counted.wait()
            events = list(service.stream(questions[(n + i) % len(questions)], settings))
            answered.append(bool(events) and hasattr(events[-1], "citations"))

    threads = [threading.Thread(target=session, args=(n,)) for n in range(SESSIONS)]
    for thread in threads:
        thread.start()
    warmed.wait()
    _live_objects()  # the count's own first run fills ABC caches (50 entries)
    before = _live_objects()
    counted.wait()
    for thread in threads:
        thread.join()
    # 64 answers since the count: one object kept per answer (an Answer, a generator, a cache
    # entry) is 64 of a kind.
    grown = {kind: count for kind, count in (_live_objects() - before).items() if count >= SESSIONS * 4}
    assert all(answered) and len(answered) == SESSIONS * (WARM_UP + 8)
    assert not grown, f"objects kept per answer: {grown}"
