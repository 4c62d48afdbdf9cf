from __future__ import annotations

import io

from rich.console import Console

from ingest.progress import FileEvent, LineReporter, RichReporter


def test_line_reporter_prints_one_plain_line_per_file() -> None:
    stream = io.StringIO()
    reporter = LineReporter(stream)
    reporter.start(2, 3_000_000)
    reporter.file_done(FileEvent("/docs/a.pdf", "added", 1000, pages=3, chunks=7))
    reporter.file_done(FileEvent("/docs/b.pdf", "failed", 10, reason="not a PDF file"))
    reporter.finish()
    assert stream.getvalue().splitlines() == [
        "reading 2 files (3.0 MB)",
        "added      /docs/a.pdf (3 pages, 7 chunks)",
        "failed     /docs/b.pdf: not a PDF file",
    ]
    assert "\x1b" not in stream.getvalue()


def test_rich_reporter_shows_counts_rate_eta_and_failures() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    reporter = RichReporter(console)
    reporter.start(2, 2000)
    reporter.file_done(FileEvent("/docs/a.pdf", "added", 1000, pages=3, chunks=7))
    reporter.file_done(FileEvent("/docs/b.pdf", "failed", 1000, reason="encrypted: a password is required"))
    reporter.finish()
    text = out.getvalue()
    assert "failed /docs/b.pdf: encrypted: a password is required" in text
    assert "files 2/2" in text
    assert "pages 3 · chunks 7" in text and "chunks/s" in text
    assert "ETA" in text and "100%" in text
