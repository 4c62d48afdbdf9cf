"""How an evaluation run reports progress: a bar with ETA on a terminal, plain lines elsewhere.

A run has stages ("retrieve", "generate"), each counted in questions. Generation advances one
generator call at a time (``eval.generation_batch`` questions), since vLLM answers a batch at once.
"""

from __future__ import annotations

import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class EvalReporter(Protocol):
    def stage(self, name: str, total: int) -> None:
        """A stage starts, with ``total`` questions to go through."""
        ...

    def advance(self, done: int) -> None:
        """``done`` more questions went through the current stage."""
        ...

    def message(self, text: str) -> None: ...

    def finish(self) -> None: ...


class NullEvalReporter:
    """Reports nothing (library use, tests)."""

    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, done: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


class LineEvalReporter:
    """Plain lines for logs and pipes: one per advance, with the rate and an ETA."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._name, self._total, self._done, self._started = "", 0, 0, time.monotonic()

    def stage(self, name: str, total: int) -> None:
        self._name, self._total, self._done, self._started = name, total, 0, time.monotonic()
        self._write(f"{name}: {total} questions")

    def advance(self, done: int) -> None:
        self._done += done
        elapsed = time.monotonic() - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {(self._total - self._done) / rate:.0f} s" if rate > 0 and self._done < self._total else ""
        self._write(f"{self._name}: {self._done}/{self._total} ({rate * 60:.1f} questions/min{eta})")

    def message(self, text: str) -> None:
        self._write(text)

    def finish(self) -> None:
        pass

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


class RichEvalReporter:
    """A live bar per stage with counts, elapsed time and ETA, on standard error's console."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: TaskID | None = None
        self._started = False

    def stage(self, name: str, total: int) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._task = self._progress.add_task(name, total=max(total, 1))

    def advance(self, done: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, done)

    def message(self, text: str) -> None:
        self._console.print(text, highlight=False, markup=False)

    def finish(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False
