from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.datasets import corpus_file_name, corpus_id_of, load_dataset
from eval.kbcache import CACHE_DIR, corpus_cache_key
from eval.records import EvalRunError, Sample, SampleLog, read_run, read_samples
from eval.runner import default_run_dir, run_eval
from rag.errors import KnowledgeBaseNotFoundError
from tests.evalkit import (
    GOOD_ANSWERS,
    HOTEL,
    PAYLOAD,
    VACATION,
    WORLD_CUP,
    build_kb,
    eval_config,
    write_questions,
)
from tests.fakes import FakeChatTokenizer, FakeEmbedder, FakeGenerator
from tests.filefactory import make_pdf


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, FakeEmbedder]:
    """The evaluation world's knowledge base in tmp_path/kb, and its questions file."""
    embedder = FakeEmbedder()
    build_kb(tmp_path, eval_config(tmp_path), embedder)
    return write_questions(tmp_path / "handbook.jsonl"), embedder


def test_full_run_writes_all_four_outputs(tmp_path: Path, world: tuple[Path, FakeEmbedder]) -> None:
    questions, embedder = world
    config = eval_config(tmp_path, ui__password="hunter2")
    generator = FakeGenerator(GOOD_ANSWERS)
    out = tmp_path / "run"
    summary = run_eval(
        load_dataset(questions), config, out, generator=generator, embedder=embedder, tokenizer=FakeChatTokenizer()
    )

    assert generator.calls == [[VACATION, PAYLOAD, HOTEL, WORLD_CUP]], "one batched generator call"
    assert (summary.questions, summary.evaluated, summary.resumed, summary.failed) == (4, 4, 0, ())
    assert set(summary.files) == {"samples", "metrics", "report", "trec", "qrels"}
    assert all(path.is_file() for path in summary.files.values())

    samples = {s.id: s for s in read_samples(out / "samples.jsonl")}
    vacation = samples["vacation"]
    assert vacation.answer == GOOD_ANSWERS[VACATION] and vacation.raw_output == GOOD_ANSWERS[VACATION]
    assert vacation.abstained is False and vacation.mode == "full"
    assert "[1] handbook.txt" in vacation.prompt and vacation.prompt_tokens > 0
    top = vacation.retrieved[0]
    assert Path(top.file).name == "handbook.txt" and top.id == "handbook.txt" and top.in_prompt
    assert top.rank == 1 and top.chunk_id is not None and top.score and top.retrievers and "28 days" in top.text
    assert vacation.citations[0].n == 1 and "28 days" in vacation.citations[0].quote
    metrics = vacation.metrics
    assert metrics["em"] == 0.0 and metrics["contains"] == 1.0 and 0 < metrics["f1"] < 1
    assert metrics["hit@5"] == 1.0 and metrics["mrr@10"] == 1.0 and vacation.first_relevant_rank == 1
    assert metrics["citation_recall"] == 1.0 and metrics["citation_precision"] == 1.0
    assert metrics["faithfulness"] == 1.0
    assert metrics["latency_s"] > 0 and metrics["completion_tokens"] == len(GOOD_ANSWERS[VACATION].split())
    assert set(vacation.timings) == {
        "retrieve_s",
        "prompt_s",
        "generate_s",
        "generate_call_s",
        "cite_s",
        "latency_s",
    }
    assert metrics["cites_gold"] == 1.0 and metrics["correct_and_cited"] == 1.0 and metrics["cited"] == 1.0

    world_cup = samples["worldcup"]
    assert world_cup.abstained is True and world_cup.unanswerable is True
    assert world_cup.metrics["f1"] is None and world_cup.metrics["citation_recall"] is None
    assert world_cup.metrics["hit@5"] is None, "no gold source: no retrieval metric"

    report = json.loads((out / "metrics.json").read_text())
    assert report["mode"] == "full" and report["dataset"]["name"] == "handbook"
    assert report["dataset"]["content_hash"] == load_dataset(questions).content_hash
    assert report["models"] == {
        "embedding": "fake/hashing-64",
        "reranker": None,
        "generator": "fake/generator",
        "judge": "overlap (content words, threshold 0.5)",
    }
    assert report["config"]["retrieval"]["top_k"] == 5 and report["project_version"]
    assert "hunter2" not in (out / "metrics.json").read_text() + (out / "run.json").read_text()
    assert report["config"]["ui"]["password"] == "**********"
    assert report["counts"] == {"questions": 4, "failed": 0, "answered": 3, "abstained": 1, "unanswerable": 1}
    assert report["abstention"]["precision"] == 1.0 and report["abstention"]["recall"] == 1.0
    assert report["metrics"]["contains"] == {"mean": 1.0, "ci95": [1.0, 1.0], "n": 3}
    assert report["metrics"]["hit@5"]["n"] == 3
    assert report["latency_s"]["p50"] > 0 and report["completion_tokens"]["p95"] > 0
    assert report["first_relevant_rank"] == {"1": 3}
    # The retrieval values are ranx's, per question; the means are theirs.
    ndcg = [s.metrics["ndcg@10"] for s in samples.values() if s.metrics["ndcg@10"] is not None]
    assert report["metrics"]["ndcg@10"]["mean"] == pytest.approx(np.mean(ndcg))

    html = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<script" not in html, "no script at all: the question is escaped"
    assert "<svg" in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")

    trec = (out / "run.trec").read_text().splitlines()
    assert trec[0] == f"vacation Q0 handbook.txt 1 1.000000 {out.name}"
    assert all(len(line.split()) == 6 for line in trec)
    assert "vacation 0 handbook.txt 1" in (out / "run.qrels").read_text()


def test_resume_generates_only_the_missing_questions(tmp_path: Path, world: tuple[Path, FakeEmbedder]) -> None:
    questions, embedder = world
    dataset, config, out = load_dataset(questions), eval_config(tmp_path), tmp_path / "run"
    first = FakeGenerator(GOOD_ANSWERS)
    summary = run_eval(dataset, config, out, generator=first, embedder=embedder, limit=2, tokenizer=FakeChatTokenizer())
    assert first.calls == [[VACATION, PAYLOAD]] and summary.questions == 2
    assert json.loads((out / "metrics.json").read_text())["counts"]["questions"] == 2

    # A kill in the middle of writing a record leaves a torn last line: it is cut and redone.
    with open(out / "samples.jsonl", "a", encoding="utf-8") as stream:
        stream.write('{"id": "hotel", "question": "torn')
    second = FakeGenerator(GOOD_ANSWERS)
    summary = run_eval(dataset, config, out, generator=second, embedder=embedder, tokenizer=FakeChatTokenizer())
    assert second.calls == [[HOTEL, WORLD_CUP]], "only the questions not yet in samples.jsonl"
    assert (summary.questions, summary.evaluated, summary.resumed) == (4, 2, 2)
    ids = [s.id for s in read_samples(out / "samples.jsonl")]
    assert sorted(ids) == ["hotel", "payload", "vacation", "worldcup"]

    third = FakeGenerator(GOOD_ANSWERS)
    summary = run_eval(dataset, config, out, generator=third, embedder=embedder, tokenizer=FakeChatTokenizer())
    assert third.calls == [] and summary.evaluated == 0 and summary.resumed == 4


def test_generation_is_batched_in_calls_of_generation_batch(tmp_path: Path, world: tuple[Path, FakeEmbedder]) -> None:
    questions, embedder = world
    generator = FakeGenerator(GOOD_ANSWERS)
    config = eval_config(tmp_path, eval__generation_batch=3)
    run_eval(
        load_dataset(questions), config, tmp_path / "run", generator=generator, embedder=embedder,
        tokenizer=FakeChatTokenizer(),
    )  # fmt: skip
    assert generator.calls == [[VACATION, PAYLOAD, HOTEL], [WORLD_CUP]]


def test_a_folder_holding_another_run_is_refused(tmp_path: Path, world: tuple[Path, FakeEmbedder]) -> None:
    questions, embedder = world
    dataset, out = load_dataset(questions), tmp_path / "run"
    run_eval(dataset, eval_config(tmp_path), out, embedder=embedder, retrieval_only=True)
    with pytest.raises(EvalRunError, match=r"other settings \(retrieval\)"):
        run_eval(dataset, eval_config(tmp_path, retrieval__top_k=3), out, embedder=embedder, retrieval_only=True)
    with pytest.raises(EvalRunError, match="mode retrieval-only"):
        run_eval(dataset, eval_config(tmp_path), out, generator=FakeGenerator(), embedder=embedder)


def test_retrieval_only_needs_no_generator(tmp_path: Path, world: tuple[Path, FakeEmbedder]) -> None:
    questions, embedder = world
    out = tmp_path / "run"
    summary = run_eval(load_dataset(questions), eval_config(tmp_path), out, embedder=embedder, retrieval_only=True)
    sample = next(s for s in read_samples(out / "samples.jsonl") if s.id == "payload")
    assert sample.answer is None and sample.prompt is None and sample.abstained is None
    assert sample.metrics["hit@5"] == 1.0 and sample.metrics["f1"] is None
    assert len(sample.retrieved) == 3, "every chunk of the tiny knowledge base, up to the depth"
    assert set(summary.metrics["metrics"]) == {
        "recall@5", "recall@10", "mrr@10", "ndcg@10", "hit@5", "hit@10", "latency_s",
    }  # fmt: skip
    assert summary.files["trec"].is_file()


def test_closed_book_answers_without_passages(tmp_path: Path) -> None:
    questions = write_questions(tmp_path / "handbook.jsonl")
    generator = FakeGenerator({VACATION: "Employees get 28 days.", PAYLOAD: "About 100 kg."})
    out = tmp_path / "run"
    summary = run_eval(
        load_dataset(questions), eval_config(tmp_path), out, generator=generator, closed_book=True,
        tokenizer=FakeChatTokenizer(),
    )  # fmt: skip
    samples = {s.id: s for s in read_samples(out / "samples.jsonl")}
    assert "(no passages were found)" in samples["vacation"].prompt and samples["vacation"].retrieved == []
    assert samples["vacation"].abstained is False, "closed-book: abstained only when it says so"
    assert samples["worldcup"].abstained is True
    assert samples["vacation"].metrics["contains"] == 1.0 and samples["payload"].metrics["contains"] == 0.0
    assert samples["vacation"].metrics["citation_recall"] is None
    assert "ndcg@10" not in summary.metrics["metrics"] and "trec" not in summary.files
    assert summary.metrics["kb_dir"] is None and summary.metrics["models"]["embedding"] is None


def test_a_question_too_long_for_the_context_fails_alone(tmp_path: Path, world: tuple[Path, FakeEmbedder]) -> None:
    _, embedder = world
    long_question = "vacation " * 300
    questions = write_questions(
        tmp_path / "long.jsonl",
        [{"id": "long", "question": long_question, "answers": ["x"]}, {"id": "ok", "question": VACATION,
         "answers": ["28 days"]}],
    )  # fmt: skip
    generator = FakeGenerator(GOOD_ANSWERS)
    config = eval_config(tmp_path, generator__max_model_len=300, generator__max_answer_tokens=64)
    summary = run_eval(
        load_dataset(questions), config, tmp_path / "run", generator=generator, embedder=embedder,
        tokenizer=FakeChatTokenizer(),
    )  # fmt: skip
    assert [question_id for question_id, _ in summary.failed] == ["long"]
    assert "shorten the question" in summary.failed[0][1]
    assert generator.calls == [[VACATION]]
    assert summary.metrics["counts"]["failed"] == 1 and summary.metrics["failed"][0]["id"] == "long"
    assert summary.metrics["metrics"]["contains"]["n"] == 1


def test_contradictory_arguments_are_refused(tmp_path: Path) -> None:
    dataset = load_dataset(write_questions(tmp_path / "q.jsonl"))
    config = eval_config(tmp_path)
    with pytest.raises(EvalRunError, match="retrieval-only or closed-book"):
        run_eval(dataset, config, tmp_path / "r", embedder=FakeEmbedder(), retrieval_only=True, closed_book=True)
    with pytest.raises(EvalRunError, match="needs a generator"):
        run_eval(dataset, config, tmp_path / "r", embedder=FakeEmbedder())
    with pytest.raises(EvalRunError, match="needs an embedder"):
        run_eval(dataset, config, tmp_path / "r", retrieval_only=True)
    with pytest.raises(KnowledgeBaseNotFoundError, match="rag ingest"):
        run_eval(dataset, config, tmp_path / "r", embedder=FakeEmbedder(), retrieval_only=True)
    assert not (tmp_path / "r").exists(), "no run folder for a run that cannot start"


def test_default_run_dir_is_named_after_the_dataset_and_time(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    dataset = load_dataset(write_questions(tmp_path / "handbook.jsonl"))
    folder = default_run_dir(eval_config(tmp_path), dataset, datetime(2026, 3, 1, 10, 15, tzinfo=UTC))
    assert folder == tmp_path / "runs" / "handbook-20260301T101500Z"


# ---------------------------------------------------------------------------------------------
# Benchmark corpora: a knowledge base built for the run and cached


def _beir(root: Path) -> Path:
    root.mkdir()
    corpus = [
        {"_id": "d1", "title": "Vacation", "text": "Employees receive 28 days of paid vacation."},
        {"_id": "doc/2", "title": "", "text": "The R2 robot carries 150 kg."},
        {"_id": ".hidden", "title": "Hotels", "text": "Hotels are reimbursed up to 180 euros per night."},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [{"_id": "q1", "text": "paid vacation days"}, {"_id": "q2", "text": "robot payload kg"},
               {"_id": "q3", "text": "hotel euros per night"}]  # fmt: skip
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\tdoc/2\t1\nq3\t.hidden\t1\n")
    return root


def test_corpus_ids_survive_the_file_name_round_trip() -> None:
    for doc_id in ["d1", "doc/2", ".hidden", "a b", "%41", "ü"]:
        name = corpus_file_name(doc_id)
        assert "/" not in name and not name.startswith(".") and corpus_id_of(f"/cache/docs/{name}") == doc_id


def test_beir_corpus_is_ingested_once_and_cached(tmp_path: Path) -> None:
    dataset = load_dataset(_beir(tmp_path / "tiny"))
    config = eval_config(tmp_path, retrieval__mode="keyword")
    embedder = FakeEmbedder()
    summary = run_eval(dataset, config, tmp_path / "run1", embedder=embedder, retrieval_only=True)

    cache = tmp_path / "runs" / CACHE_DIR / corpus_cache_key(dataset, config)
    assert sorted(p.name for p in (cache / "docs").iterdir()) == ["%2Ehidden.txt", "d1.txt", "doc%2F2.txt"]
    assert (cache / "docs" / "d1.txt").read_text() == "Vacation\n\nEmployees receive 28 days of paid vacation."
    assert summary.metrics["kb_dir"] == str(cache / "kb")
    samples = {s.id: s for s in read_samples(tmp_path / "run1" / "samples.jsonl")}
    assert samples["q2"].retrieved[0].id == "doc/2", "file names map back to corpus ids"
    assert samples["q3"].retrieved[0].id == ".hidden"
    assert summary.metrics["metrics"]["ndcg@10"]["mean"] == 1.0
    assert embedder.encoded_batches, "the corpus was embedded"

    again = FakeEmbedder()
    run_eval(dataset, config, tmp_path / "run2", embedder=again, retrieval_only=True)
    assert again.encoded_batches == [], "the cached knowledge base is reused"
    other = eval_config(tmp_path, chunking__chunk_tokens=64)
    assert corpus_cache_key(dataset, other) != corpus_cache_key(dataset, config), "chunking is part of the key"
    assert read_run(tmp_path / "run2").metrics is not None


def test_financebench_pdfs_are_ingested_and_gold_pages_scored(tmp_path: Path) -> None:
    root = tmp_path / "fb"
    (root / "pdfs").mkdir(parents=True)
    make_pdf(
        root / "pdfs" / "ACME_2023_10K.pdf",
        ["Acme annual report cover page.", "Revenue was 1.2 billion dollars in fiscal 2023.", "Risk factors."],
    )
    record = {
        "financebench_id": "fb1", "doc_name": "ACME_2023_10K", "question": "What was Acme revenue in fiscal 2023?",
        "answer": "$1.2 billion",
        "evidence": [{"evidence_text": "Revenue", "doc_name": "ACME_2023_10K", "evidence_page_num": 1}],
    }  # fmt: skip
    (root / "questions.jsonl").write_text(json.dumps(record) + "\n")
    dataset = load_dataset(root / "questions.jsonl")
    config = eval_config(tmp_path, retrieval__mode="keyword")
    summary = run_eval(dataset, config, tmp_path / "run", embedder=FakeEmbedder(), retrieval_only=True)
    sample = next(read_samples(tmp_path / "run" / "samples.jsonl"))
    assert sample.qrels == {"ACME_2023_10K.pdf#2": 1}, "0-based evidence page 1 is page 2"
    assert sample.retrieved[0].id == "ACME_2023_10K.pdf#2" and sample.retrieved[0].page == 2
    assert summary.metrics["metrics"]["hit@5"]["mean"] == 1.0


def test_sample_log_cuts_a_torn_line_and_keeps_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    with SampleLog.open(path) as log:
        log.append(Sample(id="a", question="x"))
    path.write_bytes(path.read_bytes() + b'{"id": "b", "question"')
    assert [r.id for r in read_samples(path)] == ["a"], "readers skip the torn line"
    with SampleLog.open(path) as log:
        assert set(log.done) == {"a"}
        log.append(Sample(id="b", question="y"))
    assert [r.id for r in read_samples(path)] == ["a", "b"]
    path.write_bytes(b'not json\n{"id": "c"}\n')
    with pytest.raises(EvalRunError, match="line 1"):
        list(read_samples(path))


def test_samples_of_earlier_versions_load_and_wrong_ones_say_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    # A record as an early version wrote it: numeric id, no unverified_sentences, passages
    # without spans, a citation with a key since dropped.
    old = {
        "id": 7, "question": "q?", "mode": "full", "metrics": {"f1": 0.5},
        "retrieved": [{"rank": 1, "id": "a.pdf#2", "file": "a.pdf", "page": 2, "score": 0.5, "text": "t"}],
        "citations": [{"n": 1, "file": "a.pdf", "page": 2, "start": 0, "end": 1, "quote": "t", "title": "a.pdf"}],
    }  # fmt: skip
    path.write_text(json.dumps(old) + "\n")
    (sample,) = read_samples(path)
    assert sample.id == "7" and sample.metric("f1") == 0.5 and sample.unverified_sentences is None
    assert sample.retrieved[0].where == "a.pdf p.2" and sample.citations[0].supported
    path.write_text(json.dumps(old | {"retrieved": [{"rank": "first", "id": "a.pdf#2", "file": "a.pdf"}]}) + "\n")
    with pytest.raises(EvalRunError, match=r"line 1: field 'retrieved.0.rank'.*rag eval. again with a new --out"):
        list(read_samples(path))
