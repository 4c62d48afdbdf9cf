"""A run folder on disk: its file names, the append-only sample log, and reading a run back.

A run folder holds ``run.json`` (what was run: written when the run starts), ``samples.jsonl``
(one record per finished question, appended as each finishes), and, once the run ends,
``metrics.json``, ``report.html``, ``run.trec`` (with ``run.qrels``). The runner writes it;
reports, ``rag eval compare`` and the web page read it through :func:`read_run`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from rag.errors import RagError
from rag.files import write_text_atomic
from rag.records import CitationRecord, HitRecord, Record, located
from rag.types import ScoredChunk

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
TREC_RUN_FILE = "run.trec"
TREC_QRELS_FILE = "run.qrels"
COMPARE_FILE = "compare.html"

Mode = Literal["full", "retrieval-only", "closed-book"]


class GoldSource(Record):
    """A file (and page) the dataset says holds a question's answer."""

    file: str
    page: int | None = None

    @property
    def where(self) -> str:
        return located(self.file, self.page)


class RetrievedPassage(HitRecord):
    """A passage in a question's ranking: the hit, its ``rank`` (1-based), its ``id`` as the
    dataset's qrels name it, and whether it was given to the model (``in_prompt``)."""

    rank: int
    id: str
    in_prompt: bool = False

    @classmethod
    def ranked(cls, hit: ScoredChunk, rank: int, doc_id: str, in_prompt: bool) -> RetrievedPassage:
        return cls.model_validate(HitRecord.fields_of(hit) | {"rank": rank, "id": doc_id, "in_prompt": in_prompt})


class Sample(Record):
    """One line of ``samples.jsonl``: a question, its gold labels, what each stage produced, its metrics.

    ``metrics`` maps every metric name of the run's mode to its value for this question, ``None``
    where it does not apply (no relevant passage, an abstention, a failed question). Fields a
    stage did not reach are ``None`` (``answer`` in retrieval-only mode) or empty.
    """

    # Question ids are strings; some datasets write them as numbers, and older runs kept that.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: str
    question: str
    answers: list[str] = Field(default_factory=list)
    gold_sources: list[GoldSource] = Field(default_factory=list)
    qrels: dict[str, int] = Field(default_factory=dict)
    unanswerable: bool = False
    mode: Mode = "full"
    retrieved: list[RetrievedPassage] = Field(default_factory=list)
    first_relevant_rank: int | None = None
    prompt: str | None = None
    prompt_tokens: int | None = None
    passages_dropped: int | None = None
    raw_output: str | None = None
    answer: str | None = None
    abstained: bool | None = None
    unverified_sentences: int | None = None
    citations: list[CitationRecord] = Field(default_factory=list)
    completion_tokens: int | None = None
    finish_reason: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    error: str | None = None

    def metric(self, name: str) -> float | None:
        """This question's value of metric ``name``; ``None`` when it has none."""
        return self.metrics.get(name)

    @property
    def gold(self) -> list[str]:
        """What the dataset gives as the answer: reference answers and gold sources, as labels."""
        return [*self.answers, *(source.where for source in self.gold_sources)]


class EvalRunError(RagError):
    """A run folder cannot be used: unreadable, damaged, or holding a run with other settings."""


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run read back from its folder: ``run.json``, the samples, and ``metrics.json`` when it finished."""

    path: Path
    info: dict[str, Any]
    samples: list[Sample]
    metrics: dict[str, Any] | None

    @property
    def mode(self) -> Mode:
        mode: Mode = self.info.get("mode", "full")
        return mode

    @property
    def name(self) -> str:
        return self.path.name


def read_run(path: Path) -> StoredRun:
    """Read a run folder (a finished run, or one that was stopped: then ``metrics`` is ``None``).

    Raises :class:`EvalRunError` when ``path`` is not a run folder or a file in it is damaged.
    """
    path = Path(path)
    if not (path / SAMPLES_FILE).is_file() or not (path / RUN_FILE).is_file():
        raise EvalRunError(f"{path} is not an evaluation run folder (no {RUN_FILE} and {SAMPLES_FILE})")
    metrics = read_json(path / METRICS_FILE) if (path / METRICS_FILE).is_file() else None
    return StoredRun(path, read_json(path / RUN_FILE), list(read_samples(path / SAMPLES_FILE)), metrics)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvalRunError(f"{path} cannot be read: {error}") from None
    if not isinstance(value, dict):
        raise EvalRunError(f"{path} does not hold a JSON object")
    return value


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically: a reader sees the old file or the new one."""
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def read_samples(path: Path) -> Iterator[Sample]:
    """The records of a ``samples.jsonl``. A torn last line (a run killed mid-write) is skipped;
    a damaged line elsewhere raises :class:`EvalRunError` naming it."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        raise EvalRunError(f"{path} cannot be read: {error.strerror or error}") from None
    # A record is written with its newline in one call: what follows the last newline is either
    # nothing or a record torn by a kill, never a whole one.
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise EvalRunError(f"{path}, line {number}: not a JSON record; the file is damaged") from None
        if not isinstance(record, dict) or "id" not in record:
            raise EvalRunError(f"{path}, line {number}: not a sample record")
        try:
            yield Sample.model_validate(record)
        except ValidationError as error:
            problem = error.errors()[0]
            field = ".".join(str(part) for part in problem["loc"])
            raise EvalRunError(
                f"{path}, line {number}: field {field!r}: {problem['msg']} (written by another version?). "
                "Run `rag eval` again with a new --out to make a run this version reads"
            ) from None


class SampleLog:
    """``samples.jsonl`` opened for appending: each record is one line, flushed and fsynced.

    Opening cuts a torn last line (left by a kill during a write), so every line is a whole
    record and a killed run resumes from exactly the records it finished. Not for concurrent
    writers: one run writes one folder.
    """

    def __init__(self, path: Path, stream: IO[bytes], done: dict[str, Sample]) -> None:
        self.path = path
        self._stream = stream
        self.done = done

    @classmethod
    def open(cls, path: Path) -> SampleLog:
        done: dict[str, Sample] = {}
        if path.exists():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                with open(path, "r+b") as stream:
                    stream.truncate(end)
            done = {record.id: record for record in read_samples(path)}
        return cls(path, open(path, "ab"), done)

    def append(self, record: Sample) -> None:
        line = record.model_dump_json() + "\n"
        self._stream.write(line.encode("utf-8"))
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self.done[record.id] = record

    def extend(self, records: Iterable[Sample]) -> None:
        for record in records:
            self.append(record)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> SampleLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
