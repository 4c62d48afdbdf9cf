from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from eval.judges import (
    JudgeError,
    LlmJudge,
    NliJudge,
    OverlapJudge,
    build_judge,
    describe_judge,
    entailment_index,
    judge_messages,
    parse_verdict,
)
from rag.config import EvalConfig, load_config
from rag.errors import ConfigError, ModelLoadError
from tests.openai_server import RecordingChatServer


class FakeCrossEncoder:
    """A fake NLI cross-encoder: entailed when every word of the claim is in the premise."""

    instances: ClassVar[list[FakeCrossEncoder]] = []

    def __init__(self, model_id: str) -> None:
        self.config = type("Config", (), {"id2label": {0: "contradiction", 1: "entailment", 2: "neutral"}})()
        self.pairs: list[tuple[str, str]] = []
        FakeCrossEncoder.instances.append(self)

    def predict(self, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> Any:
        assert kwargs["apply_softmax"] is True
        self.pairs.extend(pairs)
        rows = []
        for premise, claim in pairs:
            entailed = set(claim.lower().split()) <= set(premise.lower().split())
            rows.append([0.05, 0.9, 0.05] if entailed else [0.3, 0.2, 0.5])
        return np.asarray(rows)


def test_build_judge_picks_the_configured_one(monkeypatch: pytest.MonkeyPatch) -> None:
    overlap = build_judge(EvalConfig(support_threshold=0.7))
    assert isinstance(overlap, OverlapJudge) and overlap.threshold == 0.7

    monkeypatch.setattr("sentence_transformers.CrossEncoder", FakeCrossEncoder)
    nli = build_judge(EvalConfig(judge="nli", judge_model="some/nli-model"))
    assert isinstance(nli, NliJudge) and nli.model_id == "some/nli-model"
    assert nli.supports("28 days", ["employees get 28 days"]), "loaded by build_judge"

    llm = build_judge(EvalConfig(judge="llm", judge_model="judge-model", judge_base_url="http://127.0.0.1:9/v1"))
    assert isinstance(llm, LlmJudge) and llm.model_id == "judge-model"
    assert (
        describe_judge(EvalConfig(judge="llm", judge_model="m", judge_base_url="http://h/v1")) == "llm m at http://h/v1"
    )


def test_model_judges_need_their_settings() -> None:
    with pytest.raises(ConfigError, match="judge 'nli' needs judge_model"):
        load_config(overrides={"eval.judge": "nli"}, environ={})
    with pytest.raises(ConfigError, match="judge_base_url"):
        load_config(environ={"RAG_EVAL_JUDGE": "llm", "RAG_EVAL_JUDGE_MODEL": "m"})
    config = load_config(environ={"RAG_EVAL_JUDGE": "nli", "RAG_EVAL_JUDGE_MODEL": "/models/nli"})
    assert config.eval.judge == "nli" and config.eval.judge_model == "/models/nli"


def test_entailment_index_is_read_from_the_labels() -> None:
    assert entailment_index({0: "contradiction", 1: "entailment", 2: "neutral"}, "m") == 1
    assert entailment_index({"0": "ENTAILMENT", "1": "NEUTRAL", "2": "CONTRADICTION"}, "m") == 0
    with pytest.raises(ModelLoadError, match=r"not an NLI model.*0: LABEL_0"):
        entailment_index({0: "LABEL_0"}, "cross-encoder/ms-marco")
    with pytest.raises(ModelLoadError, match="not an NLI model"):
        entailment_index(None, "m")


def test_nli_judge_thresholds_the_entailment_probability_and_remembers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sentence_transformers.CrossEncoder", FakeCrossEncoder)
    judge = NliJudge("m", threshold=0.5)
    with pytest.raises(RuntimeError, match="load"):
        judge.supports("a", ["a"])
    judge.load()
    model = FakeCrossEncoder.instances[-1]
    assert judge.supports("robots carry", ["robots", "carry boxes"]), "passages are joined into one premise"
    assert model.pairs == [("robots\n\ncarry boxes", "robots carry")]
    assert judge.entailment_probability("robots carry", ["robots", "carry boxes"]) == pytest.approx(0.9)
    assert len(model.pairs) == 1, "a repeated question is answered from memory"
    assert not judge.supports("robots fly", ["robots carry boxes"])
    assert not judge.supports("anything", []) and len(model.pairs) == 2
    assert not NliJudge("m", threshold=0.95).supports("x", []), "no passage, no support"


def test_nli_judge_load_failure_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(model_id: str) -> None:
        raise OSError("not found on the hub\nmore lines")

    monkeypatch.setattr("sentence_transformers.CrossEncoder", missing)
    with pytest.raises(ModelLoadError, match=r"'nope' cannot be loaded: not found on the hub\. .*eval\.judge=overlap"):
        NliJudge("nope").load()


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Yes", True),
        ("yes.", True),
        ("**No**", False),
        ("No, the passages say 150 kg.", False),
        ("  YES, it follows.", True),
        ("<think>yes or no? no idea</think>\nYes", True),
        ("The passages entail it, so the answer is yes.", True),
        ("The claim is not supported: no.", False),
        ("yesterday", None),
        ("I cannot tell.", None),
        ("The answer could be yes or no.", None),
        ("", None),
    ],
)
def test_parse_verdict(reply: str, verdict: bool | None) -> None:
    assert parse_verdict(reply) is verdict


def test_llm_judge_asks_and_parses_with_a_fake_chat_model() -> None:
    chat = FakeListChatModel(responses=["Yes.", "no", "maybe"])
    judge = LlmJudge("m", "http://127.0.0.1:9/v1", chat=chat)
    assert judge.supports("R2 carries 150 kg", ["The R2 carries up to 150 kg."]) is True
    assert judge.supports("R2 carries 150 kg", ["The R2 carries up to 150 kg."]) is True, "remembered: no call"
    assert judge.supports("R2 flies", ["The R2 carries up to 150 kg."]) is False
    assert judge.supports("R2 swims", ["x"]) is False and judge.unparsed == 1
    assert judge.supports("R2 swims", []) is False
    messages = judge_messages("claim text", ["first", "second"])
    assert messages[0]["role"] == "system" and "yes or no" in messages[0]["content"]
    assert "[1] first\n\n[2] second" in messages[1]["content"] and "Claim: claim text" in messages[1]["content"]


def test_llm_judge_server_failure_is_a_judge_error() -> None:
    class DownChat(FakeListChatModel):
        def invoke(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("connection refused")

    judge = LlmJudge("m", "http://127.0.0.1:9/v1", chat=DownChat(responses=["unused"]))
    with pytest.raises(JudgeError, match=r"did not answer \(connection refused\).*eval\.judge=overlap"):
        judge.supports("claim", ["passage"])


JUDGE_KEY = "judge-k3y-that-must-not-show"


def test_the_llm_judge_sends_the_configured_key_to_its_server() -> None:
    with RecordingChatServer(["Yes."]) as server:
        config = load_config(
            environ={
                "RAG_EVAL_JUDGE": "llm",
                "RAG_EVAL_JUDGE_MODEL": "judge-model",
                "RAG_EVAL_JUDGE_BASE_URL": server.base_url,
                "RAG_EVAL_JUDGE_API_KEY": JUDGE_KEY,
            }
        ).eval
        assert JUDGE_KEY not in repr(config) and JUDGE_KEY not in describe_judge(config)
        assert build_judge(config).supports("claim", ["passage"]) is True
    assert server.seen == [("/v1/chat/completions", f"Bearer {JUDGE_KEY}")]


def test_the_llm_judge_needs_no_key_for_a_server_without_one() -> None:
    with RecordingChatServer(["No."]) as server:
        judge = build_judge(EvalConfig(judge="llm", judge_model="judge-model", judge_base_url=server.base_url))
        assert judge.supports("claim", ["passage"]) is False
    [(path, authorization)] = server.seen
    assert path == "/v1/chat/completions" and authorization == "Bearer unused"
