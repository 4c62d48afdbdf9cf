"""Turning answers and passages into HTML for the page, with every piece of text escaped.

Document text and model output are untrusted: a PDF can contain ``<script>``, a model can write
Markdown links. Nothing from them reaches the page as markup: text is HTML-escaped here and the
page inserts it with ``st.html`` (which does not interpret Markdown, and strips scripts besides),
so the only tags on the page are the ones built in this module. Labels that Streamlit renders as
Markdown (expander titles) go through :func:`markdown_literal`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from pathlib import PurePosixPath, PureWindowsPath

from rag.grammar import MARKER
from rag.types import Citation

# Every ASCII punctuation character: CommonMark lets any of them be backslash-escaped, and
# Markdown, GitHub's extensions and Streamlit's own (``:red[...]``, ``:material/...:``, ``$``)
# give a meaning to most of them. Line breaks would start new blocks (headings, lists).
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_UNSAFE_NAME_CHARS = re.compile(r"[^\w.\- ]+")
# In UTF-8 bytes: file systems limit a name to 255 bytes, and the upload also needs room for
# ``write_bytes_atomic``'s ``.<name>.partial`` and a ``-<n>`` when the name is taken.
_MAX_NAME_BYTES = 120
_MAX_SUFFIX_CHARS = 16
# Names Windows gives to devices, with any extension: harmless on POSIX, but a knowledge base
# (or a download of its files) may end up on Windows.
_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{device}{n}" for device in ("COM", "LPT") for n in "123456789"]
)

TEXT_STYLE = "white-space: pre-wrap; line-height: 1.5;"
MARK_STYLE = "background: #fde68a; color: inherit; padding: 0 1px; border-radius: 2px;"
MARKER_STYLE = "font-size: 0.75em; font-weight: 600; color: #1d4ed8; vertical-align: super;"
UNVERIFIED_STYLE = "color: #6b7280; text-decoration: underline dotted #b45309;"
UNVERIFIED_TITLE = "Unverified: no passage supports this sentence"


def markdown_literal(text: str) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it character for character, on one
    line: for labels, captions and messages that hold a file name, a path or an error's words."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", text))


def answer_html(text: str, unverified: Sequence[tuple[int, int]] = ()) -> str:
    """An answer's text, escaped, with its ``[n]`` / ``[n, m]`` markers styled as citation
    references and the ``unverified`` sentence spans styled apart (grey, dotted, with a tooltip)."""
    pieces, position = [], 0
    for start, end in sorted(unverified):
        start, end = max(start, position), min(end, len(text))
        if start >= end:
            continue
        pieces.append(_with_markers(text[position:start]))
        pieces.append(
            f'<span class="rag-unverified" title="{UNVERIFIED_TITLE}" style="{UNVERIFIED_STYLE}">'
            f"{_with_markers(text[start:end])}</span>"
        )
        position = end
    pieces.append(_with_markers(text[position:]))
    return f'<div class="rag-answer" style="{TEXT_STYLE}">{"".join(pieces)}</div>'


def _with_markers(text: str) -> str:
    escaped = html.escape(text)
    # Escaping leaves digits, brackets, commas, semicolons and white space alone: the markers of
    # the escaped text are the text's own.
    return MARKER.sub(lambda m: f'<span class="rag-cite" style="{MARKER_STYLE}">{m[0]}</span>', escaped)


def passage_html(text: str) -> str:
    """``text`` escaped, in the passage box, nothing marked."""
    return f'<div class="rag-passage" style="{TEXT_STYLE}">{html.escape(text)}</div>'


def highlight_html(text: str, start: int, end: int, *, context: int | None = None) -> str:
    """``text`` escaped with ``text[start:end]`` marked; with ``context``, only that many
    characters either side of the span are kept (cut at a word boundary, with ellipses)."""
    start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
    end = max(end, start)
    left, right = 0, len(text)
    if context is not None:
        left, right = _word_boundary_left(text, start - context), _word_boundary_right(text, end + context)
    before = ("… " if left > 0 else "") + text[left:start]
    after = text[end:right] + (" …" if right < len(text) else "")
    marked = f'<mark class="rag-quote" style="{MARK_STYLE}">{html.escape(text[start:end])}</mark>'
    return f'<div class="rag-passage" style="{TEXT_STYLE}">{html.escape(before)}{marked}{html.escape(after)}</div>'


def _word_boundary_left(text: str, position: int) -> int:
    if position <= 0:
        return 0
    space = text.rfind(" ", 0, position)
    return space + 1 if space >= 0 else 0


def _word_boundary_right(text: str, position: int) -> int:
    if position >= len(text):
        return len(text)
    space = text.find(" ", position)
    return space if space >= 0 else len(text)


def where(page: int | None, label: str | None) -> str:
    """ "page 3", "page iv (5)" for a labelled page, or "" for a file without pages."""
    if page is None:
        return ""
    return f"page {label} ({page})" if label and label != str(page) else f"page {page}"


def citation_title(citation: Citation) -> str:
    """The card title, plain text: ``[2] handbook.pdf · page 3 · support 80%``, then
    ``· attributed`` when the marker was added after the fact and ``· unsupported`` when the
    quote does not support the claim."""
    parts = [f"[{citation.n}] {file_name(citation.file)}"]
    if citation.page is not None:
        parts.append(where(citation.page, citation.page_label))
    parts.append(f"support {citation.support:.0%}")
    if citation.origin == "attributed":
        parts.append("attributed")
    if not citation.supported:
        parts.append("unsupported")
    return " · ".join(parts)


def file_name(path: str) -> str:
    """The last part of a stored source path (POSIX or Windows)."""
    return PureWindowsPath(path).name if "\\" in path and "/" not in path else PurePosixPath(path).name


def sanitize_filename(name: str) -> str:
    """A safe file name for an upload: the base name only (no folders, so nothing can be
    written outside the upload folder), NFKC-normalised first (so look-alikes such as ``．．／``
    are the ``../`` they stand for, and are cut as such), characters other than letters, digits,
    ``.``, ``-``, ``_`` and space replaced by ``_``, no leading dots (no hidden files, no ``..``),
    no trailing dots or spaces, a Windows device name (``CON``, ``NUL``, ``COM1``...) prefixed with
    ``_``, and at most 120 UTF-8 bytes with the extension (at most 16 characters) kept. An empty
    result becomes ``upload``."""
    name = unicodedata.normalize("NFKC", name.replace("\x00", ""))
    base = PureWindowsPath(PurePosixPath(name).name).name
    base = _UNSAFE_NAME_CHARS.sub("_", base).strip().lstrip(".").rstrip(". ")
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    suffix = suffix[:_MAX_SUFFIX_CHARS]
    room = _MAX_NAME_BYTES - len(suffix.encode()) - 1
    stem = stem.encode()[:room].decode(errors="ignore").rstrip(". ") or "upload"
    if stem.split(".")[0].rstrip().upper() in _RESERVED_NAMES:
        stem = f"_{stem}"
    return f"{stem}.{suffix}" if suffix else stem
