"""Finding the files to ingest under the paths a user gives."""

from __future__ import annotations

import os
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Discovery:
    """Supported files (absolute, sorted), paths that do not exist, and unsupported files."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)


def discover(paths: Iterable[Path], extensions: Set[str], exclude: Path | None = None) -> Discovery:
    """Walk ``paths`` (files or folders) for files whose suffix is in ``extensions``.

    Hidden files and folders (a leading dot) are skipped inside folders but honoured when
    named directly; folder symlinks are not followed (no cycles). ``exclude`` (the knowledge
    base's own directory) is never walked into.
    """
    found = Discovery()
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None

    def consider(path: Path) -> None:
        if path in seen:
            return
        seen.add(path)
        if path.suffix.lower() in extensions:
            found.files.append(path)
        else:
            found.unsupported.append(path)

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
            found.missing.append(str(given))
    found.files.sort()
    return found
