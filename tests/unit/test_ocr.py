"""Scanned pages read by OCR (issue 15, item 3): which pages, their text and boxes, the job's
counts, the knowledge base's columns, the marks on the page's picture.

Most tests use ``FakeOcrEngine`` (no model) in-process; the tests marked below run the real
engines on real scans made by ``tests.filefactory.make_scanned_pdf`` (300-dpi pictures of text
pages, rebuilt as a PDF with no text layer): RapidOCR always (it is a dependency), Tesseract where
its program is installed.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import ingest.ocr
from ingest.job import IngestSummary, run_ingest
from ingest.loaders import PdfLoader
from ingest.ocr import (
    OcrLine,
    OcrSettings,
    OcrText,
    check_engine,
    page_text,
    pages_to_read,
    rows_of,
    tesseract_lines,
    with_ocr_text,
)
from ingest.progress import describe
from rag.errors import ConfigError, DocumentLoadError
from rag.kb.embedded import EmbeddedKnowledgeBase, EmbeddedWriter
from rag.records import OcrFile, TextlessFile
from rag.types import LoadedDocument, Page, TextBox
from tests.fakes import FakeEmbedder, FakeIngestReporter, FakeOcrEngine
from tests.filefactory import make_scanned_pdf
from ui.cli import main as cli_main
from ui.pdf_pages import render_pdf_page, span_marks

FIRST = "Revenue grew by ten percent in the third quarter of the year."
SCANNED = "The warehouse in Tromsdalen opens at half past six every morning."
LAST = "Costs fell sharply after the new contracts were signed."
FAKE_LINES = [("The fake scanner read this line", 0.1, 0.1, 0.6, 0.12), ("and this one too", 0.1, 0.14, 0.4, 0.16)]
FAKE_TEXT = "The fake scanner read this line\nand this one too"


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeOcrEngine:
    """The fake engine in place of the configured one, for runs in this process (workers = 0)."""
    engine = FakeOcrEngine(FAKE_LINES)
    monkeypatch.setattr(ingest.ocr, "load_engine", lambda settings: engine)
    return engine


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A mixed PDF (text, scanned, text, blank) and a wholly scanned one."""
    folder = tmp_path_factory.mktemp("scans")
    return {
        "mixed": make_scanned_pdf(folder / "mixed.pdf", [FIRST, SCANNED, LAST, ""], scanned=[2]),
        "scanned": make_scanned_pdf(folder / "scanned.pdf", [SCANNED, LAST]),
    }


def _ingest(folder: Path, config: Any) -> tuple[IngestSummary, FakeIngestReporter]:
    reporter = FakeIngestReporter()
    return run_ingest([folder], config, FakeEmbedder(), reporter), reporter


def _folder(tmp_path: Path, *files: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    for file in files:
        shutil.copy(file, folder / file.name)
    return folder


# --- the scans the tests make -----------------------------------------------------------------


def test_a_scanned_page_has_no_text_layer_but_a_picture(scans: dict[str, Path]) -> None:
    pages = PdfLoader().load_text_layer(scans["mixed"], scans["mixed"].read_bytes()).pages
    assert [page.text.strip() for page in pages] == [FIRST, "", LAST, ""]
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(scans["mixed"])
    try:
        assert [round(pdf[i].get_width()) for i in range(4)] == [595, 595, 595, 595]  # A4, scanned or not
    finally:
        pdf.close()


# --- which pages --------------------------------------------------------------------------------


def test_auto_reads_only_the_scanned_page_force_every_page_that_draws_off_none(scans: dict[str, Path]) -> None:
    data = scans["mixed"].read_bytes()
    pages = PdfLoader().load_text_layer(scans["mixed"], data).pages
    assert pages_to_read(data, pages, OcrSettings(mode="auto")) == (2,)  # page 4 is blank: nothing to read
    assert pages_to_read(data, pages, OcrSettings(mode="force")) == (1, 2, 3)
    assert pages_to_read(data, pages, OcrSettings(mode="off")) == ()
    few = OcrSettings(mode="auto", min_chars=len(FIRST.replace(" ", "")) + 1)
    assert pages_to_read(data, pages, few) == (2,), "a sparse text page that draws only text is not read"


def test_auto_keeps_ocr_text_only_when_it_finds_more_force_wherever_it_finds_any() -> None:
    document = LoadedDocument("t", "application/pdf", (Page(1, "Page 1 of 9"), Page(2, ""), Page(3, "Cover")))
    found = {
        1: OcrText("Page l of 9", (), "fake-ocr"),  # the text layer had as much: it is kept
        2: OcrText("Scanned words", (TextBox(0, 13, 0.1, 0.1, 0.5, 0.2),), "fake-ocr"),
        3: OcrText("", (), "fake-ocr"),
    }
    auto = with_ocr_text(document, found, "auto").pages
    assert [(p.text, p.ocr_engine) for p in auto] == [
        ("Page 1 of 9", None),
        ("Scanned words", "fake-ocr"),
        ("Cover", None),
    ]
    assert auto[1].boxes == (TextBox(0, 13, 0.1, 0.1, 0.5, 0.2),)
    force = with_ocr_text(document, found, "force").pages
    assert [(p.text, p.ocr_engine) for p in force] == [
        ("Page l of 9", "fake-ocr"),
        ("Scanned words", "fake-ocr"),
        ("Cover", None),  # OCR found nothing: the text layer stays
    ]


# --- the page's text and boxes ------------------------------------------------------------------


def test_boxes_in_a_row_make_one_line_and_keep_their_spans_and_places() -> None:
    lines = [
        OcrLine("(1,373)", 800, 212, 900, 238),  # a table row's cells, detected apart
        OcrLine("Net income", 100, 210, 300, 240),
        OcrLine("(1,577)", 600, 211, 700, 239),
        OcrLine("Consolidated Statements of Cash Flows", 100, 100, 700, 130),
        OcrLine("  Total   ", 100, 300, 200, 330),
    ]
    text, boxes = page_text(rows_of(lines), 1000, 2000)
    assert text == "Consolidated Statements of Cash Flows\nNet income (1,577) (1,373)\nTotal"
    assert [text[b.start : b.end] for b in boxes] == [
        "Consolidated Statements of Cash Flows",
        "Net income",
        "(1,577)",
        "(1,373)",
        "Total",
    ]
    assert boxes[1] == TextBox(38, 48, 0.1, 0.105, 0.3, 0.12)


def test_tesseract_tsv_becomes_one_box_per_line() -> None:
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [
        "1\t1\t0\t0\t0\t0\t0\t0\t2550\t3300\t-1\t",
        "4\t1\t1\t1\t1\t0\t100\t200\t400\t40\t-1\t",
        "5\t1\t1\t1\t1\t1\t100\t200\t150\t40\t96.5\tNet",
        "5\t1\t1\t1\t1\t2\t270\t205\t230\t35\t95.1\tincome",
        "5\t1\t1\t1\t2\t1\t100\t260\t90\t40\t91.0\t5,363",
        "5\t1\t1\t1\t2\t2\t200\t260\t90\t40\t12.0\t ",
    ]
    assert tesseract_lines("\n".join([header, *rows])) == [
        OcrLine("Net income", 100, 200, 500, 240),
        OcrLine("5,363", 100, 260, 190, 300),
    ]


def test_the_marks_of_a_span_cover_the_lines_it_touches_cut_at_its_ends() -> None:
    boxes = (
        TextBox(0, 10, 0.1, 0.1, 0.6, 0.12),
        TextBox(11, 21, 0.1, 0.13, 0.6, 0.15),
        TextBox(22, 30, 0.1, 0.2, 0.5, 0.22),
    )
    assert span_marks(boxes, 5, 16) == (
        pytest.approx((0.35, 0.1, 0.6, 0.12)),  # from its 5th of 10 characters
        pytest.approx((0.1, 0.13, 0.35, 0.15)),  # to its 5th of 10
    )
    assert span_marks(boxes, 0, 30) == ((0.1, 0.1, 0.6, 0.12), (0.1, 0.13, 0.6, 0.15), (0.1, 0.2, 0.5, 0.22))
    assert span_marks(boxes, 10, 11) == ()  # the line break between two lines
    assert span_marks((), 0, 10) == ()


def test_the_marks_are_drawn_on_the_scanned_page(scans: dict[str, Path]) -> None:
    plain = Image.open(io.BytesIO(render_pdf_page(scans["mixed"], 2, width_px=300))).convert("RGB")
    marked = Image.open(io.BytesIO(render_pdf_page(scans["mixed"], 2, width_px=300, marks=[(0.5, 0.5, 0.9, 0.6)])))
    marked = marked.convert("RGB")
    width, height = plain.size
    assert plain.getpixel((int(width * 0.7), int(height * 0.55))) == (255, 255, 255)
    red, _, blue = marked.getpixel((int(width * 0.7), int(height * 0.55)))
    assert blue < 200 <= red, "yellow over white"
    assert marked.getpixel((int(width * 0.2), int(height * 0.9))) == (255, 255, 255), "nothing marked elsewhere"


# --- the job --------------------------------------------------------------------------------------


def test_auto_reads_the_scanned_page_and_counts_it_everywhere(
    scans: dict[str, Path], tmp_path: Path, make_config: Any, fake_engine: FakeOcrEngine, capsys: Any
) -> None:
    folder = _folder(tmp_path, scans["mixed"])
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0, ingest__ocr_engine="rapidocr")
    summary, reporter = _ingest(folder, config)
    source = str(folder / "mixed.pdf")
    assert summary.failed == [] and summary.added == 1 and summary.pages == 4
    assert summary.ocr_pages == 1
    assert summary.pages_read_by_ocr == [OcrFile(path=source, pages=[2], of=4, engine="fake-ocr")]
    assert summary.pages_without_text == [TextlessFile(path=source, pages=[4], of=4)]  # the blank page
    assert summary.as_dict()["ocr_pages"] == 1
    assert summary.as_dict()["pages_read_by_ocr"] == [{"path": source, "pages": [2], "of": 4, "engine": "fake-ocr"}]
    assert len(fake_engine.pictures) == 1
    assert fake_engine.pictures[0][0] == pytest.approx(595 * 300 / 72, abs=5), "drawn at 300 dpi"
    assert reporter.messages == [f"reading 1 scanned page of {source} by OCR (RapidOCR)"]
    (event,) = reporter.events
    assert event.ocr_pages == (2,) and event.textless_pages == (4,)
    assert describe(event) == (
        f"added      {source} (4 pages, 3 chunks); 1 of 4 pages read by OCR: 2; 1 of 4 pages has no text (blank, or "
        "scanned with no text OCR could read; see ingest.ocr): 4"
    )

    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        assert kb.stats().ocr_pages == 1 and kb.stats().pages == 4
        (document,) = kb.documents()
        page = kb.page(document.id, 2)
        assert page is not None and page.text == FAKE_TEXT and page.ocr_engine == "fake-ocr"
        assert page.boxes == (TextBox(0, 31, 0.1, 0.1, 0.6, 0.12), TextBox(32, 48, 0.1, 0.14, 0.4, 0.16))
        first = kb.page(document.id, 1)
        assert first is not None and first.text.strip() == FIRST and first.ocr_engine is None and first.boxes == ()
        chunks = [chunk for chunk, _ in kb.all_chunks() if chunk.page == 2]
        assert chunks and "fake scanner" in chunks[0].text, "the page's number is kept on its chunks"

    args = ["info", "--json", "--kb", str(config.kb_dir), "--set", "embedding.model=fake/hashing-64"]
    assert cli_main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ocr_pages"] == 1 and info["pages"] == 4
    assert cli_main(args[:1] + args[2:]) == 0
    assert "documents        1 (4 pages, 1 read by OCR)" in capsys.readouterr().out


def test_off_refuses_a_scanned_pdf_and_stores_a_scanned_page_empty(
    scans: dict[str, Path], tmp_path: Path, make_config: Any, fake_engine: FakeOcrEngine
) -> None:
    folder = _folder(tmp_path, scans["mixed"], scans["scanned"])
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0, ingest__ocr="off")
    summary, _ = _ingest(folder, config)
    assert [(Path(f.path).name, f.reason) for f in summary.failed] == [
        ("scanned.pdf", "no extractable text (scanned images? ingest.ocr is off)")
    ]
    assert summary.pages_without_text == [TextlessFile(path=str(folder / "mixed.pdf"), pages=[2, 4], of=4)]
    assert summary.ocr_pages == 0 and summary.pages_read_by_ocr == [] and fake_engine.pictures == []


def test_force_reads_every_page_that_draws(
    scans: dict[str, Path], tmp_path: Path, make_config: Any, fake_engine: FakeOcrEngine
) -> None:
    folder = _folder(tmp_path, scans["mixed"])
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0, ingest__ocr="force")
    summary, _ = _ingest(folder, config)
    assert summary.pages_read_by_ocr[0].pages == [1, 2, 3] and summary.ocr_pages == 3
    assert summary.pages_without_text[0].pages == [4]


def test_a_wholly_scanned_pdf_that_ocr_finds_nothing_on_is_named(
    scans: dict[str, Path], tmp_path: Path, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest.ocr, "load_engine", lambda settings: FakeOcrEngine([]))
    folder = _folder(tmp_path, scans["scanned"])
    summary, _ = _ingest(folder, make_config(embedding__model="fake/hashing-64", ingest__workers=0))
    assert [f.reason for f in summary.failed] == ["no text: its pages have no text layer, and OCR found none on them"]


def test_reindex_reads_again_the_pdfs_stored_with_scanned_pages_empty(
    scans: dict[str, Path], tmp_path: Path, make_config: Any, fake_engine: FakeOcrEngine
) -> None:
    folder = _folder(tmp_path, scans["mixed"])
    (folder / "notes.txt").write_text("Meeting notes about the garden.")
    _ingest(folder, make_config(embedding__model="fake/hashing-64", ingest__workers=0, ingest__ocr="off"))
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    summary, _ = _ingest(folder, config)
    assert summary.unchanged == 2 and summary.ocr_pages == 0, "an unchanged file is not read again"
    summary = run_ingest([], config, FakeEmbedder(), reindex=True)
    assert summary.failed == [] and summary.ocr_pages == 1 and summary.documents == 2
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        assert kb.stats().ocr_pages == 1 and kb.consistency_problems(config) == []


def test_a_missing_engine_is_a_configuration_error_before_anything_is_read(
    tmp_path: Path, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert OcrSettings.of(make_config().ingest).engine == "rapidocr", "auto without tesseract: rapidocr"
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0, ingest__ocr_engine="tesseract")
    with pytest.raises(ConfigError, match=r"tesseract program is not installed.*apt-get install tesseract-ocr"):
        run_ingest([tmp_path], config, FakeEmbedder())
    check_engine(OcrSettings(mode="off", engine="tesseract"))  # off: no engine needed


# --- the knowledge base -------------------------------------------------------------------------


def test_a_knowledge_base_from_before_ocr_opens_reads_and_gains_the_columns(
    scans: dict[str, Path], tmp_path: Path, make_config: Any, fake_engine: FakeOcrEngine
) -> None:
    folder = _folder(tmp_path, scans["mixed"])
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0, ingest__ocr="off")
    _ingest(folder, config)
    database = sqlite3.connect(config.kb_dir / "kb.sqlite")
    for column in ("ocr_engine", "ocr_boxes"):
        database.execute(f"ALTER TABLE pages DROP COLUMN {column}")  # as a version before OCR made it
    database.commit()
    database.close()
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:  # a reader cannot add the columns
        (document,) = kb.documents()
        page = kb.page(document.id, 1)
        assert page is not None and page.text.strip() == FIRST and page.ocr_engine is None
        assert kb.stats().ocr_pages == 0 and kb.stats().pages == 4
    with EmbeddedWriter.open(config.kb_dir, config, dimension=64) as writer:
        assert [p.text.strip() for p in writer.stored_pages(document.id)] == [FIRST, "", LAST, ""]
    columns = {row[1] for row in sqlite3.connect(config.kb_dir / "kb.sqlite").execute("PRAGMA table_info(pages)")}
    assert {"ocr_engine", "ocr_boxes"} <= columns
    summary = run_ingest(
        [], make_config(embedding__model="fake/hashing-64", ingest__workers=0), FakeEmbedder(), reindex=True
    )
    assert summary.ocr_pages == 1


# --- the real engines ---------------------------------------------------------------------------


def _known_words(text: str) -> None:
    words = {word.strip(".,").lower() for word in text.split()}
    assert {"warehouse", "tromsdalen", "opens", "half", "past", "six", "every", "morning"} <= words, text


def test_rapidocr_reads_the_scanned_page(scans: dict[str, Path]) -> None:
    document = PdfLoader(ocr=OcrSettings(mode="auto", engine="rapidocr")).load(
        scans["mixed"], scans["mixed"].read_bytes()
    )
    page = document.pages[1]
    assert page.number == 2 and page.ocr_engine == "rapidocr"
    _known_words(page.text)
    assert page.boxes and all(0 <= b.left < b.right <= 1 and 0 <= b.top < b.bottom <= 1 for b in page.boxes)
    assert page.text[page.boxes[0].start : page.boxes[0].end].startswith("The warehouse")
    assert [p.ocr_engine for p in document.pages] == [None, "rapidocr", None, None]


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="the tesseract program is not installed")
def test_tesseract_reads_the_scanned_page(scans: dict[str, Path]) -> None:
    document = PdfLoader(ocr=OcrSettings(mode="auto", engine="tesseract")).load(
        scans["scanned"], scans["scanned"].read_bytes()
    )
    assert [p.ocr_engine for p in document.pages] == ["tesseract", "tesseract"]
    _known_words(document.pages[0].text)
    assert "contracts were signed" in document.pages[1].text


def test_loader_workers_read_scanned_pages_in_a_second_task_under_its_own_limit(
    scans: dict[str, Path], tmp_path: Path, make_config: Any
) -> None:
    # The default engine ("auto": Tesseract where it is installed, else RapidOCR), in a worker.
    folder = _folder(tmp_path, scans["mixed"])
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=1)
    summary, reporter = _ingest(folder, config)
    assert summary.failed == [] and summary.ocr_pages == 1
    assert [(Path(f.path).name, f.pages) for f in summary.pages_read_by_ocr] == [("mixed.pdf", [2])]
    assert len(reporter.messages) == 1
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        texts = {chunk.page: chunk.text for chunk, _ in kb.all_chunks()}
    _known_words(texts[2])

    (folder / "again.pdf").write_bytes(scans["mixed"].read_bytes() + b"\n")  # new bytes: read again
    slow = make_config(embedding__model="fake/hashing-64", ingest__workers=1, ingest__ocr_page_timeout_s=0.01)
    summary, _ = _ingest(folder, slow)
    assert summary.unchanged == 1
    assert [(Path(f.path).name, f.reason) for f in summary.failed] == [
        ("again.pdf", "reading its 1 scanned page by OCR took longer than 0.01 s (ingest.ocr_page_timeout_s per page)")
    ]


def test_an_ocr_failure_on_one_page_leaves_the_page_as_it_was(
    scans: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        name = "broken"

        def read(self, image: Any, dpi: int) -> list[OcrLine]:
            raise RuntimeError("the engine fell over")

    monkeypatch.setattr(ingest.ocr, "load_engine", lambda settings: Broken())
    loader = PdfLoader(ocr=OcrSettings(mode="auto"))
    document = loader.load(scans["mixed"], scans["mixed"].read_bytes())
    assert document.pages[1].text == "" and document.pages[1].ocr_engine is None
    assert "page 2: OCR failed: the engine fell over" in caplog.text
    with pytest.raises(DocumentLoadError, match="OCR found none"):
        loader.load(scans["scanned"], scans["scanned"].read_bytes())
