"""Failure modes of answering that a user meets, each with a clear message and no traceback."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from rag.components import Components
from rag.errors import GeneratorUnavailableError, ModelLoadError, first_line
from rag.files import write_text_atomic
from rag.models import resolve_generator_location
from rag.prompt import HuggingFaceChatTokenizer, Prompt
from ui.cli import main


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_server_down_is_reported_with_what_to_check(make_config: Any) -> None:
    generator = Components(make_config(generator__port=_closed_port())).server_generator()
    prompt = Prompt("q", ({"role": "user", "content": "q"},), "q", 1, (), 0)
    with pytest.raises(GeneratorUnavailableError, match="rag model status"):
        list(generator.stream(prompt))


@pytest.mark.integration  # the hub client retries with backoff for about a minute before it gives up
def test_model_that_cannot_load_offline_names_the_fix() -> None:
    with pytest.raises(ModelLoadError, match="local folder"):
        HuggingFaceChatTokenizer("no-such-org/no-such-model-anywhere")


def test_unprovisioned_default_generator_says_how_to_provision(make_config: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="make install"):
        resolve_generator_location(make_config(data_dir=tmp_path / "empty"))


def test_ask_without_a_knowledge_base_says_which_ingest_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["ask", "anything?", "--kb", str(tmp_path / "kb")])
    assert code == 1
    assert f"rag ingest PATH --kb {tmp_path / 'kb'}" in capsys.readouterr().err


def test_a_wrapped_error_keeps_the_first_line_or_the_type() -> None:
    assert first_line(RuntimeError("model not found\nTraceback (most recent call last): ...")) == "model not found"
    assert first_line(RuntimeError("")) == "RuntimeError"  # an empty message used to raise IndexError
    assert first_line(OSError("\n  disk full\n")) == "disk full"


def test_an_atomic_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second, longer content")
    assert target.read_text() == "second, longer content"
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.json"]
