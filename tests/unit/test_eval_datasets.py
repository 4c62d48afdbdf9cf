from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from eval.datasets import EvalDataError, EvalQuestion, GoldSource, iter_beir_corpus, load_dataset, source_id
from eval.metrics import retrieval_metrics
from rag.errors import RagError

# tests/unit/ -> tests/ -> the repository -> its parent, where shared/ lies beside it.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _jsonl(path: Path, *records: Any) -> Path:
    """Write records one per line; a str is written as it is (for broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def _beir(root: Path, qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq3\td3\t1\nq4\td1\t0\n") -> Path:
    root.mkdir()
    _jsonl(
        root / "corpus.jsonl",
        {"_id": "d1", "title": "First", "text": "One."},
        {"_id": "d2", "text": "Two."},
        {"_id": 3, "title": "", "text": "Three."},
    )
    _jsonl(
        root / "queries.jsonl",
        {"_id": "q3", "text": "Third?"},
        {"_id": "q1", "text": "First?"},
        {"_id": "q2", "text": "Not in the qrels?"},
        {"_id": "q4", "text": "Judged only irrelevant?"},
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def _financebench(root: Path, *records: Any, pdfs: tuple[str, ...] = ("ACME_2023_10K",)) -> Path:
    root.mkdir()
    (root / "pdfs").mkdir()
    for name in pdfs:
        (root / "pdfs" / f"{name}.pdf").write_bytes(b"%PDF-1.4 not a real PDF\n")
    return _jsonl(root / "questions.jsonl", *records)


def _fb_record(**overrides: Any) -> dict[str, Any]:
    record = {
        "financebench_id": "financebench_id_1",
        "company": "Acme",
        "doc_name": "ACME_2023_10K",
        "question": "What was Acme's FY2023 revenue?",
        "answer": "$1.2 billion",
        "evidence": [
            {"evidence_text": "Revenue 1.2", "doc_name": "ACME_2023_10K", "evidence_page_num": 0},
            {"evidence_text": "Revenue 1.2", "doc_name": "ACME_2023_10K", "evidence_page_num": 4},
        ],
    }
    return record | overrides


# ---------------------------------------------------------------------------------------------
# The project's own JSONL


def test_own_jsonl_loads_every_field(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "handbook.jsonl",
        {"id": "q1", "question": "How many vacation days?", "answers": ["28 days", "28"],
         "sources": [{"file": "docs/handbook.pdf", "page": 3}, {"file": "faq.md"}]},
        "",
        {"id": 7, "question": "Who won the 2030 World Cup?", "answers": [], "unanswerable": True},
        {"question": "Where is the office?", "answers": [], "note": "other fields are ignored"},
    )  # fmt: skip
    dataset = load_dataset(path)
    assert (dataset.name, dataset.format, dataset.path, dataset.corpus, dataset.docs) == (
        "handbook", "jsonl", path, None, None,
    )  # fmt: skip
    first, second, third = dataset.questions
    assert first == EvalQuestion(
        "q1", "How many vacation days?", ("28 days", "28"), (GoldSource("handbook.pdf", 3), GoldSource("faq.md"))
    )
    assert (second.id, second.answers, second.unanswerable) == ("7", (), True)  # line 3: the blank line counts
    assert len(third.id) == 12 and third.gold_sources == () and not third.unanswerable


def test_id_from_text_is_stable_and_hash_follows_content(tmp_path: Path) -> None:
    a = _jsonl(tmp_path / "a.jsonl", {"question": "Q one?", "answers": []}, {"question": "Q two?", "answers": []})
    b = _jsonl(tmp_path / "b.jsonl", {"question": "Q zero?", "answers": []}, {"question": "Q two?", "answers": []})
    ids_a, ids_b = [q.id for q in load_dataset(a).questions], [q.id for q in load_dataset(b).questions]
    assert ids_a[1] == ids_b[1]  # the same question keeps its id wherever it is
    assert load_dataset(a).content_hash == load_dataset(a).content_hash
    assert load_dataset(a).content_hash != load_dataset(b).content_hash


def test_gold_sources_give_page_level_qrels_and_ids(tmp_path: Path) -> None:
    question = EvalQuestion("q", "?", gold_sources=(GoldSource("report.pdf", 3), GoldSource("notes.md")))
    assert question.qrels == {"report.pdf#3": 1, "notes.md": 1}
    assert question.retrieved_id("/kb/docs/report.pdf", 3) == "report.pdf#3"
    assert question.retrieved_id("/kb/docs/report.pdf", 4) == "report.pdf#4"
    assert question.retrieved_id("/elsewhere/notes.md", None) == "notes.md"
    assert question.retrieved_id("notes.md", 9) == "notes.md"  # gold page None: any page of the file
    assert source_id(Path("/a/b.pdf"), 2) == "b.pdf#2"
    ranked = [question.retrieved_id(f, p) for f, p in [("/x/report.pdf", 1), ("/x/report.pdf", 3)]]
    assert retrieval_metrics([ranked], [question.qrels], ["hit@1", "hit@2"]) == [{"hit@1": 0.0, "hit@2": 1.0}]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"question": "Q?", ', "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
        ('{"answers": []}', "line 2: field 'question': is missing"),
        ('{"question": "", "answers": []}', "line 2: field 'question': must be a non-empty string"),
        ('{"question": "Q?", "answer": "x"}', "line 2: field 'answers': is missing"),
        ('{"question": "Q?", "answers": "x"}', "line 2: field 'answers': must be a list of non-empty strings"),
        ('{"question": "Q?", "answers": [], "unanswerable": "yes"}', "line 2: field 'unanswerable'"),
        ('{"question": "Q?", "answers": ["x"], "unanswerable": true}', "line 2: field 'answers': an unanswerable"),
        ('{"question": "Q?", "answers": [], "sources": "a.pdf"}', "line 2: field 'sources'"),
        ('{"question": "Q?", "answers": [], "sources": [{"page": 2}]}', "line 2: field 'sources[0].file'"),
        ('{"question": "Q?", "answers": [], "sources": [{"file": "a", "page": 0}]}', "field 'sources[0].page'"),
        ('{"question": "Q?", "answers": [], "sources": [{"file": "a", "page": "3"}]}', "field 'sources[0].page'"),
        ('{"question": "Q?", "answers": [], "id": ""}', "line 2: field 'id'"),
        ('{"id": "q1", "question": "Other?", "answers": []}', "line 2: id 'q1' is already used on line 1"),
    ],
)
def test_bad_own_jsonl_names_file_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = _jsonl(tmp_path / "set.jsonl", {"id": "q1", "question": "Fine?", "answers": ["yes"]}, line)
    with pytest.raises(EvalDataError) as caught:
        load_dataset(path)
    assert str(caught.value).startswith(f"{path}, line 2: ")
    assert expected in str(caught.value)
    assert isinstance(caught.value, RagError)
    assert caught.value.line == 2


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no such file"):
        load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"question": "Caf\u00e9?", "answers": []}\n'.encode("latin-1"))
    with pytest.raises(EvalDataError, match="is not UTF-8 text"):
        load_dataset(tmp_path / "latin1.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(EvalDataError, match="has no records"):
        load_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "set.csv").write_text("question,answer\n")
    with pytest.raises(EvalDataError, match="cannot tell the dataset format"):
        load_dataset(tmp_path / "set.csv")


# ---------------------------------------------------------------------------------------------
# Format detection


def test_format_detection_and_naming(tmp_path: Path) -> None:
    own = _jsonl(tmp_path / "own.jsonl", {"question": "Q?", "answers": []})
    finance = _financebench(tmp_path / "fb", _fb_record())
    beir = _beir(tmp_path / "tiny-beir")
    assert load_dataset(own).format == "jsonl"
    assert load_dataset(finance).format == "financebench"
    assert load_dataset(beir).format == "beir"
    assert load_dataset(finance).name == "fb"  # "questions" says nothing: the folder names it
    assert load_dataset(beir).name == "tiny-beir"
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(_fb_record()).encode() + b"\n")
    assert load_dataset(with_bom, docs=tmp_path / "fb" / "pdfs").format == "financebench"


def test_named_format(tmp_path: Path) -> None:
    finance = _financebench(tmp_path / "fb", _fb_record())
    with pytest.raises(EvalDataError, match="field 'answers': is missing"):
        load_dataset(finance, format="jsonl")  # taken at its word
    with pytest.raises(EvalDataError, match="unknown dataset format 'squad'"):
        load_dataset(finance, format="squad")
    with pytest.raises(EvalDataError, match=re.escape("a financebench dataset is a .jsonl file, not a folder")):
        load_dataset(tmp_path / "fb", format="financebench")
    not_beir = re.escape("not a BEIR dataset folder: missing corpus.jsonl, queries.jsonl")
    with pytest.raises(EvalDataError, match=not_beir):
        load_dataset(tmp_path / "fb", format="beir")


def test_folder_that_is_not_beir(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text("")
    not_beir = re.escape("not a BEIR dataset folder: missing queries.jsonl, qrels/test.tsv")
    with pytest.raises(EvalDataError, match=not_beir):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------------------------
# BEIR


def test_beir_keeps_the_queries_with_a_relevant_document(tmp_path: Path) -> None:
    dataset = load_dataset(_beir(tmp_path / "set"))
    # q2 is not in the qrels; q4 is judged only 0; order is queries.jsonl's.
    assert [(q.id, q.question, q.gold_doc_ids) for q in dataset.questions] == [
        ("q3", "Third?", {"d3": 1}),
        ("q1", "First?", {"d1": 1, "d2": 2}),
    ]
    assert dataset.questions[1].qrels == {"d1": 1, "d2": 2}
    assert dataset.corpus == tmp_path / "set" / "corpus.jsonl"
    expected = [("d1", "First", "One."), ("d2", "", "Two."), ("3", "", "Three.")]
    assert list(iter_beir_corpus(tmp_path / "set")) == expected
    assert list(iter_beir_corpus(tmp_path / "set" / "corpus.jsonl")) == expected  # the file itself


def test_beir_hash_covers_the_corpus(tmp_path: Path) -> None:
    root = _beir(tmp_path / "set")
    before = load_dataset(root).content_hash
    with open(root / "corpus.jsonl", "a") as corpus:
        corpus.write(json.dumps({"_id": "d4", "text": "Four."}) + "\n")
    assert load_dataset(root).content_hash != before


@pytest.mark.parametrize(
    ("qrels", "expected"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", "line 2: expected 3 tab-separated fields, found 2"),
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "line 2: field 'score': must be an integer, got 'high'"),
        ("query-id\tcorpus-id\tscore\nq1\t\t1\n", "line 2: field 'corpus-id': is empty"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n", "line 3: field 'query-id': query 'q9' is not in"),
    ],
)
def test_bad_qrels_name_file_line_and_field(tmp_path: Path, qrels: str, expected: str) -> None:
    root = _beir(tmp_path / "set", qrels)
    with pytest.raises(EvalDataError) as caught:
        load_dataset(root)
    assert str(caught.value).startswith(str(root / "qrels" / "test.tsv"))
    assert expected in str(caught.value)


def test_bad_beir_lines(tmp_path: Path) -> None:
    root = _beir(tmp_path / "set")
    _jsonl(root / "queries.jsonl", {"_id": "q1", "text": "First?"}, {"_id": "q3"})
    with pytest.raises(EvalDataError, match=r"queries.jsonl, line 2: field 'text': is missing"):
        load_dataset(root)
    _jsonl(root / "corpus.jsonl", {"_id": "d1", "text": "One."}, {"_id": "d2", "title": 5, "text": "Two."})
    with pytest.raises(EvalDataError, match=r"corpus.jsonl, line 2: field 'title': must be a string"):
        list(iter_beir_corpus(root))


# ---------------------------------------------------------------------------------------------
# FinanceBench


def test_financebench_pages_become_one_based_gold_sources(tmp_path: Path) -> None:
    no_evidence = _fb_record(financebench_id="financebench_id_2", evidence=[])
    path = _financebench(tmp_path / "fb", _fb_record(), no_evidence)
    dataset = load_dataset(path)
    first, second = dataset.questions
    assert first.id == "financebench_id_1"
    assert first.answers == ("$1.2 billion",)
    assert first.gold_sources == (GoldSource("ACME_2023_10K.pdf", 1), GoldSource("ACME_2023_10K.pdf", 5))
    assert second.gold_sources == (GoldSource("ACME_2023_10K.pdf"),)  # no evidence: any page of the filing
    assert dataset.docs == tmp_path / "fb" / "pdfs"
    # The hash covers the PDFs too.
    before = dataset.content_hash
    (tmp_path / "fb" / "pdfs" / "ACME_2023_10K.pdf").write_bytes(b"%PDF-1.4 changed\n")
    assert load_dataset(path).content_hash != before


def test_financebench_docs_folder(tmp_path: Path) -> None:
    path = _financebench(tmp_path / "fb", _fb_record())
    elsewhere = tmp_path / "filings"
    (tmp_path / "fb" / "pdfs").rename(elsewhere)
    with pytest.raises(EvalDataError, match="FinanceBench's PDF folder is missing"):
        load_dataset(path)
    assert load_dataset(path, docs=elsewhere).docs == elsewhere


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"doc_name": "OTHER_2020_10K"}, "line 1: field 'doc_name': no OTHER_2020_10K.pdf in"),
        (
            {"evidence": [{"doc_name": "OTHER_2020_10K", "evidence_page_num": 1}]},
            "line 1: field 'evidence[0].doc_name': no OTHER_2020_10K.pdf in",
        ),
        ({"evidence": [{"evidence_page_num": -1}]}, "line 1: field 'evidence[0].evidence_page_num'"),
        ({"evidence": [{"evidence_page_num": "3"}]}, "line 1: field 'evidence[0].evidence_page_num'"),
        ({"evidence": {"evidence_page_num": 3}}, "line 1: field 'evidence': must be a list of objects"),
        ({"answer": None}, "line 1: field 'answer': must be a non-empty string"),
        ({"financebench_id": None}, "line 1: field 'financebench_id'"),
    ],
)
def test_bad_financebench_names_file_line_and_field(tmp_path: Path, overrides: dict[str, Any], expected: str) -> None:
    path = _financebench(tmp_path / "fb", _fb_record(**overrides))
    with pytest.raises(EvalDataError) as caught:
        load_dataset(path)
    assert str(caught.value).startswith(f"{path}, line 1: ")
    assert expected in str(caught.value)


# ---------------------------------------------------------------------------------------------
# The real data in ../shared/data


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"the shared evaluation data is not at {SHARED_DATA}")
def test_real_scifact_and_financebench_load() -> None:
    scifact = load_dataset(SHARED_DATA / "scifact")
    assert (scifact.name, scifact.format, len(scifact.questions)) == ("scifact", "beir", 300)
    assert sum(len(q.gold_doc_ids) for q in scifact.questions) == 339  # BEIR's published test qrels
    assert scifact.corpus is not None
    assert sum(1 for _ in iter_beir_corpus(scifact.corpus)) == 5183

    finance = load_dataset(SHARED_DATA / "financebench" / "questions.jsonl")
    assert (finance.format, len(finance.questions)) == ("financebench", 25)
    assert finance.docs is not None
    for question in finance.questions:
        assert question.answers and question.gold_sources
        for source in question.gold_sources:
            assert (finance.docs / source.file).is_file() and source.page is not None and source.page >= 1
    # The first question's evidence_page_num is 53 (0-based): page 54 of the PDF.
    assert finance.questions[0].gold_sources == (GoldSource("ADOBE_2022_10K.pdf", 54),)
