"""The run log of the embedded knowledge base: one row per ingestion run, one per file it saw.

Runs are committed with the rest of a writer's transaction, so a run's file outcomes and the
documents they describe land together."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from rag.kb.base import RunInfo, utc_now
from rag.records import FailedFile


def start_run(db: sqlite3.Connection) -> int:
    cursor = db.execute("INSERT INTO runs (started_at, status) VALUES (?, 'running')", (utc_now(),))
    return int(cursor.lastrowid or 0)


def finish_run(db: sqlite3.Connection, run_id: int, status: str, summary: dict[str, Any]) -> None:
    db.execute(
        "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
        (utc_now(), status, json.dumps(summary), run_id),
    )


def record_file(db: sqlite3.Connection, run_id: int, path: str, outcome: str, reason: str | None, chunks: int) -> None:
    db.execute(
        "INSERT OR REPLACE INTO run_files (run_id, path, outcome, reason, chunks) VALUES (?, ?, ?, ?, ?)",
        (run_id, path, outcome, reason, chunks),
    )


def mark_interrupted(db: sqlite3.Connection) -> None:
    """Runs still ``running`` when a writer opens were killed: say so."""
    db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")


def last_run(db: sqlite3.Connection) -> RunInfo | None:
    row = db.execute(
        "SELECT id, started_at, finished_at, status, summary FROM runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    failed = [
        FailedFile(path=path, reason=reason)
        for path, reason in db.execute(
            "SELECT path, reason FROM run_files WHERE run_id = ? AND outcome = 'failed' ORDER BY path",
            (row[0],),
        )
    ]
    return RunInfo(
        id=row[0],
        started_at=row[1],
        finished_at=row[2],
        status=row[3],
        summary=json.loads(row[4]) if row[4] else {},
        failed=failed,
    )
