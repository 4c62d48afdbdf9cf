"""Citations: read the model's ``[n]`` markers, attribute what it left uncited, check every one.

What :class:`Citer` does to a generator's raw output, in order:

1. **Clean.** Passage headers the model echoed ("[1] handbook.pdf, page 2") are removed;
   markers whose number has no passage behind it are dropped. In ``attributed`` mode every
   marker is dropped: the model's own are not trusted.
2. **Bound.** Sentences are split (markers right after a full stop belong to the sentence
   before) and dropped when they make no claim: a repeat of an earlier one (same content
   words), a passage's file name and page, a question (it ends in "?", or says nothing the
   question did not: the small model restates the question, which the passages then "support").
   At most ``answer.max_sentences`` are kept. The small default model otherwise repeats one
   sentence until its token budget runs out.
3. **Check.** Each sentence's own markers become ``origin="model"`` citations: the span of the
   cited passage (one sentence, or two adjacent ones) that best supports the sentence, with
   its support score (:mod:`rag.support`). A citation is ``supported`` when its support is at
   least ``citations.min_support``.
4. **Attribute.** A sentence with no supported citation is matched against every passage's
   spans; the best, if supported, becomes an ``origin="attributed"`` citation and its marker is
   added to the sentence (as RAGFlow's ``insert_citations`` does).
5. **Decide.** A sentence without a supported citation is *unverified* (the page shows it
   apart). An answer abstains when it says it does not know, or when none of its verified
   sentences addresses the question (shares a content word with it): a sentence copied from a
   passage is always supported, and the small model copies ones that answer nothing
   ("Northwind Robotics GmbH and its subsidiaries." for a question about vacation days).

The quote is always words of the passage's own page text (never its header), and its offsets
are the page's, so the page can highlight the very words.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.config import AnswerConfig, CitationsConfig
from rag.grammar import MARKER, keep_markers, parse_markers, strip_markers
from rag.support import LexicalSupport, SupportScorer, lexical_support
from rag.types import Citation, CitationOrigin, ScoredChunk
from rag.words import content_words

# Markers are read with rag.grammar's one pattern (MARKER, parse_markers, strip_markers).
_SENTENCE_END = re.compile(rf"(?<=[.!?])(?:\s*{MARKER.pattern})*(?=\s|$)|\n+")
# A sentence ends at . ! or ? followed by a space or the end, or at a line break: "4.2" and
# "e.g." inside a sentence do not end it.
_PASSAGE_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s|$)|(?=\n)|$)")
_ABSTAIN = re.compile(
    r"\b(i don'?t know|i do not know|documents? do(?:es)? not (?:say|mention|contain)|"
    r"passages? do(?:es)? not (?:say|mention|contain)|cannot be answered|no information)\b",
    re.IGNORECASE,
)
# Words that turn a restated question into a sentence without adding a claim (as content words: stemmed).
_FILLER = frozenset(content_words("question answer passage document state say according"))
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t]+(?=[.,;:!?]|$)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CitedAnswer:
    """The cleaned answer text, its citations, the spans of its sentences and of the unverified
    ones among them, the verdict."""

    text: str
    citations: tuple[Citation, ...]
    sentences: tuple[tuple[int, int], ...]
    unverified: tuple[tuple[int, int], ...]
    abstained: bool


def says_unknown(text: str) -> bool:
    """Whether ``text`` says that it does not know or that the documents do not say (the abstention phrases)."""
    return bool(_ABSTAIN.search(text))


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of an answer; markers right after a sentence's full stop belong to it."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def passage_spans(passage: str) -> list[tuple[int, int]]:
    """Candidate supporting spans of a passage: each sentence and each pair of adjacent ones."""
    sentences = [(m.start(), m.end()) for m in _PASSAGE_SENTENCE.finditer(passage) if m.group().strip()]
    if not sentences:
        return [(0, len(passage))]
    return sentences + [(a[0], b[1]) for a, b in itertools.pairwise(sentences)]


def best_support(claim: str, passage: str) -> tuple[int, int, float]:
    """The span of ``passage`` sharing the most content words with ``claim``: ``(start, end, share)``."""
    return _best_span(passage, [lexical_support(claim, passage[a:b]) for a, b in passage_spans(passage)])


def _best_span(passage: str, scores: Sequence[float]) -> tuple[int, int, float]:
    """The best-scoring span of :func:`passage_spans`; at equal score the shorter (one sentence)."""
    best = (0, len(passage), -1.0)
    for (start, end), score in zip(passage_spans(passage), scores, strict=True):
        if score > best[2] or (score == best[2] and end - start < best[1] - best[0]):
            best = (start, end, score)
    start, end, score = best
    while start < end and passage[start].isspace():
        start += 1
    return start, end, max(score, 0.0)


@dataclass(slots=True)
class _Sentence:
    claim: str  # the words, markers removed
    text: str  # as written, markers included
    markers: list[int]
    on_topic: bool  # shares a content word with the question (always, when there is no question)


class Citer:
    """Checks and completes the citations of raw answers (see the module docstring).

    Cheap to build; ``support`` must be ready to score (load it first). Safe to share between
    threads as long as ``support`` is.
    """

    def __init__(self, answer: AnswerConfig, citations: CitationsConfig, support: SupportScorer | None = None) -> None:
        self._answer = answer
        self._min_support = citations.min_support
        self._support = support or LexicalSupport()

    @property
    def support_name(self) -> str:
        return self._support.name

    def cite(self, raw: str, passages: Sequence[ScoredChunk], question: str = "") -> CitedAnswer:
        return self.cite_many([raw], [passages], [question])[0]

    def cite_many(
        self,
        raws: Sequence[str],
        passage_lists: Sequence[Sequence[ScoredChunk]],
        questions: Sequence[str] | None = None,
    ) -> list[CitedAnswer]:
        """Each raw answer checked against its own passages (and question, whose restatement is
        no claim); all support scores in one scorer call."""
        asked = questions if questions is not None else [""] * len(raws)
        answers = [
            self._sentences(raw, passages, question)
            for raw, passages, question in zip(raws, passage_lists, asked, strict=True)
        ]
        # Every sentence against every span of every passage: the model's markers need their
        # passages' spans, attribution needs all of them, and one batch is cheaper than two.
        pairs: list[tuple[str, str]] = []
        for sentences, passages in zip(answers, passage_lists, strict=True):
            for sentence in sentences:
                for hit in passages:
                    pairs += [(sentence.claim, hit.chunk.text[a:b]) for a, b in passage_spans(hit.chunk.text)]
        scores = iter(self._support.score(pairs))
        results = []
        for sentences, passages in zip(answers, passage_lists, strict=True):
            table = [[[next(scores) for _ in passage_spans(hit.chunk.text)] for hit in passages] for _ in sentences]
            results.append(self._decide(sentences, passages, table))
        return results

    def _sentences(self, raw: str, passages: Sequence[ScoredChunk], question: str) -> list[_Sentence]:
        text = raw
        for number, hit in enumerate(passages, start=1):
            text = _without_header_echo(text, number, hit)
        valid = range(1, len(passages) + 1) if self._answer.citations != "attributed" else range(0)
        text = _drop_invalid_markers(text, valid)
        headers = [set(content_words(f"{Path(hit.source).name} page {hit.chunk.page or ''}")) for hit in passages]
        asked = set(content_words(question))
        kept: list[_Sentence] = []
        seen: set[tuple[str, ...]] = set()
        for start, end in split_sentences(text):
            written = _LIST_ITEM.sub("", text[start:end].strip())
            claim = strip_markers(written)
            words = tuple(content_words(claim))
            if not words or words in seen or any(set(words) <= header for header in headers):
                continue  # empty, a repetition, or an echoed passage header
            if claim.endswith("?") or (asked and set(words) <= asked | _FILLER):
                continue  # a question, or the question restated: no claim to check
            seen.add(words)
            markers = list(dict.fromkeys(n for _, _, ns in parse_markers(written) for n in ns))
            kept.append(_Sentence(claim, written, markers, not asked or bool(asked & set(words))))
            if len(kept) == self._answer.max_sentences:
                break
        return kept

    def _decide(
        self, sentences: Sequence[_Sentence], passages: Sequence[ScoredChunk], table: list[list[list[float]]]
    ) -> CitedAnswer:
        citations: list[Citation] = []
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        unverified: list[tuple[int, int]] = []
        offset = 0
        for sentence, scores in zip(sentences, table, strict=True):
            own = [self._citation(sentence, passages, n, scores[n - 1], "model") for n in sentence.markers]
            text = sentence.text
            if not any(c.supported for c in own) and passages:
                # Attribution: the passage whose best span supports the sentence most.
                best = max(range(len(passages)), key=lambda i: max(scores[i], default=0.0))
                attributed = self._citation(sentence, passages, best + 1, scores[best], "attributed")
                if attributed.supported:
                    own.append(attributed)
                    text = f"{text} [{attributed.n}]"
            citations += own
            if pieces:
                offset += 1  # the joining space
            spans.append((offset, offset + len(text)))
            if not any(c.supported for c in own):
                unverified.append(spans[-1])
            pieces.append(text)
            offset += len(text)
        answer_text = " ".join(pieces)
        answered = any(
            sentence.on_topic and span not in unverified for sentence, span in zip(sentences, spans, strict=True)
        )
        abstained = not answered or says_unknown(answer_text)
        return CitedAnswer(answer_text, tuple(citations), tuple(spans), tuple(unverified), abstained)

    def _citation(
        self,
        sentence: _Sentence,
        passages: Sequence[ScoredChunk],
        n: int,
        scores: Sequence[float],
        origin: CitationOrigin,
    ) -> Citation:
        hit = passages[n - 1]
        start, end, support = _best_span(hit.chunk.text, scores)
        return Citation(
            n=n,
            chunk_id=hit.chunk.id,
            file=hit.source,
            file_name=Path(hit.source).name,
            page=hit.chunk.page,
            page_label=hit.chunk.page_label,
            start=hit.chunk.start + start,
            end=hit.chunk.start + end,
            quote=hit.chunk.text[start:end],
            support=round(support, 4),
            sentence=sentence.claim,
            origin=origin,
            supported=support >= self._min_support,
        )


def _without_header_echo(text: str, number: int, hit: ScoredChunk) -> str:
    """``text`` without passage ``number``'s header echoed ("[1] handbook.pdf, page 2."): the file
    name and page go, a marker before them stays (it may be the citation of the sentence before:
    "... 180 euros. [1] travel-policy.docx, page 1.")."""
    echo = re.compile(rf"(\[{number}\]\s*)?{re.escape(Path(hit.source).name)}(?:,\s*page\s*\d+)?\.?")
    return echo.sub(lambda m: f"[{number}] " if m.group(1) else " ", text)


def _drop_invalid_markers(text: str, valid: range) -> str:
    """``text`` with the marker numbers outside ``valid`` dropped, and no spaces before punctuation
    or at a line's end (the model's own, or left by a removed header echo; a removed marker leaves
    none)."""
    return _SPACE_BEFORE_PUNCTUATION.sub("", keep_markers(text, valid))
