"""Writing a file so that a reader, or a crash, sees the old content or the new, never a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden file beside ``path``, flush it to disk, and rename it into place.

    The rename is atomic on POSIX; the ``fsync`` before it makes sure that after a power cut the
    name points at whole content. The partial file starts with a dot, so ingestion, which skips
    hidden files, never picks it up. Its name is new each time and created exclusively
    (``mkstemp``), so a link planted at a predictable name cannot redirect the write, and two
    writers of one path do not share a partial file; the rename replaces a link at ``path``
    rather than writing through it.
    """
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        partial.chmod(0o644)  # mkstemp's 0600 would hide a manifest or upload from its group
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))
