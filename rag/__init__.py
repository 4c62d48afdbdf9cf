"""The core a user imports: configuration, records, errors, embedding, storage, retrieval."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rag-kb")  # written in one place, pyproject.toml
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "unknown"
