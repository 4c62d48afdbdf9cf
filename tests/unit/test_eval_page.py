"""The evaluation page with Streamlit's AppTest, over two runs made by the real runner with the
fake generator (tests/evalkit.py): the run list, one run's metrics and questions, a comparison."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from eval.datasets import load_dataset
from eval.runner import run_eval
from tests.evalkit import GOOD_ANSWERS, PAYLOAD, VACATION, build_kb, eval_config, write_questions
from tests.fakes import FakeChatTokenizer, FakeEmbedder, FakeGenerator


def _page(runs_dir: str) -> None:
    # AppTest runs this function's source as a script: builtins only in the signature.
    from pathlib import Path

    from ui.eval_page import render_evaluation

    render_evaluation(Path(runs_dir))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    embedder = FakeEmbedder()
    config = eval_config(tmp_path)
    build_kb(tmp_path, config, embedder)
    dataset = load_dataset(write_questions(tmp_path / "handbook.jsonl"))
    # A gets the payload wrong; B gets it right but misses the vacation days.
    answers = {
        "a-run": GOOD_ANSWERS | {PAYLOAD: "The R2 robot carries up to 90 kg [1]."},
        "b-run": GOOD_ANSWERS | {VACATION: "Employees receive paid vacation each calendar year [1]."},
    }
    for name, canned in answers.items():
        run_eval(
            dataset, config, config.eval.runs_dir / name, generator=FakeGenerator(canned), embedder=embedder,
            tokenizer=FakeChatTokenizer(),
        )  # fmt: skip
    return config.eval.runs_dir


def _app(runs_dir: Path) -> AppTest:
    app = AppTest.from_function(_page, kwargs={"runs_dir": str(runs_dir)}, default_timeout=60).run()
    assert not app.exception, app.exception
    return app


def test_runs_are_listed_with_their_headline_metrics(runs_dir: Path) -> None:
    app = _app(runs_dir)
    overview = app.dataframe[0].value
    assert sorted(overview["run"]) == ["a-run", "b-run"]
    assert {"F1", "hit@5", "citation recall"} <= set(overview.columns)
    assert set(overview["questions"]) == {4}


def test_one_run_metrics_charts_and_a_question_opened(runs_dir: Path) -> None:
    app = _app(runs_dir)
    app.selectbox(key="eval_run").set_value("a-run").run()
    metrics = app.dataframe[1].value
    assert {"f1", "hit@5", "citation_recall"} <= set(metrics["metric"])
    intervals = zip(metrics["95% low"], metrics["mean"], metrics["95% high"], strict=True)
    assert all(low <= mean <= high for low, mean, high in intervals if not math.isnan(low))
    assert any("<svg" in element.proto.body for element in app.html), "charts drawn"

    app.text_input(key="eval_filter").input("hotel").run()
    (label,) = app.selectbox(key="eval_question").options
    assert label.startswith("hotel:")
    bodies = "\n".join(element.proto.body for element in app.html)
    assert "180 euros" in bodies and "<script>alert" not in bodies
    assert any("<script>alert('x')</script>" in text.value for text in app.text), "the question shown as text"


def test_filters_pick_abstentions(runs_dir: Path) -> None:
    app = _app(runs_dir)
    app.radio(key="eval_only").set_value("abstained").run()
    assert [option.split(":")[0] for option in app.selectbox(key="eval_question").options] == ["worldcup"]


def test_two_runs_compared(runs_dir: Path) -> None:
    app = _app(runs_dir)
    app.selectbox(key="eval_a").set_value("a-run")
    app.selectbox(key="eval_b").set_value("b-run").run()
    compared = app.dataframe[-1].value
    assert "f1" in set(compared["metric"]) and {"B − A", "p (permutation)"} <= set(compared.columns)
    texts = [text.value for text in app.text]
    assert any(text.startswith("+") and "payload" in text for text in texts)
    assert any(text.startswith("-") and "vacation" in text for text in texts)


def test_no_runs_says_how_to_make_one(tmp_path: Path) -> None:
    app = _app(tmp_path / "nothing")
    assert any("rag eval DATASET" in info.value for info in app.info)
