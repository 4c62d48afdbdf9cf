"""The HTML the report and the comparison share: one page shell with inline CSS, tables, numbers.

Every piece of text that comes from a dataset, a document or a model goes through :func:`text`
(HTML-escaped): a question holding ``<script>`` is shown, never run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; } .better { color: #1a7f37; } .worse { color: #cf222e; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: .5rem; font-size: .8rem; max-height: 30rem; overflow: auto; }
details summary { cursor: pointer; } .charts svg { margin: .5rem 1rem .5rem 0; }
table.questions td { max-width: 28rem; }
"""


def text(value: object) -> str:
    """``value`` as escaped HTML text (``None`` is an empty string)."""
    return "" if value is None else escape(str(value))


def number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def p_value(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (), css: str = "") -> str:
    """A table; ``header`` is escaped, each cell is HTML already; columns in ``numeric`` align right."""
    head = "".join(f"<th>{text(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML page: inline CSS, no script, nothing fetched."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{text(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
