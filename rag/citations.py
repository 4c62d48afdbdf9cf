"""Citations: parse the model's ``[n]`` markers, check them against the passages, locate the words.

- Markers ``[1]``, ``[1, 3]`` and ``[1][3]`` are read; a number with no passage behind it is
  dropped from the answer text and from the citations.
- Each citation belongs to the sentence it follows. Its supporting span is the sentence (or two
  adjacent sentences) of the cited passage that shares the most content words with that
  answer sentence; ``support`` is the share of the answer sentence's content words found there
  (0 to 1). The span is given in the page's own character offsets, so the page can highlight it.
- An answer is abstained when the model says it does not know, or when no valid citation is left.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.types import Citation, ScoredChunk

MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])*(?=\s|$)|\n+")
# A sentence ends at . ! or ? followed by a space or the end, or at a line break: "4.2" and
# "e.g." inside a sentence do not end it.
_PASSAGE_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s|$)|(?=\n)|$)")
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_ABSTAIN = re.compile(
    r"\b(i don'?t know|i do not know|documents? do(?:es)? not (?:say|mention|contain)|"
    r"passages? do(?:es)? not (?:say|mention|contain)|cannot be answered|no information)\b",
    re.IGNORECASE,
)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "as",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "not",
        "no",
        "can",
        "could",
        "will",
        "would",
        "should",
        "may",
        "might",
        "must",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "them",
        "their",
        "our",
        "your",
        "his",
        "her",
        "there",
        "here",
        "than",
        "then",
        "so",
        "such",
        "also",
        "into",
        "about",
        "over",
        "under",
        "per",
        "each",
        "any",
        "all",
    ]
)


@dataclass(frozen=True, slots=True)
class CitedAnswer:
    text: str
    citations: tuple[Citation, ...]
    abstained: bool


def says_unknown(text: str) -> bool:
    """Whether ``text`` says that it does not know or that the documents do not say (the abstention phrases)."""
    return bool(_ABSTAIN.search(text))


def content_words(text: str) -> list[str]:
    """Lower-cased words and numbers, stop words removed, light plural folding."""
    words = []
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.append(word)
    return words


def parse_markers(text: str) -> list[tuple[int, int, list[int]]]:
    """Every marker as ``(start, end, numbers)`` in order of appearance."""
    return [(m.start(), m.end(), [int(n) for n in re.split(r"\s*[,;]\s*", m.group(1))]) for m in MARKER.finditer(text)]


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


def best_support(claim: str, passage: str) -> tuple[int, int, float]:
    """The span of ``passage`` that best supports ``claim``: ``(start, end, support)``."""
    claim_words = set(content_words(claim))
    sentences = [(m.start(), m.end()) for m in _PASSAGE_SENTENCE.finditer(passage) if m.group().strip()]
    if not sentences:
        return 0, len(passage), 0.0
    candidates = sentences + [(a[0], b[1]) for a, b in itertools.pairwise(sentences)]
    best = (0, 0, -1.0)
    for start, end in candidates:
        found = claim_words & set(content_words(passage[start:end]))
        score = len(found) / len(claim_words) if claim_words else 0.0
        # Prefer the higher score; at equal score the shorter span (a single sentence).
        if score > best[2] or (score == best[2] and end - start < best[1] - best[0]):
            best = (start, end, score)
    start, end, score = best
    while start < end and passage[start].isspace():
        start += 1
    return start, end, max(score, 0.0)


def cite(answer: str, passages: Sequence[ScoredChunk]) -> CitedAnswer:
    """Check the markers of ``answer`` against ``passages`` (numbered from 1) and locate each quote."""
    valid = range(1, len(passages) + 1)
    cleaned = _drop_invalid_markers(answer, valid)
    citations: list[Citation] = []
    for start, end in split_sentences(cleaned):
        sentence = cleaned[start:end]
        claim = MARKER.sub("", sentence).strip()
        numbers = sorted({n for _, _, ns in parse_markers(sentence) for n in ns})
        for number in numbers:
            hit = passages[number - 1]
            local_start, local_end, support = best_support(claim, hit.chunk.text)
            citations.append(
                Citation(
                    n=number,
                    chunk_id=hit.chunk.id,
                    file=hit.source,
                    title=Path(hit.source).name,
                    page=hit.chunk.page,
                    page_label=hit.chunk.page_label,
                    start=hit.chunk.start + local_start,
                    end=hit.chunk.start + local_end,
                    quote=hit.chunk.text[local_start:local_end],
                    support=round(support, 4),
                    sentence=claim,
                )
            )
    abstained = not citations or says_unknown(cleaned)
    return CitedAnswer(cleaned.strip(), tuple(citations), abstained)


def _drop_invalid_markers(text: str, valid: range) -> str:
    def keep_valid(match: re.Match[str]) -> str:
        numbers = [n for n in (int(x) for x in re.split(r"\s*[,;]\s*", match.group(1))) if n in valid]
        return f"[{', '.join(str(n) for n in numbers)}]" if numbers else ""

    return re.sub(r"[ \t]+(?=[.,;:!?]|$)", "", MARKER.sub(keep_valid, text), flags=re.MULTILINE)
