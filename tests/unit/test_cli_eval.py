"""``rag eval`` through ``ui.cli.main`` with the models replaced by fakes (no vLLM, no MiniLM)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rag.config import AppConfig
from tests.evalkit import GOOD_ANSWERS, VACATION, build_kb, eval_config, write_questions
from tests.fakes import FakeComponents, FakeEmbedder, FakeEngineGenerator
from ui.cli import build_parser
from ui.cli import main as cli_main

# The fake factories of the command runs in this test, each holding the engines it built.
built: list[FakeComponents] = []


def fake_components(config: AppConfig) -> FakeComponents:
    built.append(FakeComponents(config, answers=GOOD_ANSWERS))
    return built[-1]


def main(argv: list[str]) -> int:
    """``rag ARGV...`` with fakes in place of the real models."""
    return cli_main(argv, components=fake_components)


def engines() -> list[FakeEngineGenerator]:
    """The in-process generators the commands built."""
    return [engine for components in built for engine in components.engines]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A knowledge base in tmp_path/kb built with the fake embedder, and the flags that go with it."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("RAG_")]:
        monkeypatch.delenv(name)
    built.clear()
    build_kb(tmp_path, eval_config(tmp_path), FakeEmbedder())
    return [
        "--kb", str(tmp_path / "kb"), "--set", "embedding.model=fake/hashing-64", "--set", "ingest.workers=0",
        "--set", f"eval.runs_dir={tmp_path / 'runs'}", "--set", "eval.bootstrap_resamples=200",
    ]  # fmt: skip


def test_rag_eval_runs_and_prints_json(tmp_path: Path, cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    questions = write_questions(tmp_path / "handbook.jsonl")
    out = tmp_path / "run"
    assert main(["eval", str(questions), "--out", str(out), "--json", *cli]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "full" and result["questions"] == 4 and result["failed"] == []
    assert result["headline"]["contains"] == 1.0 and "ndcg@10" in result["headline"]
    assert set(result["files"]) == {"samples", "metrics", "report", "trec", "qrels"}
    (generator,) = engines()
    assert generator.loaded and generator.closed and generator.location == "/models/fake"
    assert len(generator.calls) == 1


def test_rag_eval_text_output_and_exit_2_when_a_question_fails(
    tmp_path: Path, cli: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    questions = write_questions(
        tmp_path / "long.jsonl",
        [{"id": "long", "question": "vacation " * 300, "answers": ["x"]},
         {"id": "ok", "question": VACATION, "answers": ["28 days"]}],
    )  # fmt: skip
    settings = ["--set", "generator.max_model_len=300", "--set", "generator.max_answer_tokens=64"]
    code = main(["eval", str(questions), "--out", str(tmp_path / "run"), *cli, *settings])
    output = capsys.readouterr()
    assert code == 2
    assert "failed long: the question needs" in output.out and "report:" in output.out
    assert "--out" in output.err, "stderr says how to continue a stopped run"


def test_retrieval_only_loads_no_generator_and_default_out_is_under_runs_dir(
    tmp_path: Path, cli: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    questions = write_questions(tmp_path / "handbook.jsonl")
    assert main(["eval", str(questions), "--retrieval-only", "--limit", "2", "--format", "own", "--json", *cli]) == 0
    result = json.loads(capsys.readouterr().out)
    assert engines() == []
    assert Path(result["out_dir"]).parent == tmp_path / "runs" and result["out_dir"].startswith(
        str(tmp_path / "runs" / "handbook-")
    )
    assert result["questions"] == 2 and result["headline"]["hit@5"] == 1.0


def test_rag_eval_compare(tmp_path: Path, cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    questions = write_questions(tmp_path / "handbook.jsonl")
    for name, mode in (("a", "dense"), ("b", "keyword")):
        flags = ["--retrieval-only", "--set", f"retrieval.mode={mode}"]
        assert main(["eval", str(questions), "--out", str(tmp_path / name), *flags, *cli]) == 0
    capsys.readouterr()
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["primary"] == "ndcg@10" and result["paired"] == 4
    assert {row["name"] for row in result["metrics"]} >= {"ndcg@10", "hit@5", "recall@10"}
    assert (tmp_path / "b" / "compare.html").is_file()
    assert "<h2>Comparison</h2>" in (tmp_path / "b" / "report.html").read_text()

    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    text = capsys.readouterr().out
    assert "nDCG@10" in text and "p perm" in text and (tmp_path / "cmp" / "compare.html").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "a.jsonl", "b.jsonl"], "expected one DATASET, or `compare RUN_A RUN_B`"),
        (["eval", "q.jsonl", "--retrieval-only", "--closed-book"], "exclude each other"),
        (["eval", "q.jsonl", "--limit", "0"], "--limit must be at least 1"),
        (["eval", "compare", "x", "y", "--limit", "3"], "--limit do(es) not apply"),
        (["eval", "compare", "x", "y"], "not an evaluation run folder"),
        (["eval", "compare"], "compare: no such file or folder"),
        (["eval", "missing.jsonl"], "missing.jsonl: no such file or folder"),
    ],
)
def test_usage_errors_exit_1(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.jsonl").write_text('{"question": "q?", "answers": []}\n')
    assert main(argv) == 1
    assert message in " ".join(capsys.readouterr().err.split())


def test_parser_reads_every_eval_option() -> None:
    args = build_parser().parse_args(
        ["eval", "data", "--kb", "kb", "--out", "o", "--format", "beir", "--docs", "d", "--retrieval-only",
         "--limit", "5", "--set", "retrieval.top_k=8", "--json"]
    )  # fmt: skip
    assert args.targets == ["data"] and args.kb == "kb" and args.out == Path("o")
    assert (args.format, args.docs, args.retrieval_only, args.closed_book, args.limit, args.json) == (
        "beir", Path("d"), True, False, 5, True,
    )  # fmt: skip
    assert args.settings == ["retrieval.top_k=8"]
    compare: Any = build_parser().parse_args(["eval", "--json", "compare", "A", "B"])
    assert compare.targets == ["compare", "A", "B"] and compare.json
