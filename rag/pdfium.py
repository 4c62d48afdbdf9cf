"""The one lock around PDFium, which the text extraction and the page pictures both call.

PDFium is not thread-safe: two threads may not call it at the same time, not even on different
documents (pypdfium2's documentation, "Incompatibility with Threading"). The web page draws
pages for several sessions from threads and ingests uploads in its own process, so every use of
pypdfium2 in this project holds this lock, and closes what it opened before letting go (a
finalizer that closes a document later would run outside the lock).
"""

from __future__ import annotations

import threading

PDFIUM_LOCK = threading.RLock()
