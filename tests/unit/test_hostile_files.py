"""Hostile files cannot stall or sink a run (issue 13).

Each test makes its hostile file, runs a whole ingestion beside a good file, and checks that the
hostile file is reported with its reason and that the good file landed. Worker runs use small
limits (2 s, 300 MB) so that a file past them is stopped quickly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from ingest.discovery import discover
from ingest.job import IngestSummary, read_file, run_ingest
from ingest.loaders import SUPPORTED_EXTENSIONS
from ingest.progress import describe
from rag.kb.embedded import EmbeddedKnowledgeBase
from rag.records import FailedFile, TextlessFile
from tests.fakes import FakeEmbedder, FakeIngestReporter
from tests.filefactory import (
    LAUGHS_PAYLOAD,
    make_billion_laughs_docx,
    make_billion_laughs_html,
    make_content_bomb_pdf,
    make_docx_bomb,
    make_many_pages_pdf,
    make_pdf,
)

GOOD_TEXT = "Apples grow on trees in the orchard beside the river. " * 10
PARENT_GROWTH_LIMIT = 200e6  # the bombs below need 350 MB and more: none of it may reach the parent


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_text(GOOD_TEXT)
    return folder


def _config(make_config: Any, **overrides: Any) -> Any:
    limits = {"ingest__workers": 1, "ingest__file_timeout_s": 2.0, "ingest__file_memory_mb": 300.0}
    return make_config(embedding__model="fake/hashing-64", **{**limits, **overrides})


def _ingest(folder: Path, config: Any, reporter: FakeIngestReporter | None = None) -> tuple[IngestSummary, float]:
    started = time.monotonic()
    summary = run_ingest([folder], config, FakeEmbedder(), reporter or FakeIngestReporter())
    return summary, time.monotonic() - started


def _reasons(summary: IngestSummary) -> dict[str, str]:
    return {Path(failure.path).name: failure.reason for failure in summary.failed}


def _stored_texts(config: Any) -> dict[str, str]:
    texts: dict[str, str] = {}
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        for chunk, source in kb.all_chunks():
            texts[Path(source).name] = texts.get(Path(source).name, "") + chunk.text
    return texts


def _assert_good_file_landed(summary: IngestSummary, config: Any) -> None:
    assert summary.added >= 1
    assert "Apples grow on trees" in _stored_texts(config)["good.txt"]


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


# --- bounded workers ------------------------------------------------------------------------


def test_a_pdf_that_takes_too_long_is_stopped_and_the_run_goes_on(folder: Path, make_config: Any) -> None:
    make_content_bomb_pdf(folder / "endless.pdf", text_objects=1_000_000)  # ~6 s of PDFium unbounded
    config = _config(make_config, ingest__file_memory_mb=2048.0)
    summary, seconds = _ingest(folder, config)
    assert _reasons(summary) == {"endless.pdf": "took longer than 2 s (ingest.file_timeout_s)"}
    _assert_good_file_landed(summary, config)
    assert seconds < 30


def test_a_pdf_that_needs_too_much_memory_kills_only_its_worker(folder: Path, make_config: Any) -> None:
    make_content_bomb_pdf(folder / "greedy.pdf", text_objects=1_000_000)  # ~500 MB of PDFium objects
    config = _config(make_config, ingest__file_timeout_s=60.0)
    before = _rss()
    summary, _ = _ingest(folder, config)
    reason = _reasons(summary)["greedy.pdf"]
    assert "needed more than 300 MB (ingest.file_memory_mb)" in reason, reason
    _assert_good_file_landed(summary, config)
    assert _rss() - before < PARENT_GROWTH_LIMIT


def test_a_zip_bomb_named_docx_fails_on_the_memory_limit(folder: Path, make_config: Any) -> None:
    bomb = make_docx_bomb(folder / "bomb.docx", inflated_mb=350)
    assert bomb.stat().st_size < 5e6
    config = _config(make_config, ingest__file_timeout_s=60.0)
    before = _rss()
    summary, _ = _ingest(folder, config)
    assert _reasons(summary) == {"bomb.docx": "needed more than 300 MB (ingest.file_memory_mb)"}
    _assert_good_file_landed(summary, config)
    assert _rss() - before < PARENT_GROWTH_LIMIT


def test_a_pdf_with_thousands_of_pages_loads_within_the_limits(folder: Path, make_config: Any) -> None:
    make_many_pages_pdf(folder / "appendix.pdf", pages=3000)  # about 1.5 s and 30 MB to load
    config = _config(make_config, ingest__file_timeout_s=60.0)
    summary, _ = _ingest(folder, config)
    assert summary.failed == []
    assert summary.added == 2 and summary.pages == 3001
    assert "Page 2999 of the appendix" in _stored_texts(config)["appendix.pdf"]


# --- files the loaders must not expand --------------------------------------------------------


def test_billion_laughs_are_never_expanded(folder: Path, make_config: Any) -> None:
    make_billion_laughs_docx(folder / "laughs.docx")
    make_billion_laughs_html(folder / "laughs.html")
    config = _config(make_config, ingest__workers=0)  # in-process: nothing would stop an expansion
    summary, seconds = _ingest(folder, config)
    texts = _stored_texts(config)
    assert all(LAUGHS_PAYLOAD not in text for text in texts.values())
    assert _reasons(summary) == {"laughs.docx": "not a valid DOCX file"}  # libxml2 refuses the amplification
    assert "Kept words" in texts["laughs.html"] and "]>" not in texts["laughs.html"]
    _assert_good_file_landed(summary, config)
    assert seconds < 10


def test_a_huge_file_is_refused_by_its_size_without_reading_it(folder: Path, make_config: Any) -> None:
    with (folder / "huge.txt").open("wb") as handle:
        handle.truncate(20 * 10**9)  # sparse: 20 GB by its size, nothing on disk
    config = _config(make_config, ingest__workers=0)
    summary, seconds = _ingest(folder, config)
    assert _reasons(summary) == {"huge.txt": "larger than ingest.max_file_mb (256 MB)"}
    _assert_good_file_landed(summary, config)
    assert seconds < 10


def test_a_file_whose_size_lies_is_read_only_up_to_the_limit() -> None:
    # /proc files are regular files of size 0 that hold more: a growing file looks the same
    load = read_file("/proc/self/maps", None, max_bytes=100)
    assert load.error == "larger than ingest.max_file_mb (0.0001 MB)"
    assert load.size_bytes == 101


# --- things that are not files -----------------------------------------------------------------


def test_devices_fifos_and_symlink_loops_are_reported_without_being_opened(folder: Path, make_config: Any) -> None:
    (folder / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.txt")  # opening it would block until someone writes
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    (folder / "a.md").symlink_to(folder / "b.md")
    (folder / "b.md").symlink_to(folder / "a.md")
    config = _config(make_config, ingest__workers=0)
    summary, seconds = _ingest(folder, config)
    assert _reasons(summary) == {
        "zero.txt": "not a regular file but a character device: only regular files are read",
        "pipe.txt": "not a regular file but a named pipe (FIFO): only regular files are read",
        "loop.txt": "cannot read: a symbolic link loop",
        "a.md": "cannot read: a symbolic link loop",
        "b.md": "cannot read: a symbolic link loop",
    }
    _assert_good_file_landed(summary, config)
    assert seconds < 10


def test_a_fifo_in_a_files_place_does_not_block_the_loader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "late.txt")  # put there after discovery: the loader must not wait on it
    assert read_file(str(tmp_path / "late.txt"), None, 1000).error == "not a regular file: only regular files are read"


def test_a_file_that_vanishes_after_discovery_is_reported(folder: Path, make_config: Any) -> None:
    (folder / "fleeting.txt").write_text("Here for a moment. " * 10)
    reporter = FakeIngestReporter(on_start=(folder / "fleeting.txt").unlink)  # after discovery, before loading
    config = _config(make_config)
    summary, _ = _ingest(folder, config, reporter)
    assert _reasons(summary) == {"fleeting.txt": "cannot read: No such file or directory"}
    _assert_good_file_landed(summary, config)


def test_odd_file_names_load_and_are_shown_on_one_line(folder: Path, make_config: Any) -> None:
    odd = ["new\nline.txt", "tab\there.txt", "-leading-dash.txt", "  spaced  out .txt", "ünïcödé.txt"]
    for name in odd:
        (folder / name).write_text(f"The file named {name!r} holds words about pears. " * 5)
    try:
        (folder / os.fsdecode(b"latin1-\xe9t\xe9.txt")).write_text("Not UTF-8 in its name.")
        undecodable = True
    except (OSError, UnicodeEncodeError):
        undecodable = False  # the file system insists on UTF-8 names
    reporter = FakeIngestReporter()
    config = _config(make_config, ingest__workers=0)
    summary, _ = _ingest(folder, config, reporter)
    stored = set(_stored_texts(config))
    assert {*odd, "good.txt"} <= stored
    if undecodable:
        reason = "the file name is not valid UTF-8: rename the file"
        assert summary.failed == [FailedFile(path=str(folder / "latin1-\\xe9t\\xe9.txt"), reason=reason)]
    for event in reporter.events:
        assert "\n" not in describe(event) and "\t" not in describe(event)
    lines = [describe(event) for event in reporter.events]
    assert any(line.startswith("added") and "/docs/new\\nline.txt (1 pages, " in line for line in lines), lines


# --- pages without text ---------------------------------------------------------------------


def test_pages_without_text_are_counted_and_reported(folder: Path, make_config: Any) -> None:
    make_pdf(folder / "scan.pdf", ["Revenue grew by ten percent.", "", "Costs fell.", ""])
    reporter = FakeIngestReporter()
    config = _config(make_config, ingest__workers=0)
    summary, _ = _ingest(folder, config, reporter)
    source = str(folder / "scan.pdf")
    assert summary.pages_without_text == [TextlessFile(path=source, pages=[2, 4], of=4)]
    assert summary.as_dict()["pages_without_text"] == [{"path": source, "pages": [2, 4], "of": 4}]
    (event,) = [event for event in reporter.events if event.path == source]
    assert describe(event) == (
        f"added      {source} (4 pages, 2 chunks); 2 of 4 pages have no text (blank, or scanned with no text OCR "
        "could read; see ingest.ocr): 2, 4"
    )
    _assert_good_file_landed(summary, config)


def test_discovery_lists_only_regular_files(folder: Path) -> None:
    os.mkfifo(folder / "pipe.txt")
    (folder / "zero.txt").symlink_to("/dev/zero")
    (folder / "link.txt").symlink_to(folder / "good.txt")
    found = discover([folder / "pipe.txt", folder], SUPPORTED_EXTENSIONS)
    assert [path.name for path in found.files] == ["good.txt", "link.txt"]
    assert sorted(Path(path).name for path, _ in found.rejected) == ["pipe.txt", "zero.txt"]
