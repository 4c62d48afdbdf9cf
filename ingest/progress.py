"""How an ingestion run reports progress: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One file's outcome: ``added``, ``updated``, ``unchanged``, ``removed`` or ``failed``.

    ``textless_pages``: the numbers of the pages of an added or updated file that have no text
    (blank pages, or scans OCR found no text on, or did not read with ``ingest.ocr = "off"``); they
    are stored empty and never found by a search. ``ocr_pages``: the numbers of the pages whose
    text OCR read off their pictures (scanned pages).
    """

    path: str
    outcome: str
    size_bytes: int = 0
    pages: int = 0
    chunks: int = 0
    reason: str | None = None
    textless_pages: tuple[int, ...] = ()
    ocr_pages: tuple[int, ...] = ()


class IngestReporter(Protocol):
    def start(self, files: int, total_bytes: int) -> None:
        """Called once, with the files that need reading and their total size."""
        ...

    def file_done(self, event: FileEvent) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self) -> None: ...


class NullReporter:
    """Reports nothing (library use, tests)."""

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def file_done(self, event: FileEvent) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


_SHOWN_PAGE_NUMBERS = 8


def shown_path(path: str) -> str:
    """``path`` as one printable line: control characters (a newline, a tab) are escaped as
    Python writes them, and bytes that are not UTF-8 (which Python's file names carry as lone
    surrogates) as ``\\xNN``; every other character, spaces included, is kept."""
    shown: list[str] = []
    for char in path:
        if char.isprintable():
            shown.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # os.fsdecode's surrogateescape for one undecodable byte
            shown.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            shown.append(repr(char)[1:-1])
    return "".join(shown)


def _page_numbers(numbers: tuple[int, ...]) -> str:
    """The first few page numbers, e.g. "5, 6, 9" or "1, 2, 3, 4, 5, 6, 7, 8, ..."."""
    shown = ", ".join(str(n) for n in numbers[:_SHOWN_PAGE_NUMBERS])
    return shown + (", ..." if len(numbers) > _SHOWN_PAGE_NUMBERS else "")


def textless_note(pages: int, textless_pages: tuple[int, ...]) -> str:
    """The note on an ingested file's textless pages, e.g. "3 of 40 pages have no text (blank, or
    scanned with no text OCR could read; see ingest.ocr): 5, 6, 9" (the first few page numbers)."""
    verb = "has" if len(textless_pages) == 1 else "have"
    return (
        f"{len(textless_pages)} of {pages} pages {verb} no text (blank, or scanned with no text OCR could read; "
        f"see ingest.ocr): {_page_numbers(textless_pages)}"
    )


def ocr_note(pages: int, ocr_pages: tuple[int, ...]) -> str:
    """The note on an ingested file's pages read by OCR, e.g. "2 of 40 pages read by OCR: 7, 8"."""
    return f"{len(ocr_pages)} of {pages} pages read by OCR: {_page_numbers(ocr_pages)}"


def describe(event: FileEvent) -> str:
    """The one-line form of an event, as logs and the plain reporter print it."""
    path = shown_path(event.path)
    if event.outcome == "failed":
        return f"failed     {path}: {event.reason}"
    if event.outcome in ("added", "updated"):
        line = f"{event.outcome:<10} {path} ({event.pages} pages, {event.chunks} chunks)"
        if event.ocr_pages:
            line += f"; {ocr_note(event.pages, event.ocr_pages)}"
        return line + (f"; {textless_note(event.pages, event.textless_pages)}" if event.textless_pages else "")
    return f"{event.outcome:<10} {path}"


class LineReporter:
    """One plain line per file, for logs and pipes (no terminal control codes)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def start(self, files: int, total_bytes: int) -> None:
        self._stream.write(f"reading {files} files ({total_bytes / 1e6:.1f} MB)\n")
        self._stream.flush()

    def file_done(self, event: FileEvent) -> None:
        self._stream.write(describe(event) + "\n")
        self._stream.flush()

    def message(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        pass


class RichReporter:
    """A live progress bar with ETA and per-stage counts; failures are printed above it.

    The bar advances by bytes, not files, so one large PDF among many small notes does not
    make the ETA lie.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._files = self._done = self._pages = self._ocr_pages = self._chunks = 0
        self._started = time.monotonic()

    def start(self, files: int, total_bytes: int) -> None:
        self._files = files
        self._started = time.monotonic()
        self._progress.start()
        self._task = self._progress.add_task(self._description(), total=max(total_bytes, 1), stats="")

    def file_done(self, event: FileEvent) -> None:
        if event.outcome == "failed":
            self._console.print(f"[red]failed[/red] {escape(shown_path(event.path))}: {escape(event.reason or '')}")
        elif event.textless_pages:
            note = textless_note(event.pages, event.textless_pages)
            self._console.print(f"[yellow]{event.outcome}[/yellow] {escape(shown_path(event.path))}: {note}")
        if self._task is None:
            return
        self._done += 1
        self._pages += event.pages
        self._ocr_pages += len(event.ocr_pages)
        self._chunks += event.chunks
        rate = self._chunks / max(time.monotonic() - self._started, 1e-9)
        ocr = f" ({self._ocr_pages} by OCR)" if self._ocr_pages else ""
        stats = f"pages {self._pages}{ocr} · chunks {self._chunks} · {rate:.1f} chunks/s"
        self._progress.update(self._task, advance=event.size_bytes, description=self._description(), stats=stats)

    def message(self, text: str) -> None:
        self._console.print(text, highlight=False, markup=False)

    def finish(self) -> None:
        self._progress.stop()

    def _description(self) -> str:
        return f"files {self._done}/{self._files}"
