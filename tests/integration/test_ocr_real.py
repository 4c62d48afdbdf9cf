"""A question about a fact that is only on a scanned page: the real OCR engine reads the page at
ingestion (the default engine: Tesseract where it is installed, else RapidOCR), the real
embedder and retrieval find it, and the real model, through the session's vLLM server, answers.

The 135M model is too weak to promise a cited answer for any one question, so the test asserts
what the pipeline guarantees: the scanned page is retrieved first, and every citation the model
makes that is supported points at it; that it cites at all is checked, and says so when it fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.job import run_ingest
from rag.components import Components
from rag.config import AppConfig
from rag.kb.embedded import EmbeddedKnowledgeBase
from rag.pipeline import build_pipeline
from tests.filefactory import make_scanned_pdf
from tests.integration.cli import REPO
from tests.integration.conftest import config_for

pytestmark = pytest.mark.integration

QUESTION = "In which city is the spare parts warehouse located?"
FACT = "The spare parts warehouse of the company is located in the city of Bergen, next to the harbour."


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, real_embedder: Any, model_settings: dict[str, Any]) -> AppConfig:
    """The bundled samples and a report whose second page, holding the fact, is a scan."""
    folder = tmp_path_factory.mktemp("scanned-docs")
    make_scanned_pdf(
        folder / "logistics-report.pdf",
        ["Logistics report\nThe fleet grew by four trucks this year.", f"Warehouses\n{FACT}"],
        scanned=[2],
    )
    config = config_for(tmp_path_factory.mktemp("ocr") / "kb", model_settings, **{"answer.citations": "constrained"})
    summary = run_ingest([REPO / "samples", folder], config, real_embedder)
    assert summary.failed == [] and summary.ocr_pages == 1, summary
    assert summary.pages_read_by_ocr[0].pages == [2]
    return config


def test_the_scanned_page_is_read_stored_and_counted(config: AppConfig) -> None:
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        assert kb.stats().ocr_pages == 1
        document = next(d for d in kb.documents() if d.source.endswith("logistics-report.pdf"))
        page = kb.page(document.id, 2)
    assert page is not None and page.read_by_ocr and page.boxes
    assert "Bergen" in page.text and "spare parts warehouse" in page.text


def test_a_question_about_the_scanned_page_is_answered_from_it(
    config: AppConfig, model_server: AppConfig, real_embedder: Any
) -> None:
    assert (model_server.generator.port, model_server.data_dir) == (config.generator.port, config.data_dir)
    pipeline = build_pipeline(config, Components(config).server_generator(), embedder=real_embedder)
    (answer,) = pipeline.answer_many([QUESTION])
    top = answer.retrieved[0]
    assert Path(top.source).name == "logistics-report.pdf" and top.chunk.page == 2, answer.retrieved[:3]
    supported = [c for c in answer.citations if c.supported]
    for citation in supported:
        assert (Path(citation.file).name, citation.page) == ("logistics-report.pdf", 2), citation
    assert supported and not answer.abstained, f"the model did not cite the scanned page: {answer.raw_output!r}"
    assert "Bergen" in answer.text
