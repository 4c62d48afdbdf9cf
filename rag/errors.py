"""The project's one error hierarchy.

Every error a user can cause (bad configuration, a bad file, a knowledge base that does not
match the configured model) is a :class:`RagError`. The command line turns these into a
one-line message and an exit status, never a stack trace. Anything else that escapes is a bug.
"""

from __future__ import annotations

from pathlib import Path


class RagError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(RagError):
    """The configuration is invalid: the message names the field, the bad value and its source."""


class KnowledgeBaseError(RagError):
    """A knowledge base cannot be opened or written (missing, locked, damaged)."""


class KnowledgeBaseNotFoundError(KnowledgeBaseError):
    """No knowledge base exists at the given directory."""


class KnowledgeBaseLockedError(KnowledgeBaseError):
    """Another process is writing to the knowledge base."""


class KnowledgeBaseDamagedError(KnowledgeBaseError):
    """A part of a knowledge base on disk is damaged. The message, the one wording of every such
    error, names the part (``what``) and points to ``rag check --repair``, which rebuilds what
    can be rebuilt from what is intact."""

    def __init__(self, directory: Path | str, what: str) -> None:
        self.what = what
        super().__init__(
            f"knowledge base {directory} is damaged: {what}. See what can be rebuilt with "
            f"`rag check --repair --kb {directory}`"
        )


class ManifestMismatchError(KnowledgeBaseError):
    """The knowledge base was built with settings that disagree with the configuration."""


class IngestEngineError(RagError):
    """A distributed ingestion engine (Ray) failed as a whole; what was committed before is kept."""


class ModelLoadError(RagError):
    """A model could not be loaded (not installed, not downloadable offline, wrong format)."""


class DocumentLoadError(RagError):
    """One input file could not be turned into pages.

    ``reason`` is a short, one-line, human-readable explanation ("encrypted: a password is
    required", "not a PDF file"); the ingestion job reports it beside ``path`` and goes on
    with the next file.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class QuestionTooLongError(RagError):
    """The question alone does not fit the generator's context."""


class GeneratorUnavailableError(RagError):
    """The model server is down, still starting, or answered with an error."""


def first_line(exc: BaseException) -> str:
    """An exception's first line of message for an error that wraps it (its type when it has none).

    Libraries raise multi-line messages (tracebacks of a child process, whole HTTP bodies); the
    first line is the one that says what happened.
    """
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
