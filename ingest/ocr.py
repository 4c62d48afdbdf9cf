"""Scanned PDF pages read by OCR: which pages, the picture of each, the engines, the page's text.

A scanned page is a picture with no text layer (or a few stamped words). Such a page is drawn by
PDFium at ``ingest.ocr_dpi`` and read by one of two engines behind :class:`OcrEngine`:

- ``tesseract``: Debian's ``tesseract-ocr`` program, run once per page with its words' boxes
  written as TSV (``make install`` installs it where apt is available);
- ``rapidocr``: the PP-OCR detection and recognition models that ship inside the ``rapidocr``
  wheel, run by ONNX Runtime on one thread (nothing is downloaded: the packaged files are named).

``ingest.ocr_engine = "auto"`` takes Tesseract when its program is installed, else RapidOCR
(bench/RESULTS.md, "OCR", has the measurements behind that order).

Which pages (``ingest.ocr``): ``auto`` reads a page whose text layer has fewer than
``ingest.ocr_min_chars`` characters and that draws something besides text (a scan is an image);
``force`` reads every page that draws anything (for a text layer that is there but wrong, such as
a font without its character map); ``off`` none. A blank page draws nothing and is never worth
an engine's time. ``auto`` keeps OCR's text only when it finds more than the text layer had, so a
nearly empty page of real text keeps its own words; ``force`` keeps OCR's text wherever it finds
any.

The recognised lines become the page's text, one line per row: boxes whose vertical centres
line up form one row, left to right, so a table row keeps its label and its numbers on one line
as PDFium's text does. Each box's place on the page is kept as a :class:`~rag.types.TextBox`, for
marking a cited span on the page's picture.

An engine is loaded once per process, when its first page comes (a loader worker keeps it for
every later file), and computes on one core: the loader workers are sized to the cores.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rag.config import IngestConfig, OcrEngineName, OcrMode, child_environment
from rag.errors import ConfigError
from rag.pdfium import PDFIUM_LOCK
from rag.types import LoadedDocument, Page, TextBox

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

EngineName = Literal["rapidocr", "tesseract"]
ENGINE_TITLES: dict[str, str] = {"rapidocr": "RapidOCR", "tesseract": "Tesseract"}
TESSERACT = "tesseract"
_MAX_SIDE_PX = 7000  # a poster-sized page is drawn smaller rather than as a picture of gigabytes
_ROW_OVERLAP = 0.5  # boxes whose centres are closer than this share of their height share a row


@dataclass(frozen=True, slots=True)
class OcrSettings:
    """What a loader needs to know about OCR (``ingest.ocr*``), with the engine already chosen."""

    mode: OcrMode = "off"
    engine: EngineName = "rapidocr"
    min_chars: int = 32
    dpi: int = 300
    page_timeout_s: float = 120.0

    @classmethod
    def of(cls, ingest: IngestConfig) -> OcrSettings:
        """The settings of ``ingest``, ``ocr_engine = "auto"`` resolved on this machine."""
        return cls(
            mode=ingest.ocr,
            engine=resolve_engine(ingest.ocr_engine),
            min_chars=ingest.ocr_min_chars,
            dpi=ingest.ocr_dpi,
            page_timeout_s=ingest.ocr_page_timeout_s,
        )

    @property
    def on(self) -> bool:
        return self.mode != "off"


OCR_OFF = OcrSettings()


def resolve_engine(name: OcrEngineName) -> EngineName:
    """``auto``: Tesseract when its program is on the PATH, else RapidOCR."""
    if name == "auto":
        return "tesseract" if shutil.which(TESSERACT) else "rapidocr"
    return name


def check_engine(settings: OcrSettings) -> None:
    """Raise ConfigError, saying what to do, when the chosen engine cannot run here."""
    if not settings.on:
        return
    if settings.engine == "tesseract" and shutil.which(TESSERACT) is None:
        raise ConfigError(
            'ingest.ocr_engine = "tesseract", but the tesseract program is not installed: install it '
            '(apt-get install tesseract-ocr), or set ingest.ocr_engine = "rapidocr" (or "auto"), or ingest.ocr = "off"'
        )
    if settings.engine == "rapidocr":
        missing = [name for name in ("rapidocr", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(
                f'ingest.ocr_engine = "rapidocr", but {" and ".join(missing)} is not installed: run `make install`, '
                'or set ingest.ocr = "off"'
            )


# --- which pages ----------------------------------------------------------------------------


def visible_chars(text: str) -> int:
    """Characters that are not white space."""
    return len("".join(text.split()))


def pages_to_read(data: bytes, pages: Sequence[Page], settings: OcrSettings) -> tuple[int, ...]:
    """The numbers of the pages of a PDF (its bytes and its pages as loaded) that OCR should read."""
    if not settings.on:
        return ()
    candidates = [
        page.number
        for page in pages
        if page.number is not None and (settings.mode == "force" or visible_chars(page.text) < settings.min_chars)
    ]
    if not candidates:
        return ()
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            return ()  # PDFium cannot open it: there is nothing to draw either
        try:
            besides_text = settings.mode == "auto"
            return tuple(number for number in candidates if _draws(pdf, number - 1, besides_text=besides_text))
        finally:
            pdf.close()


def _draws(pdf: Any, index: int, *, besides_text: bool) -> bool:
    """Whether the page draws anything (``besides_text``: anything but text: an image, a path, a
    shading). A scan does; a blank page does not."""
    import pypdfium2.raw as pdfium_c

    if index >= len(pdf):
        return False
    try:
        page = pdf[index]
        try:
            return any(not besides_text or item.type != pdfium_c.FPDF_PAGEOBJ_TEXT for item in page.get_objects())
        finally:
            page.close()
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a page whose objects do not read: let OCR try its picture
        return True


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One box of text an engine recognised, in pixels of the picture it read."""

    text: str
    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True, slots=True)
class OcrText:
    """A page as OCR read it: its text, the boxes of its lines, and the engine."""

    text: str
    boxes: tuple[TextBox, ...]
    engine: str


class OcrEngine(Protocol):
    """Reads the text boxes of a picture of a page."""

    name: str

    def read(self, image: Image.Image, dpi: int) -> list[OcrLine]:
        """The recognised boxes of ``image`` (drawn at ``dpi``), in any order; raise on failure."""
        ...


class RapidOcrEngine:
    """RapidOCR with the models packaged in its wheel, on one ONNX Runtime thread."""

    name = "rapidocr"

    def __init__(self) -> None:
        import rapidocr
        from rapidocr import RapidOCR

        models = Path(rapidocr.__file__).parent / "models"
        # Named files, so RapidOCR never looks for its models on a model hub.
        self._engine = RapidOCR(
            params={
                "Global.log_level": "warning",
                # The text-line orientation classifier turned whole lines of SEC filings upside down (read
                # as garbage); scanned pages are upright, so it is off.
                "Global.use_cls": False,
                "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
                "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
                "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
                "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

    def read(self, image: Image.Image, dpi: int) -> list[OcrLine]:
        import numpy as np

        result: Any = self._engine(np.asarray(image.convert("RGB")))  # detection and recognition: RapidOCROutput
        if result.boxes is None or result.txts is None:
            return []
        lines = []
        for box, text in zip(result.boxes, result.txts, strict=True):
            xs, ys = [float(point[0]) for point in box], [float(point[1]) for point in box]
            lines.append(OcrLine(str(text), min(xs), min(ys), max(xs), max(ys)))
        return lines


class TesseractEngine:
    """The ``tesseract`` program (English), one run per page, on one thread."""

    name = "tesseract"

    def __init__(self, timeout_s: float) -> None:
        program = shutil.which(TESSERACT)
        if program is None:
            raise OcrUnavailable("the tesseract program is not installed")
        self._program = program
        self._timeout_s = timeout_s

    def read(self, image: Image.Image, dpi: int) -> list[OcrLine]:
        picture = io.BytesIO()
        image.convert("L").save(picture, format="PPM")  # uncompressed: nothing to encode or decode
        command = [self._program, "stdin", "stdout", "--dpi", str(dpi), "-l", "eng", "--psm", "3", "tsv"]
        try:
            completed = subprocess.run(
                command,
                input=picture.getvalue(),
                capture_output=True,
                timeout=self._timeout_s,
                env=child_environment({"OMP_THREAD_LIMIT": "1"}),  # one core: workers are sized to the cores
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise OcrUnavailable(f"tesseract took longer than {self._timeout_s:g} s") from None
        if completed.returncode != 0:
            message = completed.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OcrUnavailable(f"tesseract failed: {message[-1] if message else completed.returncode}")
        return tesseract_lines(completed.stdout.decode("utf-8", "replace"))


def tesseract_lines(tsv: str) -> list[OcrLine]:
    """Tesseract's TSV (one row per word, with its block, paragraph and line) as one box per line."""
    words: dict[tuple[str, str, str], list[tuple[str, int, int, int, int]]] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if row.get("level") != "5" or not text:
            continue
        try:
            left, top, width, height = (int(row[key]) for key in ("left", "top", "width", "height"))
        except (KeyError, TypeError, ValueError):
            continue
        key = (row["block_num"], row["par_num"], row["line_num"])
        words.setdefault(key, []).append((text, left, top, left + width, top + height))
    return [
        OcrLine(
            " ".join(word[0] for word in line),
            min(word[1] for word in line),
            min(word[2] for word in line),
            max(word[3] for word in line),
            max(word[4] for word in line),
        )
        for line in words.values()
    ]


class OcrUnavailable(Exception):
    """An engine that cannot load or run (a page it fails on is logged and left as it was)."""


# One engine per process: a loader worker reads every scanned page of every file with it, and
# loading RapidOCR's models for each page would cost more than reading the page.
_ENGINES: dict[tuple[str, float], OcrEngine] = {}


def load_engine(settings: OcrSettings) -> OcrEngine:
    """The engine ``settings`` name, loaded on first use in this process and kept."""
    key = (settings.engine, settings.page_timeout_s)
    if key not in _ENGINES:
        if settings.engine == "tesseract":
            _ENGINES[key] = TesseractEngine(settings.page_timeout_s)
        else:
            try:
                _ENGINES[key] = RapidOcrEngine()
            except ImportError as exc:
                raise OcrUnavailable(f"rapidocr cannot be imported ({exc})") from None
    return _ENGINES[key]


def read_pages(path: Path, data: bytes, numbers: Sequence[int], settings: OcrSettings) -> dict[int, OcrText]:
    """Pages ``numbers`` of the PDF ``data`` read by OCR. A page that cannot be drawn or read is
    left out (and logged); an engine that cannot load raises :class:`OcrUnavailable`."""
    engine = load_engine(settings)
    found: dict[int, OcrText] = {}
    for number in numbers:
        image = _page_picture(path, data, number, settings.dpi)
        if image is None:
            continue
        try:
            lines = engine.read(image, settings.dpi)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - one page OCR fails on must not lose the document
            logger.warning("%s: page %d: OCR failed: %s", path, number, exc)
            continue
        text, boxes = page_text(rows_of(lines), image.width, image.height)
        found[number] = OcrText(text, boxes, engine.name)
    return found


def _page_picture(path: Path, data: bytes, number: int, dpi: int) -> Image.Image | None:
    """Page ``number`` drawn in grey at ``dpi`` (smaller for a huge page), or None if it cannot be."""
    import pypdfium2 as pdfium

    # The document is opened for each page, so that the lock is never held while a page is read.
    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            logger.warning("%s: PDFium cannot open it to draw page %d: %s", path, number, exc)
            return None
        try:
            page = pdf[number - 1]
            try:
                width, height = page.get_size()
                scale = min(dpi / 72, _MAX_SIDE_PX / max(width, height, 1.0))
                bitmap = page.render(scale=scale, grayscale=True)
                try:
                    return bitmap.to_pil().copy()  # its own pixels: the bitmap's are freed below
                finally:
                    bitmap.close()
            finally:
                page.close()
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a page that does not draw stays as it was
            logger.warning("%s: page %d cannot be drawn for OCR: %s", path, number, exc)
            return None
        finally:
            pdf.close()


def rows_of(lines: Sequence[OcrLine]) -> list[list[OcrLine]]:
    """Boxes grouped into rows, top to bottom, each row left to right: a box joins the row above
    when their vertical centres are closer than half the smaller height (a table row's cells)."""
    rows: list[list[OcrLine]] = []
    extents: list[tuple[float, float]] = []  # each row's top and bottom
    for line in sorted(lines, key=lambda box: (box.top + box.bottom) / 2):
        centre, height = (line.top + line.bottom) / 2, line.bottom - line.top
        if rows:
            top, bottom = extents[-1]
            if abs(centre - (top + bottom) / 2) < _ROW_OVERLAP * min(height, bottom - top):
                rows[-1].append(line)
                extents[-1] = (min(top, line.top), max(bottom, line.bottom))
                continue
        rows.append([line])
        extents.append((line.top, line.bottom))
    return [sorted(row, key=lambda box: box.left) for row in rows]


def page_text(rows: Sequence[Sequence[OcrLine]], width: int, height: int) -> tuple[str, tuple[TextBox, ...]]:
    """The page's text (rows on lines of their own, a row's boxes one space apart) and each box's
    span of it, placed as fractions of the picture's ``width`` and ``height``."""
    parts: list[str] = []
    boxes: list[TextBox] = []
    position = 0
    for row in rows:
        texts = [(" ".join(line.text.split()), line) for line in row]
        texts = [(text, line) for text, line in texts if text]
        if not texts:
            continue
        if parts:
            parts.append("\n")
            position += 1
        for i, (text, line) in enumerate(texts):
            if i:
                parts.append(" ")
                position += 1
            parts.append(text)
            boxes.append(
                TextBox(
                    position,
                    position + len(text),
                    _fraction(line.left, width),
                    _fraction(line.top, height),
                    _fraction(line.right, width),
                    _fraction(line.bottom, height),
                )
            )
            position += len(text)
    return "".join(parts), tuple(boxes)


def _fraction(value: float, size: int) -> float:
    return round(min(max(value / max(size, 1), 0.0), 1.0), 5)


def with_ocr_text(document: LoadedDocument, found: Mapping[int, OcrText], mode: OcrMode) -> LoadedDocument:
    """``document`` with OCR's text on the pages it read, where it is kept (see the module doc)."""
    if not found:
        return document
    pages = []
    for page in document.pages:
        read = found.get(page.number) if page.number is not None else None
        if read is not None and _keep(read.text, page.text, mode):
            page = replace(page, text=read.text, ocr_engine=read.engine, boxes=read.boxes)
        pages.append(page)
    return replace(document, pages=tuple(pages))


def _keep(ocr_text: str, layer_text: str, mode: OcrMode) -> bool:
    found = visible_chars(ocr_text)
    return found > 0 if mode == "force" else found > visible_chars(layer_text)
