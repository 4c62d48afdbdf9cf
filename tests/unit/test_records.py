"""The JSON records (rag.records): built from the pipeline's types, written and read through one model."""

from __future__ import annotations

import json

from rag.records import AnswerRecord, HitRecord, located
from rag.types import Answer, Chunk, Citation, ScoredChunk

HIT = ScoredChunk(
    chunk=Chunk(
        id=7, document_id="d", ordinal=0, text="Employees get 28 days.", page=2, page_label="ii", start=10, end=32,
        token_count=5,
    ),
    source="/docs/handbook.pdf",
    score=0.123456789,
    retrievers=("dense", "bm25"),
)  # fmt: skip
CITATION = Citation(
    n=1, chunk_id=7, file="/docs/handbook.pdf", file_name="handbook.pdf", page=2, page_label="ii", start=10, end=32,
    quote="Employees get 28 days.", support=0.8, sentence="Staff get 28 days.", origin="attributed", supported=True,
)  # fmt: skip
ANSWER = Answer(
    question="How many days?", text="Staff get 28 days [1].", abstained=False, citations=(CITATION,), retrieved=(HIT,),
    model="smol", timings={"generate_s": 1.23456789},
)  # fmt: skip


def test_a_hit_record_carries_where_and_how_it_was_found() -> None:
    record = HitRecord.of(HIT)
    assert (record.file, record.page, record.page_label, record.start, record.end) == (
        "/docs/handbook.pdf",
        2,
        "ii",
        10,
        32,
    )
    assert record.chunk_id == 7 and record.retrievers == ["dense", "bm25"] and record.score == 0.123457
    assert record.where == "/docs/handbook.pdf p.2" and located("a.txt", None) == "a.txt"


def test_an_answer_record_round_trips_through_json() -> None:
    record = AnswerRecord.of(ANSWER)
    data = json.loads(record.model_dump_json())
    assert data["answer"] == ANSWER.text and data["timings"] == {"generate_s": 1.234568}
    assert data["citations"][0]["origin"] == "attributed" and data["citations"][0]["sentence"] == "Staff get 28 days."
    assert data["retrieved"][0]["text"] == HIT.chunk.text
    assert AnswerRecord.model_validate(data) == record


def test_records_from_an_earlier_version_load() -> None:
    """Fields added later have defaults, keys since dropped are ignored."""
    old = {"file": "a.txt", "score": 0.5, "retrievers": ["dense"], "title": "dropped"}
    record = HitRecord.model_validate(old)
    assert record.page is None and record.chunk_id is None and record.text == ""
