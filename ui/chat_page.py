"""The chat page: ask, watch the answer stream in, check every citation on its page.

Thin: the work is in :class:`ui.service.ChatService`; this module lays it out with Streamlit.
All document text and model output goes through :mod:`ui.render`, which escapes it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from ingest.ocr import ENGINE_TITLES
from ingest.progress import FileEvent, describe
from rag.errors import KnowledgeBaseError, RagError
from rag.kb.sqlite_rows import database_damaged
from rag.pipeline import AnswerDelta
from rag.types import Answer, Citation, ScoredChunk
from ui.pdf_pages import Mark, PageRenderError, render_pdf_page, span_marks
from ui.render import (
    answer_html,
    citation_title,
    file_name,
    highlight_html,
    markdown_literal,
    passage_html,
    where,
)
from ui.service import ChatService, ChatSettings, KnowledgeBaseFacts, SourceView

ABSTAINED = "The documents do not answer this."
CONTEXT_CHARS = 700  # text shown either side of a quote in a file without pages
CLOSEST_PASSAGES = 3


@dataclass
class Turn:
    """One exchange of the conversation, kept in this browser session only."""

    question: str
    answer: Answer | None = None
    error: str | None = None  # Markdown: our own messages, or an error's words escaped
    notes: list[str] = field(default_factory=list)


def render_chat(service: ChatService) -> None:
    """The whole chat page for one script run of one browser session.

    A damaged knowledge base is one line on the page, the line `rag` prints (it names the damage
    and `rag check --repair`), never a stack trace."""
    try:
        _render_chat(service)
    except KnowledgeBaseError as exc:
        st.error(markdown_literal(str(exc)))
    except sqlite3.DatabaseError as exc:
        st.error(markdown_literal(str(database_damaged(str(service.config.kb_dir), exc))))


def _render_chat(service: ChatService) -> None:
    state: Any = st.session_state
    if "turns" not in state:
        state.turns = []
    facts = service.facts()
    settings = _sidebar(service, facts)

    st.title("Ask your documents")
    if facts is None:
        st.info(service.readiness() or "The knowledge base is empty.")
    for index, turn in enumerate(state.turns):
        _render_turn(service, turn, index)

    question = st.chat_input("Ask a question about your documents")
    if not question:
        return
    turn = Turn(question=question)
    state.turns.append(turn)
    with st.chat_message("user"):
        st.text(question)
    with st.chat_message("assistant"):
        # Asked here, not at every rerun: it is an HTTP call to the model server.
        blocked = service.readiness()
        if blocked:
            turn.error = blocked
            st.warning(blocked)
            return
        _stream_answer(service, turn, settings)
        if turn.answer is not None:
            _render_evidence(service, turn.answer, len(state.turns) - 1)


def _stream_answer(service: ChatService, turn: Turn, settings: ChatSettings) -> None:
    placeholder = st.empty()
    placeholder.caption("Searching the documents…")
    pieces: list[str] = []
    try:
        for event in service.stream(turn.question, settings):
            if isinstance(event, AnswerDelta):
                pieces.append(event.text)
                placeholder.html(answer_html("".join(pieces) + " ▌"))
            else:
                turn.answer = event
    except RagError as exc:
        turn.error = markdown_literal(str(exc))  # its words may quote a file name or a document
        placeholder.error(turn.error)
        return
    assert turn.answer is not None
    _render_answer_text(turn.answer, placeholder)


def _render_answer_text(answer: Answer, target: Any) -> None:
    if not answer.abstained:
        target.html(answer_html(answer.text, answer.unverified))
        if answer.unverified:
            target.caption("Greyed sentences are unverified: no passage supports them.")
        return
    target.warning(ABSTAINED)
    if answer.raw_output.strip():
        # Shown apart, so the user can see why: the reply cited nothing that checks out.
        with st.expander("The model's reply, which cites no passage that supports it"):
            st.html(answer_html(answer.raw_output))


def _render_turn(service: ChatService, turn: Turn, index: int) -> None:
    with st.chat_message("user"):
        st.text(turn.question)
    with st.chat_message("assistant"):
        if turn.error:
            st.error(turn.error)
        elif turn.answer is not None:
            _render_answer_text(turn.answer, st)
            _render_evidence(service, turn.answer, index)


def _render_evidence(service: ChatService, answer: Answer, turn_index: int) -> None:
    """Citation cards, or for an abstention the closest passages; timings last."""
    if answer.abstained:
        if answer.retrieved:
            st.caption("Closest passages:")
            for rank, hit in enumerate(answer.retrieved[:CLOSEST_PASSAGES], start=1):
                _passage_card(service, hit, f"t{turn_index}-closest{rank}")
    else:
        for position, citation in enumerate(_distinct(answer.citations)):
            _citation_card(service, citation, answer.retrieved, f"t{turn_index}-cite{position}")
    with st.expander(f"All {len(answer.retrieved)} retrieved passages", expanded=False):
        for rank, hit in enumerate(answer.retrieved, start=1):
            st.caption(f"[{rank}] {markdown_literal(_hit_title(hit))}")
            st.html(passage_html(hit.chunk.text))
    timings = answer.timings
    st.caption(
        f"{answer.model} · retrieval {timings.get('retrieve_s', 0):.2f} s · "
        f"first token {timings.get('first_token_s', 0):.2f} s · total {timings.get('total_s', 0):.1f} s"
    )


def _distinct(citations: Sequence[Citation]) -> list[Citation]:
    seen: set[tuple[int, int, int]] = set()
    result = []
    for citation in citations:
        key = (citation.n, citation.start, citation.end)
        if key not in seen:
            seen.add(key)
            result.append(citation)
    return result


def _hit_title(hit: ScoredChunk) -> str:
    page = where(hit.chunk.page, hit.chunk.page_label)
    return f"{file_name(hit.source)}{' · ' + page if page else ''} · score {hit.score:.3f}"


def _citation_card(service: ChatService, citation: Citation, retrieved: Sequence[ScoredChunk], key: str) -> None:
    with st.expander(markdown_literal(citation_title(citation))):
        st.html(f"<div><em>Claim:</em> {answer_html(citation.sentence)}</div>")
        hit = retrieved[citation.n - 1] if 0 < citation.n <= len(retrieved) else None
        view = service.source(hit.chunk, citation.start, citation.end) if hit is not None else None
        _source(view, citation.quote, citation.file, key)


def _passage_card(service: ChatService, hit: ScoredChunk, key: str) -> None:
    with st.expander(markdown_literal(_hit_title(hit))):
        _source(service.source(hit.chunk), hit.chunk.text, hit.source, key)


def _source(view: SourceView | None, quote: str, source: str, key: str) -> None:
    """The page the passage is on: picture and text for a PDF, the text around it otherwise."""
    if view is None:
        st.warning(f"{markdown_literal(file_name(source))} has changed or been removed since this answer was written.")
        return
    text = view.page.text
    if view.page.ocr_engine is not None:
        engine = ENGINE_TITLES.get(view.page.ocr_engine, view.page.ocr_engine)
        st.caption(
            f"Text read by OCR ({markdown_literal(engine)}) from a scan of the page: check a word on the picture "
            "before relying on it."
        )
    if view.is_pdf and view.page.number is not None:
        picture, words = st.columns([1, 1])
        # A page read by OCR has no text for PDFium to search: its OCR boxes place the span instead.
        marks = span_marks(view.page.boxes, view.start, view.end) if view.page.read_by_ocr else ()
        with picture:
            try:
                png = _page_png(
                    str(view.path), view.document.content_hash, view.page.number, "" if marks else quote, marks
                )
                st.image(png)
            except PageRenderError as exc:
                st.warning(markdown_literal(str(exc)))
        with words:
            marked = highlight_html(text, view.start, view.end)
            st.html(f'<div style="max-height: 640px; overflow-y: auto;">{marked}</div>')
    else:
        st.html(highlight_html(text, view.start, view.end, context=CONTEXT_CHARS))
    _download(view, key)


def _download(view: SourceView, key: str) -> None:
    path = view.path
    if not path.is_file():
        st.caption(f"The file is no longer at {markdown_literal(str(path))}.")
        return
    st.download_button(
        f"Download {markdown_literal(file_name(str(path)))}",
        data=path.read_bytes,  # read only when clicked
        file_name=path.name,
        mime=view.document.mime_type,
        key=f"download-{key}",
        on_click="ignore",
    )


@st.cache_data(max_entries=256, show_spinner=False)
def _page_png(path: str, content_hash: str, page: int, quote: str, marks: tuple[Mark, ...] = ()) -> bytes:
    """Cached per file content, page, quote and marks: reruns and other sessions reuse the picture."""
    del content_hash  # part of the cache key only: a changed file draws again
    return render_pdf_page(Path(path), page, quote, marks=marks)


def _sidebar(service: ChatService, facts: KnowledgeBaseFacts | None) -> ChatSettings:
    defaults = ChatSettings.defaults(service.config)
    with st.sidebar:
        st.header("Knowledge base")
        if facts is None:
            st.caption(f"{markdown_literal(str(service.config.kb_dir))}: empty")
        else:
            st.caption(markdown_literal(str(facts.directory)))
            first, second, third = st.columns(3)
            first.metric("Documents", f"{facts.documents:,}")
            second.metric("Pages", f"{facts.pages:,}")
            third.metric("Chunks", f"{facts.chunks:,}")
            st.caption(f"Embeddings: {markdown_literal(facts.embedding_model)}")
            st.caption(f"Generator: {markdown_literal(facts.generator_model)}")
            _last_run(facts)

        st.header("Settings")
        st.caption("For this browser session only.")
        top_k = st.slider("Passages given to the model (top-k)", 1, 20, min(defaults.top_k, 20), key="top_k")
        mode = st.radio(
            "Retrieval",
            ["hybrid", "dense"],
            index=0 if defaults.mode == "hybrid" else 1,
            format_func=lambda m: "Hybrid (dense + BM25)" if m == "hybrid" else "Dense only",
            key="mode",
        )
        rerank = st.toggle(
            "Cross-encoder reranker",
            value=defaults.rerank and service.reranker_available,
            disabled=not service.reranker_available,
            help=None if service.reranker_available else "Set retrieval.reranker_model in the configuration.",
            key="rerank",
        )
        temperature = st.slider("Temperature", 0.0, 2.0, float(defaults.temperature), 0.1, key="temperature")
        max_tokens = st.slider(
            "Longest answer (tokens)", 16, 1024, min(defaults.max_answer_tokens, 1024), 16, key="max_answer_tokens"
        )
        _uploads(service)
    return ChatSettings(
        top_k=int(top_k),
        mode="dense" if mode == "dense" else "hybrid",
        rerank=bool(rerank),
        temperature=float(temperature),
        max_answer_tokens=int(max_tokens),
    )


def _last_run(facts: KnowledgeBaseFacts) -> None:
    run = facts.last_run
    if run is None:
        return
    st.caption(f"Last ingest: {run.started_at[:19].replace('T', ' ')} UTC, {run.status}")
    if run.failed:
        with st.expander(f"{len(run.failed)} file(s) failed in the last ingest"):
            for failure in run.failed:
                st.text(f"{file_name(failure.path)}: {failure.reason}")


def _uploads(service: ChatService) -> None:
    st.header("Add documents")
    files = st.file_uploader(
        f"PDF, Word, HTML, Markdown or text; up to {service.config.ui.max_upload_mb:g} MB each",
        accept_multiple_files=True,
        key="uploads",
    )
    if not files or not st.button("Add to the knowledge base", key="add_files"):
        return
    bar = st.progress(0.0, text="Storing the files…")
    reporter = _ProgressReporter(bar)
    try:
        result = service.add_files([(f.name, f.getvalue()) for f in files], reporter)
    except RagError as exc:
        bar.empty()
        st.error(markdown_literal(str(exc)))
        return
    bar.empty()
    for name, reason in result.rejected:
        st.error(f"{markdown_literal(name)}: {reason}")
    summary = result.summary
    if summary is not None:
        for failure in summary.failed:
            st.error(f"{markdown_literal(file_name(failure.path))}: {markdown_literal(failure.reason)}")
        st.success(
            f"Added {summary.added}, updated {summary.updated}, unchanged {summary.unchanged}; "
            f"{summary.new_chunks} new passages in {summary.seconds:.1f} s."
        )


class _ProgressReporter:
    """Ingestion progress on a Streamlit bar, by bytes (so the estimate follows the work)."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._total = 1
        self._done = 0
        self._started = time.monotonic()

    def start(self, files: int, total_bytes: int) -> None:
        self._total = max(total_bytes, 1)
        self._started = time.monotonic()
        self._bar.progress(0.0, text=f"Reading {files} file(s)…")

    def file_done(self, event: FileEvent) -> None:
        self._done += event.size_bytes
        fraction = min(self._done / self._total, 1.0)
        elapsed = time.monotonic() - self._started
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        self._bar.progress(fraction, text=f"{markdown_literal(describe(event))} · about {eta:.0f} s left")

    def message(self, text: str) -> None:
        self._bar.progress(min(self._done / self._total, 1.0), text=markdown_literal(text))

    def finish(self) -> None:
        self._bar.progress(1.0, text="Done")
