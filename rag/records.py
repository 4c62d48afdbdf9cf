"""The JSON records of what a question produced (a retrieved passage, a citation, an answer)
and of what an ingestion could not store.

One model each, used wherever these leave the process: ``rag search --json``, ``rag ask
--json``, the LangChain adapter's document metadata, and (extended with the evaluation's own
fields in :mod:`eval.records`) every line of an evaluation's ``samples.jsonl``. Build them with
``of(...)`` from the pipeline's dataclasses (:mod:`rag.types`); write them with
``model_dump(mode="json")``; read them back with ``model_validate``.

Scores and timings are rounded to 6 decimals when a record is made: more digits only make
files and diffs noisy, and fewer would break the order of close scores.

Reading is lenient on purpose: unknown keys are ignored and fields added by later versions have
defaults, so files written by earlier versions still load.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from rag.types import Answer, Citation, CitationOrigin, ScoredChunk

_DIGITS = 6


class Record(BaseModel):
    """Base of the stored records: immutable, unknown keys ignored when read."""

    model_config = ConfigDict(frozen=True, extra="ignore")


def located(file: str, page: int | None) -> str:
    """``"report.pdf p.4"``, or the file alone when it has no pages."""
    return file + (f" p.{page}" if page is not None else "")


class HitRecord(Record):
    """A retrieved passage: where it is (file, page, character span of the page's text), its
    fused score, which retrievers found it, and its text."""

    file: str
    page: int | None = None
    page_label: str | None = None
    start: int | None = None
    end: int | None = None
    chunk_id: int | None = None
    score: float | None = None
    retrievers: list[str] = []
    text: str = ""

    @property
    def where(self) -> str:
        return located(self.file, self.page)

    @classmethod
    def fields_of(cls, hit: ScoredChunk) -> dict[str, object]:
        """The fields for ``hit``, for subclasses that add their own."""
        chunk = hit.chunk
        return {
            "file": hit.source,
            "page": chunk.page,
            "page_label": chunk.page_label,
            "start": chunk.start,
            "end": chunk.end,
            "chunk_id": chunk.id,
            "score": round(hit.score, _DIGITS),
            "retrievers": list(hit.retrievers),
            "text": chunk.text,
        }

    @classmethod
    def of(cls, hit: ScoredChunk) -> HitRecord:
        return cls.model_validate(cls.fields_of(hit))


class CitationRecord(Record):
    """One ``[n]`` of an answer (:class:`rag.types.Citation`): the passage's file and page, the
    span and quote in the page's text, its support for ``sentence``, who cited, and whether the
    support reaches ``citations.min_support``."""

    n: int
    file: str
    page: int | None = None
    page_label: str | None = None
    chunk_id: int | None = None
    start: int
    end: int
    quote: str
    support: float | None = None
    sentence: str = ""
    origin: CitationOrigin = "model"
    supported: bool = True

    @property
    def where(self) -> str:
        return located(self.file, self.page)

    @classmethod
    def of(cls, citation: Citation) -> CitationRecord:
        # Every field is an attribute of the same name on Citation.
        return cls.model_validate(citation, from_attributes=True)


class AnswerRecord(Record):
    """An answer as ``rag ask --json`` prints it: the text, whether it abstained, its citations,
    the passages retrieved for it (``retrieved``), the time each stage took, the model."""

    question: str
    answer: str
    abstained: bool
    citations: list[CitationRecord]
    retrieved: list[HitRecord]
    timings: dict[str, float]
    model: str

    @classmethod
    def of(cls, answer: Answer) -> AnswerRecord:
        return cls(
            question=answer.question,
            answer=answer.text,
            abstained=answer.abstained,
            citations=[CitationRecord.of(citation) for citation in answer.citations],
            retrieved=[HitRecord.of(hit) for hit in answer.retrieved],
            timings=rounded(answer.timings),
            model=answer.model,
        )


class FailedFile(Record):
    """A file an ingestion could not store, and why (``rag ingest --json``, ``rag info --json``)."""

    path: str
    reason: str


class TextlessFile(Record):
    """A stored file with numbered ``pages`` (of ``of``) that have no text: scanned, most likely."""

    path: str
    pages: list[int]
    of: int


class OcrFile(Record):
    """A stored file with numbered ``pages`` (of ``of``) whose text OCR read off their pictures,
    and the OCR ``engine``."""

    path: str
    pages: list[int]
    of: int
    engine: str


def rounded(timings: dict[str, float]) -> dict[str, float]:
    """Timings (seconds) rounded as every record rounds them."""
    return {key: round(value, _DIGITS) for key, value in timings.items()}
