"""Loaders: good files of every type, and every kind of bad input they must reject."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pypdf
import pypdfium2 as pdfium
import pytest

from ingest.loaders import (
    DEFAULT_LOADERS,
    SUPPORTED_EXTENSIONS,
    DocxLoader,
    HtmlLoader,
    MarkdownLoader,
    PdfLoader,
    TextLoader,
    loader_for,
)
from rag.config import PdfTextEngine
from rag.errors import DocumentLoadError
from rag.types import LoadedDocument, Page
from tests.filefactory import (
    make_binary_txt,
    make_corrupt_pdf,
    make_docx,
    make_fake_pdf,
    make_pdf,
    make_statement_pdf,
    make_truncated_pdf,
)


def load(path: Path) -> LoadedDocument:
    loader = loader_for(path)
    assert loader is not None, path
    return loader.load(path, path.read_bytes())


def load_error(path: Path) -> str:
    with pytest.raises(DocumentLoadError) as caught:
        load(path)
    assert caught.value.path == str(path)
    reason = caught.value.reason
    assert reason and "\n" not in reason and len(reason) < 200
    return reason


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- registry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "loader_type"),
    [
        ("a.pdf", PdfLoader),
        ("a.PDF", PdfLoader),
        ("a.txt", TextLoader),
        ("a.text", TextLoader),
        ("a.md", MarkdownLoader),
        ("a.Markdown", MarkdownLoader),
        ("a.html", HtmlLoader),
        ("a.HTM", HtmlLoader),
        ("a.docx", DocxLoader),
    ],
)
def test_loader_for_picks_by_lower_case_suffix(name: str, loader_type: type) -> None:
    assert isinstance(loader_for(Path(name)), loader_type)


@pytest.mark.parametrize("name", ["a.png", "a.doc", "a.pdf.bak", "README", "a."])
def test_loader_for_unsupported_returns_none(name: str) -> None:
    assert loader_for(Path(name)) is None


def test_supported_extensions_and_loader_constants() -> None:
    assert {
        ".pdf", ".txt", ".text", ".md", ".markdown", ".html", ".htm", ".docx"
    } == SUPPORTED_EXTENSIONS  # fmt: skip
    for loader in DEFAULT_LOADERS:
        assert loader.mime_type
        assert all(ext == ext.lower() and ext.startswith(".") for ext in loader.extensions)


def test_loader_for_uses_given_loaders() -> None:
    assert loader_for(Path("a.pdf"), [TextLoader()]) is None


def test_loaders_are_picklable() -> None:
    for loader in DEFAULT_LOADERS:
        assert type(pickle.loads(pickle.dumps(loader))) is type(loader)


# --- PDF ------------------------------------------------------------------------------


def test_pdf_pages_are_numbered_from_one_without_labels(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "report.pdf", ["First page text.", "Second page text."])
    document = load(path)
    assert document.mime_type == "application/pdf"
    assert document.title == "report"
    assert [(p.number, p.label) for p in document.pages] == [(1, None), (2, None)]
    assert document.pages[0].text.strip() == "First page text."
    assert document.pages[1].text.strip() == "Second page text."


def test_pdf_title_from_metadata(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "r.pdf", ["Body."], title="Annual Report 2023")
    assert load(path).title == "Annual Report 2023"


def test_pdf_blank_metadata_title_falls_back_to_stem(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "fallback.pdf", ["Body."], title="   ")
    assert load(path).title == "fallback"


def test_pdf_page_labels_are_kept(tmp_path: Path) -> None:
    path = make_pdf(
        tmp_path / "labelled.pdf",
        ["Cover", "Contents", "Chapter one", "Chapter two"],
        page_labels=[(0, "/r", ""), (2, "/D", "")],
    )
    pages = load(path).pages
    assert [(p.number, p.label) for p in pages] == [
        (1, "i"),
        (2, "ii"),
        (3, "1"),
        (4, "2"),
    ]
    assert pages[2].text.strip() == "Chapter one"


def test_pdf_page_labels_with_prefix(tmp_path: Path) -> None:
    path = make_pdf(
        tmp_path / "annex.pdf", ["Main", "Annex a", "Annex b"],
        page_labels=[(0, "/D", ""), (1, "/D", "A-")],
    )  # fmt: skip
    assert [p.label for p in load(path).pages] == ["1", "A-1", "A-2"]


def test_pdf_with_empty_user_password_loads(tmp_path: Path) -> None:
    path = make_pdf(
        tmp_path / "sec.pdf",
        ["Form 10-K text.", "Item 7."],
        title="10-K",
        user_password="",
        owner_password="owner-secret",
    )
    assert pypdf.PdfReader(path).is_encrypted  # the fixture really is encrypted
    document = load(path)
    assert document.title == "10-K"
    assert [p.text.strip() for p in document.pages] == ["Form 10-K text.", "Item 7."]


def test_pdf_needing_a_password_is_rejected(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "locked.pdf", ["Secret."], user_password="pw", owner_password="own")
    reason = load_error(path)
    assert reason == "encrypted: a password is required"
    assert "password" in reason


def test_pdf_without_text_is_rejected_as_scanned(tmp_path: Path) -> None:
    reason = load_error(make_pdf(tmp_path / "scan.pdf", ["", ""]))  # the loader's default: no OCR
    assert reason == "no extractable text (scanned images? ingest.ocr is off)"


def test_pdf_with_some_blank_pages_keeps_them(tmp_path: Path) -> None:
    pages = load(make_pdf(tmp_path / "gap.pdf", ["Text.", "", "More."])).pages
    assert [p.number for p in pages] == [1, 2, 3]
    assert pages[1].text.strip() == ""


@pytest.mark.parametrize("engine", ["pdfium", "pypdf"])
def test_pdf_page_that_fails_to_extract_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, engine: PdfTextEngine
) -> None:
    path = make_pdf(tmp_path / "flaky.pdf", ["Good page.", "Bad page.", "Good again."])
    owner: Any = pdfium.PdfTextPage if engine == "pdfium" else pypdf.PageObject
    name = "get_text_range" if engine == "pdfium" else "extract_text"
    error = pdfium.PdfiumError("broken text page") if engine == "pdfium" else KeyError("/Font")
    original = getattr(owner, name)

    def flaky(self: object, *args: object, **kwargs: object) -> str:
        text: str = original(self, *args, **kwargs)
        if "Bad" in text:
            raise error
        return text

    monkeypatch.setattr(owner, name, flaky)
    pages = PdfLoader(engine).load(path, path.read_bytes()).pages
    assert [p.text.strip() for p in pages] == ["Good page.", "", "Good again."]
    assert "page 2" in caplog.text


def test_statement_rows_keep_label_and_numbers_on_one_line(tmp_path: Path) -> None:
    path = make_statement_pdf(
        tmp_path / "statement.pdf",
        ["Northwind Robotics GmbH", "Consolidated Statements of Cash Flows"],
        ["2023", "2022"],
        [("Net income", "5,363", "4,869"), ("Purchases of property, plant and equipment", "(1,577)", "(1,373)")],
    )
    lines = load(path).pages[0].text.splitlines()
    assert "Consolidated Statements of Cash Flows" in lines
    assert "2023 2022" in lines  # the column headers stay above their columns, in order
    assert "Purchases of property, plant and equipment (1,577) (1,373)" in lines


def test_pdfium_marks_become_the_characters_a_reader_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_pdf(tmp_path / "marks.pdf", ["Some text."])
    monkeypatch.setattr(pdfium.PdfTextPage, "get_text_range", lambda *_, **__: "forward\ufffelooking\xa0$\xa05,363\r\n")
    text = load(path).pages[0].text
    assert text == "forward-looking $ 5,363\n"


def test_pdf_pdfium_cannot_open_falls_back_to_pypdf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_pdf(tmp_path / "odd.pdf", ["Readable by pypdf."])

    def refuse(*_: object, **__: object) -> None:
        raise pdfium.PdfiumError("Failed to load document (PDFium: Data format error).")

    monkeypatch.setattr(pdfium, "PdfDocument", refuse)
    assert load(path).pages[0].text.strip() == "Readable by pypdf."
    assert "PDFium cannot open it" in caplog.text


def test_pdf_text_engines_agree_on_plain_text(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "plain.pdf", ["The quick brown fox.", "Jumps over the lazy dog."])
    texts = {
        engine: [page.text.strip() for page in PdfLoader(engine).load(path, path.read_bytes()).pages]
        for engine in ("pdfium", "pypdf")
    }
    assert texts["pdfium"] == texts["pypdf"] == ["The quick brown fox.", "Jumps over the lazy dog."]


def test_pdf_text_is_normalised(tmp_path: Path) -> None:
    text = load(make_pdf(tmp_path / "lines.pdf", ["line one\nline two"])).pages[0].text
    assert "\r" not in text and "\x00" not in text
    assert "line one\nline two" in text


def test_truncated_pdf_is_rejected(tmp_path: Path) -> None:
    # pypdf 7 (non-strict) does not recover a PDF cut in half: with no %%EOF marker it
    # scans back to the start and raises, so no partial text can be had; the loader says
    # the file is truncated rather than pass on pypdf's bare "Stream has ended".
    reason = load_error(make_truncated_pdf(tmp_path / "cut.pdf"))
    assert reason.startswith("damaged PDF: ")
    assert "truncated" in reason


def test_corrupt_pdf_is_rejected(tmp_path: Path) -> None:
    reason = load_error(make_corrupt_pdf(tmp_path / "corrupt.pdf"))
    assert reason.startswith("damaged PDF: ")


def test_pdf_with_footer_but_no_xref_is_rejected(tmp_path: Path) -> None:
    data = make_truncated_pdf(tmp_path / "cut.pdf").read_bytes() + b"\n%%EOF\n"
    reason = load_error(write(tmp_path / "cut2.pdf", data))
    assert reason.startswith("damaged PDF: ")


def test_fake_pdf_is_not_a_pdf(tmp_path: Path) -> None:
    assert load_error(make_fake_pdf(tmp_path / "image.pdf")) == "not a PDF file"


def test_pdf_header_after_whitespace_and_bom_is_accepted(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "a.pdf", ["Padded."]).read_bytes()
    document = load(write(tmp_path / "padded.pdf", b"\xef\xbb\xbf \r\n" + data))
    assert document.pages[0].text.strip() == "Padded."


def test_empty_pdf_file(tmp_path: Path) -> None:
    assert load_error(write(tmp_path / "empty.pdf", b"")) == "empty file"


# --- text and Markdown ----------------------------------------------------------------


def test_text_utf8(tmp_path: Path) -> None:
    document = load(write(tmp_path / "notes.txt", "Grüße, naïve café ☕\n".encode()))
    assert document.title == "notes"
    assert document.mime_type == "text/plain"
    assert document.pages == (Page(None, "Grüße, naïve café ☕\n"),)


def test_text_utf8_bom_is_dropped(tmp_path: Path) -> None:
    document = load(write(tmp_path / "bom.txt", b"\xef\xbb\xbfHello BOM"))
    assert document.pages[0].text == "Hello BOM"


def test_text_utf16_with_bom(tmp_path: Path) -> None:
    document = load(write(tmp_path / "wide.txt", "Hello wide text".encode("utf-16")))
    assert document.pages[0].text == "Hello wide text"


def test_text_latin1(tmp_path: Path) -> None:
    text = (
        "Le garçon a mangé une crème brûlée à côté de la fenêtre. Ça coûte très cher, déjà trop cher pour un élève.\n"
    )
    document = load(write(tmp_path / "fr.txt", text.encode("latin-1")))
    assert document.pages[0].text == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Naïve résumé", "latin-1"),
        ("Grüße aus München, die Straße ist schön. Frühstück: 5 €.", "cp1252"),
        ("Příliš žluťoučký kůň úpěl ďábelské ódy. Česká republika je stát.", "cp1250"),
        ("Съешь же ещё этих мягких французских булок, да выпей чаю.", "cp1251"),
    ],
)
def test_text_legacy_encodings(tmp_path: Path, text: str, encoding: str) -> None:
    document = load(write(tmp_path / "legacy.txt", text.encode(encoding)))
    assert document.pages[0].text == text


def test_text_crlf_and_nul_normalised(tmp_path: Path) -> None:
    document = load(write(tmp_path / "dos.text", b"one\r\ntwo\rthree\n"))
    assert document.pages[0].text == "one\ntwo\nthree\n"


def test_text_is_otherwise_unchanged(tmp_path: Path) -> None:
    text = "  indented\n\n\n\ttabbed   spaces  \n"
    assert load(write(tmp_path / "ws.txt", text.encode())).pages[0].text == text


def test_binary_txt_is_rejected(tmp_path: Path) -> None:
    assert load_error(make_binary_txt(tmp_path / "blob.txt")) == "binary data, not text"


def test_empty_and_blank_text(tmp_path: Path) -> None:
    assert load_error(write(tmp_path / "empty.txt", b"")) == "empty file"
    assert load_error(write(tmp_path / "blank.txt", b" \n\r\n\t ")) == "no text"


def test_markdown_title_from_first_h1(tmp_path: Path) -> None:
    source = "Intro line\n\n## Not this\n\n# Real Title #\n\nBody *text*.\n"
    document = load(write(tmp_path / "doc.md", source.encode()))
    assert document.title == "Real Title"
    assert document.mime_type == "text/markdown"
    assert document.pages == (Page(None, source),)


def test_markdown_ignores_headings_in_code_fences(tmp_path: Path) -> None:
    source = "```bash\n# install it\npip install x\n```\n\nNo heading here.\n"
    assert load(write(tmp_path / "guide.markdown", source.encode())).title == "guide"


def test_markdown_crlf(tmp_path: Path) -> None:
    document = load(write(tmp_path / "w.md", b"# Title\r\n\r\nBody\r\n"))
    assert document.title == "Title"
    assert document.pages[0].text == "# Title\n\nBody\n"


# --- HTML -----------------------------------------------------------------------------

PAGE = b"""<!DOCTYPE html>
<html><head><title>  The  Page </title>
<style>body { color: red; }</style>
<script>alert(1)</script></head>
<body>
<!-- a hidden comment -->
<h1>Heading</h1>
<p>First paragraph with <b>bold</b>
   words.</p>
<p>Second<br>line</p>
<noscript>enable js</noscript>
<template><p>template text</p></template>
<svg><text>svg text</text></svg>
<table><tr><th>Name</th><td>Value</td></tr></table>
<pre>keep   this
  as is</pre>
<script type="text/javascript">var leaked = 1;</script>
</body></html>
"""


def test_html_visible_text_only(tmp_path: Path) -> None:
    document = load(write(tmp_path / "page.html", PAGE))
    assert document.title == "The Page"
    assert document.mime_type == "text/html"
    (page,) = document.pages
    assert page.number is None and page.label is None
    for hidden in ("alert", "color", "leaked", "hidden comment", "enable js",
                   "template text", "svg text", "The  Page", "DOCTYPE", "html\n"):  # fmt: skip
        assert hidden not in page.text, hidden
    # blocks a blank line apart, <br> one newline, cells " | ", <pre> untouched
    assert page.text == (
        "Heading\n\nFirst paragraph with bold words.\n\nSecond\nline\n\nName | Value\n\nkeep   this\n  as is"
    )


def test_html_title_falls_back_to_h1_then_stem(tmp_path: Path) -> None:
    with_h1 = write(tmp_path / "a.htm", b"<html><body><h1>Big</h1><p>x</p></body></html>")
    assert load(with_h1).title == "Big"
    bare = write(tmp_path / "bare.html", b"<p>Just text</p>")
    assert load(bare).title == "bare"
    assert load(bare).pages[0].text == "Just text"


def test_html_meta_charset(tmp_path: Path) -> None:
    html = '<html><head><meta charset="windows-1252"></head><body>Prix : 5 €</body></html>'
    document = load(write(tmp_path / "cp.html", html.encode("cp1252")))
    assert document.pages[0].text == "Prix : 5 €"


def test_html_without_visible_text(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.html", b"<html><head><title>T</title></head></html>")
    assert load_error(path) == "no text"


# --- DOCX -----------------------------------------------------------------------------


def test_docx_paragraphs_and_table(tmp_path: Path) -> None:
    path = make_docx(
        tmp_path / "memo.docx",
        ["# Quarterly Memo", "First paragraph.", "", "Second paragraph."],
        table=[["Region", "Sales"], ["North", "10"]],
    )
    document = load(path)
    assert document.title == "Quarterly Memo"
    assert document.mime_type.endswith("wordprocessingml.document")
    assert document.pages == (
        Page(
            None,
            "Quarterly Memo\n\nFirst paragraph.\n\nSecond paragraph.\n\nRegion | Sales\nNorth | 10",
        ),
    )


def test_docx_title_from_core_properties(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "t.docx", ["# Heading", "Body."], title="Core Title")
    assert load(path).title == "Core Title"


def test_docx_title_falls_back_to_stem(tmp_path: Path) -> None:
    assert load(make_docx(tmp_path / "plain.docx", ["Only body."])).title == "plain"


def test_docx_bad_inputs(tmp_path: Path) -> None:
    assert load_error(write(tmp_path / "a.docx", b"not a zip at all")) == ("not a valid DOCX file")
    fake_pdf = make_fake_pdf(tmp_path / "b.docx")
    assert load_error(fake_pdf) == "not a valid DOCX file"
    assert load_error(write(tmp_path / "c.docx", b"")) == "empty file"
    assert load_error(make_docx(tmp_path / "d.docx", ["", "  "])) == "no text"
