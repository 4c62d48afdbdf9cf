"""Named crash points for fault-injection tests.

Crash safety is a claim about every instant of a run, and timing alone rarely lands a kill
inside a commit (a commit is milliseconds of a minute-long run). So the ingestion job and the
knowledge-base writer call :func:`crash_point` at each step whose interruption leaves a
different state on disk; with ``RAGTEST_CRASH_AT=NAME`` (or ``NAME:N``, the N-th time that point
is reached) the process kills itself there with SIGKILL, exactly as ``kill -9`` or an
out-of-memory kill would: no ``finally`` block, no atexit handler, no flush.

Unset (every real run), a crash point costs one dictionary lookup.

The points, in the order a run reaches them (``tests/integration/test_crash.py`` kills a run
at each one):

- ``loaded``: a file's pages are extracted, before it is chunked.
- ``encoded``: a batch of chunks is embedded, before its documents are stored.
- ``stored``: a batch's documents are stored in the open transaction, not yet committed.
- ``index-written``: a commit wrote the next generation's FAISS file; SQLite still names the old.
- ``keyword-written``: a commit wrote the next BM25 folder under its temporary name.
- ``keyword-renamed``: the BM25 folder has its final name; SQLite still names the old generation.
- ``sqlite-committed``: SQLite names the new generation; ``manifest.json`` is the old one's.
- ``manifest-written``: ``manifest.json`` is new; the old generation's files are not yet removed.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_ENV = "RAGTEST_CRASH_AT"

CRASH_POINTS = (
    "loaded",
    "encoded",
    "stored",
    "index-written",
    "keyword-written",
    "keyword-renamed",
    "sqlite-committed",
    "manifest-written",
)

# The same for a knowledge base in Milvus (rag/kb/milvus.py), whose commit is a sequence of writes.
MILVUS_CRASH_POINTS = (
    "milvus-pending",  # the commit's documents are marked pending; nothing else written
    "milvus-chunks",  # their new chunks and pages are written; the old ones are still there
    "milvus-old-deleted",  # the old chunks and pages are gone; the documents are still pending
)

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``RAGTEST_CRASH_AT`` names this point (and this visit)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    assert name in CRASH_POINTS + MILVUS_CRASH_POINTS, f"unknown crash point {name!r}"
    point, _, visit = wanted.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(visit or 1):
        os.kill(os.getpid(), signal.SIGKILL)
