"""Evaluation sets: the project's own JSONL, BEIR folders and FinanceBench, as one record type.

:func:`load_dataset` detects the format (or takes it named) and returns an :class:`EvalDataset`
of :class:`EvalQuestion` records. Every problem with the input raises :class:`EvalDataError`,
whose message names the file, the line and the field.

The project's own format is one JSON object per line::

    {"id": "q1", "question": "How many vacation days?", "answers": ["28 days"],
     "sources": [{"file": "handbook.pdf", "page": 3}]}
    {"question": "Who won the 2030 World Cup?", "answers": [], "unanswerable": true}

``question`` and ``answers`` (a list, may be empty) are required; ``sources`` (``file`` matched
by its base name, ``page`` 1-based, optional), ``unanswerable`` and ``id`` are optional. Without
an ``id`` a question gets one derived from its text, so ids stay put when lines are inserted
and two runs can be compared question by question. Blank lines are skipped; other fields are
ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import quote, unquote

from rag.errors import RagError

DatasetFormat = Literal["jsonl", "beir", "financebench"]
FORMATS: tuple[str, ...] = get_args(DatasetFormat)

# File stems that say nothing about the set: such a file is named after its folder instead.
_GENERIC_STEMS = frozenset({"questions", "queries", "test", "dev", "eval", "data"})


class EvalDataError(RagError):
    """An evaluation set cannot be read: the message says which file, line and field, and why."""

    def __init__(self, path: Path | str, reason: str, *, line: int | None = None, field: str | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.path if line is None else f"{self.path}, line {line}"
        what = f"field '{field}': {reason}" if field else reason
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True, slots=True)
class GoldSource:
    """A place that holds a question's answer: a file (base name) and its 1-based page, or any page (``None``)."""

    file: str
    page: int | None = None

    @property
    def id(self) -> str:
        """This source's id in page-level qrels: ``"report.pdf#12"``, or ``"report.pdf"`` for any page."""
        return source_id(self.file, self.page)

    def matches(self, file: str | Path, page: int | None) -> bool:
        """Whether a retrieved passage from ``file`` (any path: base names are compared) at ``page`` is here."""
        return Path(file).name == self.file and (self.page is None or self.page == page)


def source_id(file: str | Path, page: int | None) -> str:
    """The id of a file's page in page-level qrels and runs: ``"<base name>#<page>"``, or the base name."""
    name = Path(file).name
    return name if page is None else f"{name}#{page}"


_CORPUS_SUFFIX = ".txt"
# Longest quoted corpus id that still makes a file name (most file systems allow 255 bytes).
_MAX_CORPUS_NAME = 240


def corpus_file_name(doc_id: str) -> str:
    """The file a BEIR corpus document is written to for ingestion: ``<doc_id>.txt``, id percent-quoted.

    Quoting keeps any id a single safe file name ("/" and spaces become ``%2F``, ``%20``); a
    leading dot is quoted too, since ingestion skips hidden files. :func:`corpus_id_of` reverses
    it, which is how a retrieved passage maps back to the corpus id that qrels name. Raises
    :class:`EvalDataError` for an id too long to be a file name.
    """
    quoted = quote(doc_id, safe="")
    if quoted.startswith("."):
        quoted = "%2E" + quoted[1:]
    if len(quoted) > _MAX_CORPUS_NAME:
        raise EvalDataError(
            doc_id[:60] + "…", f"a corpus id longer than {_MAX_CORPUS_NAME} characters is not supported"
        )
    return quoted + _CORPUS_SUFFIX


def corpus_id_of(file: str | Path) -> str:
    """The corpus id of a file written by :func:`corpus_file_name` (any path: the base name is read)."""
    name = Path(file).name
    return unquote(name.removesuffix(_CORPUS_SUFFIX))


@dataclass(frozen=True, slots=True)
class EvalQuestion:
    """One question of an evaluation set with its gold labels.

    ``answers`` are reference answers (empty when there are none, or when the question is
    ``unanswerable``). ``gold_sources`` are gold files/pages (own JSONL, FinanceBench);
    ``gold_doc_ids`` are BEIR qrels, corpus id to relevance (above 0). Use :attr:`qrels` and
    :meth:`retrieved_id` to score retrieval the same way for both kinds of gold.
    """

    id: str
    question: str
    answers: tuple[str, ...] = ()
    gold_sources: tuple[GoldSource, ...] = ()
    unanswerable: bool = False
    gold_doc_ids: dict[str, int] = field(default_factory=dict, hash=False)

    @property
    def qrels(self) -> dict[str, int]:
        """Relevance by id for the retrieval metrics: BEIR's qrels, else each gold source's id with relevance 1."""
        if self.gold_doc_ids:
            return dict(self.gold_doc_ids)
        return {source.id: 1 for source in self.gold_sources}

    def retrieved_id(self, file: str | Path, page: int | None) -> str:
        """The id to rank a retrieved passage under, so it compares with :attr:`qrels`.

        For a BEIR question (it has ``gold_doc_ids``), the corpus id the file was written for by
        :func:`corpus_file_name`. Otherwise the id of the gold source it falls in (so a passage
        anywhere in a file whose gold page is ``None`` counts), else :func:`source_id` of its own
        file and page.
        """
        if self.gold_doc_ids:
            return corpus_id_of(file)
        for source in self.gold_sources:
            if source.matches(file, page):
                return source.id
        return source_id(file, page)


@dataclass(frozen=True, slots=True)
class EvalDataset:
    """A loaded evaluation set.

    ``content_hash`` is the SHA-256 over every file the set consists of (name and bytes, in a
    fixed order): for BEIR the queries, qrels and corpus; for FinanceBench the questions and
    the PDFs they cite. Equal hashes mean equal inputs, so it keys a cached knowledge base and
    tells whether two runs may be compared. ``corpus`` (BEIR's ``corpus.jsonl``, read with
    :func:`iter_beir_corpus`) and ``docs`` (FinanceBench's PDF folder) are what to ingest.
    """

    name: str
    format: DatasetFormat
    path: Path
    questions: tuple[EvalQuestion, ...]
    content_hash: str
    corpus: Path | None = None
    docs: Path | None = None


def load_dataset(path: Path, format: str | None = None, docs: Path | None = None) -> EvalDataset:
    """Load an evaluation set, detecting its format unless ``format`` names it.

    Detection: a folder holding ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` is
    BEIR (the test split is loaded: the queries that have a relevant document in its qrels);
    a ``.jsonl`` file whose first record has ``financebench_id`` or ``evidence`` is
    FinanceBench; any other ``.jsonl`` file is the project's own format. FinanceBench needs its
    PDFs: ``docs``, or by default the ``pdfs`` folder beside the file; each question's
    ``doc_name`` must be there as ``<doc_name>.pdf``. Raises :class:`EvalDataError`.
    """
    path = Path(path)
    if not path.exists():
        raise EvalDataError(path, "no such file or folder")
    if format is not None and format not in FORMATS:
        raise EvalDataError(path, f"unknown dataset format '{format}' (expected one of: {', '.join(FORMATS)})")
    chosen = format or _detect_format(path)
    if chosen == "beir":
        return _load_beir(path)
    if path.is_dir():
        raise EvalDataError(path, f"a {chosen} dataset is a .jsonl file, not a folder")
    if chosen == "financebench":
        return _load_financebench(path, docs if docs is not None else path.parent / "pdfs")
    return _load_jsonl(path)


def iter_beir_corpus(path: Path) -> Iterator[tuple[str, str, str]]:
    """``(doc_id, title, text)`` for each line of a BEIR ``corpus.jsonl`` (or of the one in folder ``path``).

    Streams the file, so a corpus of millions of documents needs no memory. ``title`` is ""
    when absent. Raises :class:`EvalDataError` on a bad line, naming it.
    """
    path = Path(path)
    corpus = path / "corpus.jsonl" if path.is_dir() else path
    try:
        with open(corpus, encoding="utf-8-sig") as lines:
            for number, record in _records(corpus, lines):
                title = record.get("title") or ""
                if not isinstance(title, str):
                    raise EvalDataError(corpus, "must be a string", line=number, field="title")
                yield _id_field(corpus, number, record, "_id"), title, _text_field(corpus, number, record, "text")
    except OSError as error:
        raise EvalDataError(corpus, f"cannot be read: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise EvalDataError(corpus, "is not UTF-8 text") from error


# ---------------------------------------------------------------------------------------------
# Formats


def _detect_format(path: Path) -> DatasetFormat:
    if path.is_dir():
        _check_beir_folder(path)
        return "beir"
    if path.suffix.lower() != ".jsonl":
        raise EvalDataError(path, "cannot tell the dataset format: expected a .jsonl file or a BEIR folder")
    for _, record in _records(path, _read_text(path).splitlines()):
        return "financebench" if "financebench_id" in record or "evidence" in record else "jsonl"
    raise EvalDataError(path, "has no records")


def _load_jsonl(path: Path) -> EvalDataset:
    data = _read_bytes(path)
    questions = []
    for number, record in _records(path, _decode(path, data).splitlines()):
        question = _text_field(path, number, record, "question")
        answers = _string_list(path, number, record, "answers")
        unanswerable = record.get("unanswerable", False)
        if not isinstance(unanswerable, bool):
            raise EvalDataError(path, "must be true or false", line=number, field="unanswerable")
        if unanswerable and answers:
            raise EvalDataError(path, "an unanswerable question cannot have answers", line=number, field="answers")
        question_id = _id_field(path, number, record, "id") if "id" in record else _text_id(question)
        sources = tuple(_sources(path, number, record.get("sources", [])))
        questions.append((number, EvalQuestion(question_id, question, answers, sources, unanswerable)))
    return EvalDataset(_name(path), "jsonl", path, _unique(path, questions), _hash([(path.name, data)]))


def _load_financebench(path: Path, docs: Path) -> EvalDataset:
    if not docs.is_dir():
        raise EvalDataError(docs, "FinanceBench's PDF folder is missing: pass the folder holding <doc_name>.pdf files")
    data = _read_bytes(path)
    questions, pdfs = [], {}
    for number, record in _records(path, _decode(path, data).splitlines()):
        doc_name = _text_field(path, number, record, "doc_name")
        evidence = record.get("evidence", [])
        if not isinstance(evidence, list) or not all(isinstance(item, dict) for item in evidence):
            raise EvalDataError(path, "must be a list of objects", line=number, field="evidence")
        # (gold source, the field that names its PDF), to say which field points at a missing PDF.
        sources = [(GoldSource(f"{doc_name}.pdf"), "doc_name")] if not evidence else []
        for i, item in enumerate(evidence):
            where = f"evidence[{i}]"
            page = item.get("evidence_page_num")
            # bool is an int in Python: reject it explicitly.
            if not isinstance(page, int) or isinstance(page, bool) or page < 0:
                reason = "must be a 0-based page index"
                raise EvalDataError(path, reason, line=number, field=f"{where}.evidence_page_num")
            name = item.get("doc_name", doc_name)
            if not isinstance(name, str) or not name.strip():
                raise EvalDataError(path, "must be a non-empty string", line=number, field=f"{where}.doc_name")
            # FinanceBench counts pages from 0; the product (and GoldSource) from 1.
            sources.append((GoldSource(f"{name}.pdf", page + 1), f"{where}.doc_name"))
        for source, field_name in [(GoldSource(f"{doc_name}.pdf"), "doc_name"), *sources]:
            if source.file not in pdfs:
                pdf = docs / source.file
                if not pdf.is_file():
                    raise EvalDataError(path, f"no {source.file} in {docs}", line=number, field=field_name)
                pdfs[source.file] = pdf
        question = EvalQuestion(
            id=_id_field(path, number, record, "financebench_id"),
            question=_text_field(path, number, record, "question"),
            answers=(_text_field(path, number, record, "answer"),),
            gold_sources=tuple(dict.fromkeys(source for source, _ in sources)),
        )
        questions.append((number, question))
    files: list[tuple[str, bytes | Path]] = [(path.name, data), *((name, pdfs[name]) for name in sorted(pdfs))]
    return EvalDataset(_name(path), "financebench", path, _unique(path, questions), _hash(files), docs=docs)


def _load_beir(path: Path) -> EvalDataset:
    _check_beir_folder(path)
    queries_file, qrels_file, corpus = path / "queries.jsonl", path / "qrels" / "test.tsv", path / "corpus.jsonl"
    qrels_data, queries_data = _read_bytes(qrels_file), _read_bytes(queries_file)
    qrels, first_line = _parse_qrels(qrels_file, _decode(qrels_file, qrels_data))
    texts = {}
    for number, record in _records(queries_file, _decode(queries_file, queries_data).splitlines()):
        query_id = _id_field(queries_file, number, record, "_id")
        if query_id in qrels:
            texts[query_id] = _text_field(queries_file, number, record, "text")
    for query_id, docs in qrels.items():
        if query_id not in texts and any(relevance > 0 for relevance in docs.values()):
            reason = f"query '{query_id}' is not in {queries_file.name}"
            raise EvalDataError(qrels_file, reason, line=first_line[query_id], field="query-id")
    # Queries in queries.jsonl order; those with no relevant document are not in the split.
    questions = tuple(
        EvalQuestion(query_id, text, gold_doc_ids={d: r for d, r in qrels[query_id].items() if r > 0})
        for query_id, text in texts.items()
        if any(relevance > 0 for relevance in qrels[query_id].values())
    )
    digest = _hash([("queries.jsonl", queries_data), ("qrels/test.tsv", qrels_data), ("corpus.jsonl", corpus)])
    return EvalDataset(path.resolve().name, "beir", path, questions, digest, corpus=corpus)


def _check_beir_folder(path: Path) -> None:
    missing = [name for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv") if not (path / name).is_file()]
    if missing:
        raise EvalDataError(path, f"not a BEIR dataset folder: missing {', '.join(missing)}")


def _parse_qrels(path: Path, text: str) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """BEIR's qrels TSV: ``query-id<TAB>corpus-id<TAB>score`` with a header line; also each query's first line."""
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or (number == 1 and line.split("\t")[0].strip() == "query-id"):
            continue
        fields = [value.strip() for value in line.split("\t")]
        if len(fields) != 3:
            raise EvalDataError(path, f"expected 3 tab-separated fields, found {len(fields)}", line=number)
        query_id, doc_id, score = fields
        for name, value in (("query-id", query_id), ("corpus-id", doc_id)):
            if not value:
                raise EvalDataError(path, "is empty", line=number, field=name)
        try:
            relevance = int(score)
        except ValueError:
            raise EvalDataError(path, f"must be an integer, got '{score}'", line=number, field="score") from None
        # As BEIR's own loader: a repeated pair keeps its last score.
        qrels.setdefault(query_id, {})[doc_id] = relevance
        first_line.setdefault(query_id, number)
    return qrels, first_line


# ---------------------------------------------------------------------------------------------
# Reading and checking


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise EvalDataError(path, f"cannot be read: {error.strerror or error}") from error


def _decode(path: Path, data: bytes) -> str:
    try:
        # utf-8-sig: a file saved by a Windows editor may start with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise EvalDataError(path, f"is not UTF-8 text (byte {error.start})") from error


def _read_text(path: Path) -> str:
    return _decode(path, _read_bytes(path))


def _records(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvalDataError(path, f"not valid JSON ({error.msg}, column {error.colno})", line=number) from None
        if not isinstance(record, dict):
            raise EvalDataError(path, f"expected a JSON object, got {type(record).__name__}", line=number)
        yield number, record


def _text_field(path: Path, line: int, record: Mapping[str, Any], name: str) -> str:
    if name not in record:
        raise EvalDataError(path, "is missing", line=line, field=name)
    value = record[name]
    if not isinstance(value, str) or not value.strip():
        raise EvalDataError(path, "must be a non-empty string", line=line, field=name)
    return value


def _id_field(path: Path, line: int, record: Mapping[str, Any], name: str) -> str:
    """An id: a non-empty string, or an integer (some sets write ids as numbers; qrels read them as text)."""
    value = record.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if name not in record:
        raise EvalDataError(path, "is missing", line=line, field=name)
    if not isinstance(value, str) or not value.strip():
        raise EvalDataError(path, "must be a non-empty string or an integer", line=line, field=name)
    return value


def _string_list(path: Path, line: int, record: Mapping[str, Any], name: str) -> tuple[str, ...]:
    if name not in record:
        raise EvalDataError(path, "is missing (use [] when there is no reference answer)", line=line, field=name)
    value = record[name]
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise EvalDataError(path, "must be a list of non-empty strings", line=line, field=name)
    return tuple(value)


def _sources(path: Path, line: int, value: Any) -> Iterator[GoldSource]:
    if not isinstance(value, list):
        raise EvalDataError(path, "must be a list of {file, page} objects", line=line, field="sources")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise EvalDataError(path, "must be a {file, page} object", line=line, field=f"sources[{i}]")
        file = item.get("file")
        if not isinstance(file, str) or not Path(file).name:
            raise EvalDataError(path, "must be a file name", line=line, field=f"sources[{i}].file")
        page = item.get("page")
        if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 1):
            raise EvalDataError(path, "must be a page number from 1, or null", line=line, field=f"sources[{i}].page")
        yield GoldSource(Path(file).name, page)


def _text_id(question: str) -> str:
    return hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:12]


def _unique(path: Path, numbered: list[tuple[int, EvalQuestion]]) -> tuple[EvalQuestion, ...]:
    seen: dict[str, int] = {}
    for number, question in numbered:
        if question.id in seen:
            raise EvalDataError(path, f"id '{question.id}' is already used on line {seen[question.id]}", line=number)
        seen[question.id] = number
    return tuple(question for _, question in numbered)


def _hash(files: Iterable[tuple[str, bytes | Path]]) -> str:
    """SHA-256 over (name, content) pairs; a ``Path`` content is streamed (a BEIR corpus can be large)."""
    digest = hashlib.sha256()
    for name, content in files:
        digest.update(name.encode("utf-8") + b"\0")
        if isinstance(content, bytes):
            digest.update(hashlib.sha256(content).digest())
            continue
        try:
            with open(content, "rb") as stream:
                digest.update(hashlib.file_digest(stream, "sha256").digest())
        except OSError as error:
            raise EvalDataError(content, f"cannot be read: {error.strerror or error}") from error
    return digest.hexdigest()


def _name(path: Path) -> str:
    return path.resolve().parent.name if path.stem.lower() in _GENERIC_STEMS else path.stem
