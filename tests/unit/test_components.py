"""The one factory of components (``rag.components``), and the ``rag`` command taking a fake one.

What is cheap is built for real here (the server client and its URL, the in-process engine
unloaded, retrievers over a real knowledge base, the support scorers); the commands run with
``FakeComponents``, as a test hands in any component instead of patching a module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag.components import Components
from rag.errors import ModelLoadError
from rag.generator import VllmGenerator
from rag.kb.embedded import EmbeddedKnowledgeBase
from rag.retriever import CrossEncoderReranker
from rag.server import ServerState
from tests.evalkit import GOOD_ANSWERS, PAYLOAD, VACATION, build_kb, eval_config
from tests.fakes import FakeComponents, FakeEmbedder
from ui.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_factory_and_the_command_loads_no_model_library() -> None:
    # Each component's module is imported when it is built: `rag model status` pays for no model.
    heavy = ("torch", "vllm", "sentence_transformers", "transformers", "bm25s", "numba", "faiss", "langchain_openai")
    code = f"import sys, rag.components, ui.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_server_url_is_formatted_in_one_place(make_config: Any) -> None:
    components = Components(make_config(generator__host="127.0.0.2", generator__port=8123))
    assert components.server_url() == "http://127.0.0.2:8123/v1"
    assert ServerState(1, "127.0.0.2", 8123, "m").base_url == components.server_url()
    assert components.server_generator().model_id == components.config.generator.model


def test_the_in_process_engine_is_built_unloaded_from_the_model_folder(make_config: Any, tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    engine = Components(make_config(generator__model=str(folder))).vllm_generator()
    assert isinstance(engine, VllmGenerator) and engine.model_id == str(folder)
    with pytest.raises(RuntimeError, match="call load"):
        engine.generate([])
    unprovisioned = make_config(data_dir=tmp_path / "empty")  # the default generator, not provisioned
    with pytest.raises(ModelLoadError, match="make install"):
        Components(unprovisioned).vllm_generator()


def test_retriever_and_support_scorer_follow_the_configuration(tmp_path: Path) -> None:
    config = eval_config(tmp_path)
    build_kb(tmp_path, config)
    components = Components(config)
    embedder = FakeEmbedder()
    assert components.reranker() is None, "no reranker configured: none is loaded"
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        retriever = components.retriever(kb, embedder)
        assert not isinstance(retriever, CrossEncoderReranker)
        (hit, *_) = retriever.retrieve(VACATION, 3)
        assert hit.source.endswith("handbook.txt") and set(hit.retrievers) == {"dense", "bm25"}
    assert components.support_scorer(embedder).name == "embedding+lexical"
    assert components.support_scorer(None).name == "lexical"
    assert components.citer(embedder) is not components.citer(embedder), "each call builds its own"


@pytest.fixture
def kb_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("RAG_")]:
        monkeypatch.delenv(name)
    build_kb(tmp_path, eval_config(tmp_path))
    return ["--kb", str(tmp_path / "kb"), "--set", "embedding.model=fake/hashing-64"]


def test_rag_search_and_ask_batch_use_the_components_given(
    tmp_path: Path, kb_flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    built: list[FakeComponents] = []

    def components(config: Any) -> FakeComponents:
        built.append(FakeComponents(config, answers=GOOD_ANSWERS))
        return built[-1]

    assert main(["search", "robot payload", "--json", *kb_flags], components=components) == 0
    assert json.loads(capsys.readouterr().out)[0]["file"].endswith("robot.md")

    questions = tmp_path / "questions.txt"
    questions.write_text(f"{VACATION}\n{PAYLOAD}\n")
    assert main(["ask", "--batch", str(questions), "--json", *kb_flags], components=components) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [answer["answer"] for answer in answers] == [GOOD_ANSWERS[VACATION], GOOD_ANSWERS[PAYLOAD]]
    assert all(answer["citations"][0]["supported"] for answer in answers)
    (engine,) = built[-1].engines
    assert engine.loaded and engine.closed and engine.calls == [[VACATION, PAYLOAD]], "one batched call"
