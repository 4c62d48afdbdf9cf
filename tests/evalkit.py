"""A tiny evaluation world for unit tests: three documents, four questions, canned answers.

Everything is fake but the stages themselves: the knowledge base is real (SQLite, FAISS, BM25)
and built with ``FakeEmbedder``; the generator and the chat tokenizer are fakes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ingest.job import run_ingest
from rag.config import AppConfig, load_config
from tests.fakes import FakeEmbedder

DOCS = {
    "handbook.txt": "Full-time employees receive 28 days of paid vacation per calendar year.",
    "robot.md": "The R2 robot carries up to 150 kg on its top deck.",
    "travel.txt": "Hotel costs are reimbursed up to 180 euros per night in Hamburg.",
}

VACATION = "How many days of paid vacation do full-time employees receive?"
PAYLOAD = "How much can the R2 robot carry on its top deck?"
HOTEL = "What is the hotel limit per night in Hamburg? <script>alert('x')</script>"
WORLD_CUP = "Who won the 2030 World Cup?"

QUESTIONS = [
    {"id": "vacation", "question": VACATION, "answers": ["28 days"], "sources": [{"file": "handbook.txt"}]},
    {"id": "payload", "question": PAYLOAD, "answers": ["150 kg"], "sources": [{"file": "robot.md"}]},
    {"id": "hotel", "question": HOTEL, "answers": ["180 euros"], "sources": [{"file": "travel.txt"}]},
    {"id": "worldcup", "question": WORLD_CUP, "answers": [], "unanswerable": True},
]

# Canned outputs citing passage [1], which is the right document for each question here.
GOOD_ANSWERS = {
    VACATION: "Full-time employees receive 28 days of paid vacation per calendar year [1].",
    PAYLOAD: "The R2 robot carries up to 150 kg on its top deck [1].",
    HOTEL: "Hotel costs are reimbursed up to 180 euros per night in Hamburg [1].",
}


def write_questions(path: Path, records: list[dict[str, Any]] | None = None) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records or QUESTIONS), encoding="utf-8")
    return path


def eval_config(tmp_path: Path, **overrides: Any) -> AppConfig:
    """A configuration over ``tmp_path/kb`` with the fake embedder's model id; dotted keys as ``a__b``."""
    values = {
        "kb_dir": tmp_path / "kb",
        "embedding.model": "fake/hashing-64",
        "ingest.workers": 0,
        "eval.runs_dir": tmp_path / "runs",
        "eval.bootstrap_resamples": 200,
        **{key.replace("__", "."): value for key, value in overrides.items()},
    }
    return load_config(overrides=values, environ={})


def build_kb(tmp_path: Path, config: AppConfig, embedder: FakeEmbedder | None = None) -> Path:
    """Write :data:`DOCS` under ``tmp_path/docs`` and ingest them into ``config.kb_dir``."""
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    run_ingest([docs], config, embedder or FakeEmbedder())
    return config.kb_dir
