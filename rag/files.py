"""Writing a file so that a reader, or a crash, sees the old content or the new, never a torn one."""

from __future__ import annotations

import os
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden file beside ``path``, flush it to disk, and rename it into place.

    The rename is atomic on POSIX; the ``fsync`` before it makes sure that after a power cut the
    name points at whole content. The partial file starts with a dot, so ingestion, which skips
    hidden files, never picks it up.
    """
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(path)


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))
