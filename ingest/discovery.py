"""Finding the files to ingest under the paths a user gives."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from pathlib import Path

from ingest.progress import shown_path

_NOT_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


@dataclass
class Discovery:
    """Supported files (absolute, sorted), paths that do not exist, unsupported files, and
    ``rejected``: ``(path, reason)`` for a supported name that is no file to read (a device, a
    FIFO, a socket, a symbolic link loop or to nothing, a name that is not UTF-8). Paths in
    ``missing`` and ``rejected`` are for reports only: :func:`~ingest.progress.shown_path` forms."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def discover(paths: Iterable[Path], extensions: Set[str], exclude: Path | None = None) -> Discovery:
    """Walk ``paths`` (files or folders) for files whose suffix is in ``extensions``.

    Hidden files and folders (a leading dot) are skipped inside folders but honoured when
    named directly; folder symlinks are not followed (no cycles). ``exclude`` (the knowledge
    base's own directory) is never walked into. Nothing is opened, so a FIFO cannot block the
    walk; only regular files (or symbolic links to one) are listed in ``files``.
    """
    found = Discovery()
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None

    def consider(path: Path) -> None:
        if path in seen:
            return
        seen.add(path)
        if path.suffix.lower() not in extensions:
            found.unsupported.append(path)
        elif (reason := not_a_file_reason(path)) is not None:
            found.rejected.append((shown_path(str(path)), reason))
        else:
            found.files.append(path)

    for given in paths:
        path = Path(given).expanduser().absolute()
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                root_path = Path(root)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() != excluded)
                for name in sorted(names):
                    if not name.startswith("."):
                        consider(root_path / name)
        elif path.exists() or path.is_symlink():
            consider(path)
        else:
            found.missing.append(shown_path(str(given)))
    found.files.sort()
    return found


def not_a_file_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None for a regular file. Only ``stat``s (through
    symbolic links): opening a FIFO would block until someone writes to it."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8: rename the file"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "cannot read: a symbolic link loop"
        if exc.errno == errno.ENOENT and path.is_symlink():
            return "cannot read: a symbolic link to a file that does not exist"
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _NOT_FILES if test(mode)), "another kind of file")
    return f"not a regular file but {kind}: only regular files are read"
