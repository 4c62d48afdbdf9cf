from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from rag.types import Citation
from tests.filefactory import make_pdf
from ui.pdf_pages import PageRenderError, render_pdf_page
from ui.render import (
    MARKER_STYLE,
    TEXT_STYLE,
    answer_html,
    citation_title,
    highlight_html,
    markdown_literal,
    sanitize_filename,
    where,
)


def test_answer_html_escapes_everything_but_styles_markers() -> None:
    html = answer_html('Use <script>alert("x")</script> & **this** [2].')
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&amp;" in html and "**this**" in html
    assert '<span class="rag-cite"' in html and ">[2]</span>" in html


def test_highlight_marks_exactly_the_span_and_escapes_around_it() -> None:
    text = "a <b> then the quoted words & more after"
    start = text.index("the quoted")
    html = highlight_html(text, start, start + len("the quoted words"))
    assert '<mark class="rag-quote" style="' in html and ">the quoted words</mark>" in html
    assert "a &lt;b&gt; then " in html and " &amp; more after" in html


def test_highlight_with_context_cuts_at_words_with_ellipses() -> None:
    text = "zero one two three four FIVE six seven eight nine"
    start = text.index("FIVE")
    html = highlight_html(text, start, start + 4, context=6)
    assert "… three four " in html and " six seven …" in html and "zero" not in html and "nine" not in html


def test_highlight_clamps_a_span_outside_the_text() -> None:
    assert ">abc</mark>" in highlight_html("abc", 0, 99)
    assert "<mark" in highlight_html("abc", 5, 2)


def test_markdown_literal_neutralises_markdown() -> None:
    assert markdown_literal("[1] my_file*.pdf") == "\\[1\\] my\\_file\\*\\.pdf"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\notes.md", "notes.md"),
        (".bashrc.txt", "bashrc.txt"),
        ("...", "upload"),
        ("a<b>|c?.md", "a_b_c_.md"),
        ("na\x00me.txt", "name.txt"),
        ("ｆｕｌｌｗｉｄｔｈ.txt", "fullwidth.txt"),
        ("x" * 300 + ".pdf", "x" * 116 + ".pdf"),
    ],
)
def test_upload_names_are_sanitised(given: str, expected: str) -> None:
    assert sanitize_filename(given) == expected


def test_titles_name_file_page_and_support() -> None:
    citation = Citation(2, 7, "/kb/docs/handbook.pdf", "handbook.pdf", 5, "iv", 0, 4, "text", 0.8, "A claim [2].")
    assert citation_title(citation) == "[2] handbook.pdf · page iv (5) · support 80%"
    assert where(None, None) == "" and where(3, "3") == "page 3"


def test_a_pdf_page_is_drawn_with_the_quote_marked(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf", ["First page.", "Second page with the cited sentence on it."])
    plain = Image.open(io.BytesIO(render_pdf_page(pdf, 2, "", width_px=400)))
    marked = Image.open(io.BytesIO(render_pdf_page(pdf, 2, "with the cited sentence on it", width_px=400)))
    assert plain.size == marked.size and plain.size[0] == 400
    yellow = [p for p in marked.convert("RGB").getdata() if p[0] > 200 and p[1] > 200 and p[2] < 180]
    assert yellow, "the quote is marked"
    assert not [p for p in plain.convert("RGB").getdata() if p[0] > 200 and p[1] > 200 and p[2] < 180]


def test_a_missing_page_or_file_is_a_clear_error(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf", ["Only page."])
    with pytest.raises(PageRenderError, match=r"doc\.pdf: has 1 pages, no page 3"):
        render_pdf_page(pdf, 3)
    with pytest.raises(PageRenderError, match=r"gone\.pdf: cannot open"):
        render_pdf_page(tmp_path / "gone.pdf", 1)


def test_answer_html_styles_grouped_markers_and_unverified_sentences() -> None:
    text = "Staff get 28 days. [1, 2] Robots fly. <b>"
    html_out = answer_html(text, [(26, len(text))])
    assert html_out.count('class="rag-cite"') == 1 and "[1, 2]</span>" in html_out
    unverified = html_out.split('class="rag-unverified"', 1)[1]
    assert "Robots fly. &lt;b&gt;" in unverified and "28 days" not in unverified
    assert "<b>" not in html_out


def test_answer_html_styles_a_marker_of_two_numbers() -> None:
    html_out = answer_html("It carries 150 kg [1, 2].")
    assert html_out == (
        f'<div class="rag-answer" style="{TEXT_STYLE}">It carries 150 kg '
        f'<span class="rag-cite" style="{MARKER_STYLE}">[1, 2]</span>.</div>'
    )


def test_titles_say_attributed_and_unsupported() -> None:
    citation = Citation(
        n=1, chunk_id=1, file="/d/a.md", file_name="a.md", page=None, page_label=None, start=0, end=1, quote="q",
        support=0.2, sentence="s", origin="attributed", supported=False,
    )  # fmt: skip
    assert citation_title(citation) == "[1] a.md · support 20% · attributed · unsupported"
