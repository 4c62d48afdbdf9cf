"""Fakes for fast unit tests. They are not the real thing and are named as such.

``FakeEmbedder`` hashes words into a small vector space: deterministic, instant, and close
enough to real embeddings that texts sharing words score higher than texts that do not.
``FakeChatTokenizer`` counts words and renders a toy chat template; ``FakeGenerator`` returns
canned answers and records which questions each call was given (``FakeEngineGenerator`` also
remembers being loaded and closed, as in-process vLLM is); ``FakeComponents`` builds these in
place of the real models; ``FakeIngestReporter`` records what an ingestion run reports;
``FakeOcrEngine`` "reads" the same lines on every picture.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ingest.ocr import OcrLine
from ingest.progress import FileEvent
from rag.components import Components
from rag.config import AppConfig, EmbeddingConfig
from rag.generator import Generation, Generator
from rag.index import Vectors
from rag.prompt import Message, Prompt

_TOKEN = re.compile(r"\w+|[^\w\s]")


class FakeTokenizer:
    """Words and punctuation marks are tokens."""

    def __init__(self, max_tokens: int = 64) -> None:
        self._max_tokens = max_tokens

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in _TOKEN.finditer(text)]


class FakeEmbedder:
    """A deterministic bag-of-words hashing embedder (a fake: no model behind it)."""

    def __init__(self, model_id: str = "fake/hashing-64", dimension: int = 64, max_tokens: int = 64) -> None:
        self._model_id = model_id
        self._dimension = dimension
        self._tokenizer = FakeTokenizer(max_tokens)
        self.encoded_batches: list[int] = []
        self.embedded_documents: list[str] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    def load(self) -> None:
        pass

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        self.encoded_batches.append(len(texts))
        self.embedded_documents.extend(texts)
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        vectors = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "big") % self._dimension
                vectors[row, bucket] += 1.0
            vectors[row, 0] += 1e-3  # never the zero vector
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors


class FakeChatTokenizer:
    """A fake: one token per whitespace-separated word; the template adds a few words per message."""

    def count(self, text: str) -> int:
        return len(text.split())

    def render(self, messages: Sequence[Message]) -> str:
        return "".join(f"<|{m['role']}|> {m['content']} <|end|> " for m in messages) + "<|assistant|>"


class FakeGenerator:
    """A fake generator: the canned output for each prompt's question (``default`` for others).

    ``calls`` holds the questions of every ``generate`` call, in order, so a test can check what
    was generated and how it was batched.
    """

    def __init__(
        self,
        answers: Mapping[str, str] | None = None,
        default: str = "I don't know: the documents do not say.",
        model_id: str = "fake/generator",
    ) -> None:
        self._answers = dict(answers or {})
        self._default = default
        self._model_id = model_id
        self.calls: list[list[str]] = []
        self.prompts: list[Prompt] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        self.calls.append([prompt.question for prompt in prompts])
        self.prompts.extend(prompts)
        texts = [self._answers.get(prompt.question, self._default) for prompt in prompts]
        return [Generation(text, len(text.split()), "stop", 0.01) for text in texts]

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """The same output, a word at a time (each piece but the first starts with its space)."""
        words = self.generate([prompt])[0].text.split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word


class FakeEngineGenerator(FakeGenerator):
    """A fake of in-process vLLM (``rag.generator.VllmGenerator``): canned answers, and it
    remembers the model folder it was given and being loaded and closed."""

    def __init__(self, answers: Mapping[str, str] | None = None, location: str = "/models/fake") -> None:
        super().__init__(answers)
        self.location, self.loaded, self.closed = location, False, False

    def load(self) -> None:
        self.loaded = True

    def close(self) -> None:
        self.closed = True


class FakeComponents(Components):
    """A fake of ``rag.components.Components``: fakes in place of the models, no model loaded.

    The embedder is a ``FakeEmbedder`` with the configured model's id (so it opens knowledge
    bases built with ``embedding.model = "fake/hashing-64"``), the chat tokenizer a
    ``FakeChatTokenizer``, each in-process generator a new ``FakeEngineGenerator`` with
    ``answers`` (kept in ``engines``), and each server client what ``server_generator(config)``
    gives (default: a ``FakeGenerator`` with ``answers``). Retrievers and citers are built as the
    real factory builds them, over these fakes; a configured reranker or NLI model would load.
    """

    def __init__(
        self,
        config: AppConfig,
        *,
        answers: Mapping[str, str] | None = None,
        server_generator: Callable[[AppConfig], Generator] | None = None,
    ) -> None:
        super().__init__(config)
        self._answers = dict(answers or {})
        self._server_generator = server_generator or (lambda _config: FakeGenerator(self._answers))
        self.engines: list[FakeEngineGenerator] = []

    def embedder(self, embedding: EmbeddingConfig | None = None) -> FakeEmbedder:
        return FakeEmbedder(model_id=(embedding or self.config.embedding).model)

    def chat_tokenizer(self) -> FakeChatTokenizer:
        return FakeChatTokenizer()

    def vllm_generator(self) -> FakeEngineGenerator:
        self.engines.append(FakeEngineGenerator(self._answers))
        return self.engines[-1]

    def server_generator(self, config: AppConfig | None = None) -> Generator:
        return self._server_generator(config or self.config)


class FakeIngestReporter:
    """A fake ingest reporter: records what the job reports (the start's counts, each file's
    event); ``on_start`` runs when the job starts loading, after discovery."""

    def __init__(self, on_start: Callable[[], object] | None = None) -> None:
        self.events: list[FileEvent] = []
        self.messages: list[str] = []
        self.started: tuple[int, int] | None = None
        self._on_start = on_start

    def start(self, files: int, total_bytes: int) -> None:
        self.started = (files, total_bytes)
        if self._on_start is not None:
            self._on_start()

    def file_done(self, event: FileEvent) -> None:
        self.events.append(event)

    def message(self, text: str) -> None:
        self.messages.append(text)

    def finish(self) -> None:
        pass


class FakeOcrEngine:
    """A fake OCR engine (no model): every picture reads as ``lines``, each a text and its box as
    fractions of the picture (left, top, right, bottom); the sizes of the pictures it was given
    are kept in ``pictures``."""

    name = "fake-ocr"

    def __init__(self, lines: Sequence[tuple[str, float, float, float, float]]) -> None:
        self._lines = list(lines)
        self.pictures: list[tuple[int, int]] = []

    def read(self, image: Any, dpi: int) -> list[OcrLine]:
        width, height = image.size
        self.pictures.append((width, height))
        return [
            OcrLine(text, left * width, top * height, right * width, bottom * height)
            for text, left, top, right, bottom in self._lines
        ]
