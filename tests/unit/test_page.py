"""The chat page's logic with Streamlit's AppTest: a real knowledge base (SQLite, FAISS, BM25)
built with the fake embedder, and a fake generator that streams a canned reply. The real page in
a real browser over the real model is tests/integration/test_page_browser.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from ingest.job import run_ingest
from rag.config import AppConfig
from rag.prompt import Prompt
from tests.fakes import FakeComponents, FakeEmbedder, FakeGenerator, FakeOcrEngine
from tests.filefactory import make_pdf, make_scanned_pdf
from ui.service import UPLOAD_DIR_NAME, ChatService, ChatSettings

VACATION = "Full-time employees receive 28 days of paid vacation per calendar year."


class RecordingFakeGenerator(FakeGenerator):
    """The fake generator (every question gets ``reply``), recording the configurations the page
    built it with."""

    def __init__(self, reply: str) -> None:
        super().__init__(default=reply)
        self.configs: list[AppConfig] = []

    def built_with(self, config: AppConfig) -> RecordingFakeGenerator:
        self.configs.append(config)
        return self


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    make_pdf(docs / "handbook.pdf", ["Welcome to the company.", f"Paid time off\n{VACATION}"])
    (docs / "robot.md").write_text("# R2 robot\n\nThe R2 robot carries a payload of 40 kg.\n")
    (docs / "markup.md").write_text(
        "The markup note: <script>window.pwned = 1</script> and **bold** [link](http://x).\n"
    )
    return docs


def _service(config: AppConfig, reply: str, readiness: str | None = None) -> tuple[ChatService, RecordingFakeGenerator]:
    generator = RecordingFakeGenerator(reply)
    service = ChatService(
        config,
        components=FakeComponents(config, server_generator=generator.built_with),
        readiness=lambda _components: readiness,
    )
    service.load()
    return service, generator


@pytest.fixture
def config(make_config: Any, corpus: Path) -> AppConfig:
    config: AppConfig = make_config(embedding__model="fake/hashing-64", ingest__workers=0, ui__max_upload_mb=0.01)
    run_ingest([corpus], config, FakeEmbedder())
    return config


def _page(service: object) -> None:
    # AppTest runs this function's source as a script: builtins only in the signature.
    from ui.chat_page import render_chat

    render_chat(service)  # type: ignore[arg-type]


def _app(service: ChatService) -> AppTest:
    app = AppTest.from_function(_page, kwargs={"service": service}, default_timeout=30)
    app.run()
    assert not app.exception, app.exception
    return app


def _ask(app: AppTest, question: str) -> AppTest:
    app.chat_input[0].set_value(question).run()
    assert not app.exception, app.exception
    return app


def _html(app: AppTest) -> str:
    return "\n".join(element.proto.body for element in app.html)


def test_an_answer_with_a_citation_card_on_its_page(config: AppConfig) -> None:
    service, generator = _service(config, "Full-time employees receive 28 days of paid vacation [1].")
    app = _ask(_app(service), "How many vacation days do full-time employees get?")

    assert "28 days of paid vacation" in _html(app)
    assert 'class="rag-cite"' in _html(app), "the [1] marker is styled as a citation"
    labels = [expander.label for expander in app.expander]
    card = next(label for label in labels if label.startswith("\\[1\\]"))
    assert "handbook\\.pdf" in card and "page 2" in card and "support" in card
    # Inside the card: the quoted words marked in the page's text.
    assert '<mark class="rag-quote"' in _html(app) and "paid vacation per calendar year" in _html(app)
    downloads = [element.proto.label for element in app.get("download_button")]  # type: ignore[attr-defined]
    assert "Download handbook\\.pdf" in downloads  # a label is Markdown: the name is escaped
    assert "fake/generator" in " ".join(caption.value for caption in app.caption)
    # The prompt the generator saw numbers the passages; the first is the handbook's page 2.
    assert "[1] handbook.pdf, page 2" in generator.prompts[0].text


def test_a_citation_on_a_page_read_by_ocr_says_so_and_marks_the_ocr_boxes(
    make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.ocr
    import ui.chat_page

    engine = FakeOcrEngine(
        [("Forklift drivers renew their licence", 0.1, 0.1, 0.7, 0.12), ("every two years.", 0.1, 0.13, 0.4, 0.15)]
    )
    monkeypatch.setattr(ingest.ocr, "load_engine", lambda settings: engine)
    drawn: list[tuple[int, str, tuple[Any, ...]]] = []

    def render(path: Path, page: int, quote: str = "", width_px: int = 900, marks: Any = ()) -> bytes:
        drawn.append((page, quote, tuple(marks)))
        return original(path, page, quote, width_px, marks)

    original = ui.chat_page.render_pdf_page
    monkeypatch.setattr(ui.chat_page, "render_pdf_page", render)
    docs = tmp_path / "scans"
    make_scanned_pdf(docs / "safety.pdf", ["Safety rules for the warehouse.", "Forklift licences."], scanned=[2])
    config: AppConfig = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    run_ingest([docs], config, FakeEmbedder())
    service, _ = _service(config, "Forklift drivers renew their licence every two years [1].")
    app = _ask(_app(service), "How often do forklift drivers renew their licence?")
    card = next(label for label in (e.label for e in app.expander) if label.startswith("\\[1\\]"))
    assert "safety\\.pdf" in card and "page 2" in card
    assert any("Text read by OCR (fake\\-ocr)" in caption.value for caption in app.caption), [
        c.value for c in app.caption
    ]
    page, quote, marks = drawn[-1]
    assert page == 2 and quote == "", "a scanned page is not searched by PDFium"
    assert marks and all(top >= 0.1 and bottom <= 0.15 for _, top, _, bottom in marks), marks


def test_the_conversation_is_kept_in_the_session_and_rerendered(config: AppConfig) -> None:
    service, _ = _service(config, "The R2 robot carries 40 kg [1].")
    app = _ask(_app(service), "What payload can the R2 robot carry?")
    app = _ask(app, "And the vacation?")
    assert [turn.question for turn in app.session_state["turns"]] == [
        "What payload can the R2 robot carry?",
        "And the vacation?",
    ]
    users = [message for message in app.get("chat_message") if message.proto.name == "user"]  # type: ignore[attr-defined]
    assert len(users) == 2


def test_an_abstention_is_shown_as_such_with_the_closest_passages(config: AppConfig) -> None:
    service, _ = _service(config, "I am not sure, maybe ask someone.")
    app = _ask(_app(service), "What is the office wifi password?")
    assert [warning.value for warning in app.warning] == ["The documents do not answer this."]
    labels = [expander.label for expander in app.expander]
    assert any("score" in label for label in labels), "closest passages offered"
    assert any(label.startswith("The model's reply") for label in labels)


def test_document_text_and_model_output_are_escaped(config: AppConfig) -> None:
    service, _ = _service(config, "It says <script>alert(1)</script> and <b>bold</b> [1].")
    app = _ask(_app(service), "What does the markup note say?")
    html = _html(app)
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, "model output shown as text"
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html, "document text shown as text"


def test_an_empty_knowledge_base_says_what_to_run(make_config: Any) -> None:
    config = make_config(embedding__model="fake/hashing-64")
    service, _ = _service(config, "unused")
    app = _app(service)
    assert any("rag ingest PATH --kb" in info.value for info in app.info)
    app = _ask(app, "Anything?")
    assert any("is empty" in warning.value for warning in app.warning)


def test_a_model_server_that_is_down_is_a_message_not_a_traceback(config: AppConfig) -> None:
    service, generator = _service(config, "unused", readiness="The model server at 127.0.0.1:1 is not running.")
    app = _ask(_app(service), "How many vacation days?")
    assert any("is not running" in warning.value for warning in app.warning)
    assert not generator.prompts


def test_a_generator_failure_mid_answer_is_shown(config: AppConfig) -> None:
    from rag.errors import GeneratorUnavailableError

    class FailingGenerator(FakeGenerator):
        def stream(self, prompt: Prompt) -> Iterator[str]:
            yield "Full-time"
            raise GeneratorUnavailableError("the model server did not answer (ConnectError)")

    service = ChatService(
        config,
        components=FakeComponents(config, server_generator=lambda _config: FailingGenerator()),
        readiness=lambda _components: None,
    )
    service.load()
    app = _ask(_app(service), "How many vacation days?")
    assert any("did not answer" in error.value for error in app.error)


def test_sidebar_settings_reach_the_pipeline(config: AppConfig) -> None:
    service, generator = _service(config, "28 days [1].")
    app = _app(service)
    assert app.slider(key="top_k").label.startswith("Passages")
    app.slider(key="top_k").set_value(1)
    app.radio(key="mode").set_value("dense")
    app.slider(key="max_answer_tokens").set_value(64).run()
    _ask(app, "How many vacation days?")
    prompt = generator.prompts[-1]
    assert len(prompt.passages) == 1, "top-k 1 gives one passage"
    assert all(hit.retrievers == ("dense",) for hit in prompt.passages)
    assert generator.configs[-1].generator.max_answer_tokens == 64
    # The reranker cannot be switched on when none is configured.
    assert app.toggle(key="rerank").disabled
    assert "Documents" in [metric.label for metric in app.metric]


def test_settings_apply_over_the_configuration(config: AppConfig) -> None:
    settings = ChatSettings(top_k=3, mode="dense", rerank=False, temperature=0.7, max_answer_tokens=99)
    applied = settings.apply(config)
    assert (applied.retrieval.top_k, applied.retrieval.mode, applied.retrieval.reranker_model) == (3, "dense", None)
    assert (applied.generator.temperature, applied.generator.max_answer_tokens) == (0.7, 99)
    assert applied.kb_dir == config.kb_dir
    with pytest.raises(Exception, match="top_k"):
        ChatSettings(top_k=0, mode="dense", rerank=False, temperature=0.0, max_answer_tokens=9).apply(config)


def test_uploads_are_sanitised_limited_stored_in_the_kb_and_ingested(config: AppConfig) -> None:
    service, _ = _service(config, "unused")
    before = service.facts()
    assert before is not None
    result = service.add_files(
        [
            ("../../etc/evil notes.md", b"# Evil\nThe canteen serves soup on Fridays.\n"),
            (".hidden.txt", b"Hidden files become visible names."),
            ("big.txt", b"x" * 20_000),  # over the 0.01 MB limit of this configuration
            ("tool.exe", b"MZ"),
        ]
    )
    upload_dir = config.kb_dir / UPLOAD_DIR_NAME
    assert sorted(p.name for p in result.saved) == ["evil notes.md", "hidden.txt"]
    assert all(p.parent == upload_dir for p in result.saved)
    assert not (config.kb_dir.parent.parent / "etc").exists()
    reasons = dict(result.rejected)
    assert "over the 0.01 MB limit" in reasons["big.txt"] and "unsupported file type" in reasons["tool.exe"]
    assert result.summary is not None and result.summary.added == 2
    after = service.facts()
    assert after is not None and after.documents == before.documents + 2
    # The page's retrieval sees the new documents at once (the indexes follow the generation).
    hits = service.pipeline(ChatSettings.defaults(config)).retrieve_many(["canteen soup Fridays"])[0]
    assert Path(hits[0].source).name == "evil notes.md"
    # The same name with other content gets a numbered name; the same content is reused.
    again = service.add_files([("evil notes.md", b"# Evil\nThe canteen serves soup on Fridays.\n")])
    other = service.add_files([("evil notes.md", b"Different words entirely.")])
    assert again.saved[0].name == "evil notes.md" and other.saved[0].name == "evil notes-2.md"


def test_the_page_shows_the_last_ingest_failures(config: AppConfig, corpus: Path) -> None:
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7 this is not really a PDF")
    run_ingest([corpus], config, FakeEmbedder())
    service, _ = _service(config, "unused")
    app = _app(service)
    assert any("failed in the last ingest" in expander.label for expander in app.expander)
    assert any("broken.pdf" in text.value for text in app.text)


def test_password_gate(make_config: Any) -> None:
    def gated(config: object) -> None:
        import streamlit as st

        from ui.app import password_gate

        if password_gate(config):  # type: ignore[arg-type]
            st.success("inside")

    config = make_config(ui__password="s3cret")
    app = AppTest.from_function(gated, kwargs={"config": config}, default_timeout=30).run()
    assert not app.success and app.text_input(key="password")
    app.text_input(key="password").input("wrong").run()
    assert [e.value for e in app.error] == ["Wrong password."] and not app.success
    app.text_input(key="password").input("s3cret").run()
    assert [s.value for s in app.success] == ["inside"]
    open_page = AppTest.from_function(gated, kwargs={"config": make_config()}, default_timeout=30).run()
    assert [s.value for s in open_page.success] == ["inside"] and not open_page.text_input


def test_a_damaged_knowledge_base_is_one_line_naming_the_repair(config: AppConfig) -> None:
    next(config.kb_dir.glob("index-*.faiss")).unlink()
    service, _ = _service(config, "unused")
    app = _ask(_app(service), "How many vacation days?")
    errors = [element.value for element in app.error]
    assert any("is damaged" in e and "rag check \\-\\-repair" in e for e in errors), errors

    with sqlite3.connect(config.kb_dir / "kb.sqlite") as db:
        db.execute("UPDATE meta SET value = '{}' WHERE key = 'manifest'")
    app = _app(_service(config, "unused")[0])  # a new page process: the manifest is read on open
    assert [e.value for e in app.error] and "manifest" in app.error[0].value and not app.exception


def test_the_page_answers_and_takes_uploads_over_a_knowledge_base_in_milvus_lite(
    make_config: Any, corpus: Path, tmp_path: Path
) -> None:
    config: AppConfig = make_config(
        kb_dir=f"milvus-lite:{tmp_path / 'kb.db'}",
        data_dir=tmp_path / "data",
        embedding__model="fake/hashing-64",
        ingest__workers=0,
    )
    run_ingest([corpus], config, FakeEmbedder())
    service, _ = _service(config, "Full-time employees receive 28 days of paid vacation [1].")
    # An upload is ingested in this process while the page holds the knowledge base open (first:
    # the page test below replaces __main__, which the upload's spawned loader re-imports).
    assert service.facts() is not None
    result = service.add_files([("canteen.md", b"The canteen serves soup on Fridays.\n")])
    assert result.summary is not None and result.summary.added == 1, result.summary
    assert result.saved[0].parent == config.data_dir / UPLOAD_DIR_NAME / "rag_chunks"
    hits = service.pipeline(ChatSettings.defaults(config)).retrieve_many(["canteen soup Fridays"])[0]
    assert Path(hits[0].source).name == "canteen.md"

    app = _ask(_app(service), "How many vacation days do full-time employees get?")
    card = next(label for label in (expander.label for expander in app.expander) if label.startswith("\\[1\\]"))
    assert "handbook\\.pdf" in card and "page 2" in card, card
    assert '<mark class="rag-quote"' in _html(app) and "paid vacation per calendar year" in _html(app)
