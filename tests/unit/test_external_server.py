"""``generator.base_url``: the model served elsewhere (a router in front of replicas, vLLM with data
parallelism, Ray Serve LLM). The clients use that URL with the key, and no command starts or stops
a local server for it. The "elsewhere" here is the recording OpenAI-compatible fake on loopback."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rag import server as server_module
from rag.components import Components
from rag.config import AppConfig
from rag.errors import ConfigError, GeneratorUnavailableError
from rag.generator import ServerGenerator
from rag.prompt import Prompt
from rag.server import ExternalModelServer, ModelServer
from tests.evalkit import VACATION, build_kb, eval_config
from tests.fakes import FakeComponents
from tests.openai_server import RecordingChatServer
from ui import serve as serve_module
from ui.cli import main
from ui.serve import serve
from ui.service import server_readiness

KEY = "r0uter-key"
PROMPT = Prompt("q", ({"role": "user", "content": "q"},), "q", 1, (), 0)


@pytest.fixture
def endpoint() -> Iterator[RecordingChatServer]:
    with RecordingChatServer(["Full-time employees receive 28 days [1]."]) as server:
        yield server


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """No local model server may be started, stopped or probed: a test fails if one is."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no local model server may be started, stopped or probed")

    for method in ("start", "stop", "status", "wait_until_healthy"):
        monkeypatch.setattr(ModelServer, method, forbidden)
    monkeypatch.setattr(server_module, "is_healthy", forbidden)
    monkeypatch.setattr(server_module, "server_command", forbidden)


def test_the_client_is_built_with_the_base_url_and_sends_the_key(
    make_config: Any, endpoint: RecordingChatServer, nothing_starts: None
) -> None:
    # host and port name a local server that is not there: only base_url may be used.
    config: AppConfig = make_config(
        generator__base_url=f"http://127.0.0.1:{endpoint.port}", generator__port=1, generator__api_key=KEY
    )
    components = Components(config)
    assert components.server_url() == endpoint.base_url == f"http://127.0.0.1:{endpoint.port}/v1"
    generator = components.server_generator()
    assert isinstance(generator, ServerGenerator) and generator.model_id == config.generator.model
    assert generator.generate([PROMPT])[0].text == "Full-time employees receive 28 days [1]."
    assert endpoint.seen == [("/v1/chat/completions", f"Bearer {KEY}")]
    assert endpoint.bodies[0]["model"] == config.generator.model


def test_without_a_base_url_the_client_uses_host_and_port(make_config: Any) -> None:
    components = Components(make_config(generator__host="127.0.0.3", generator__port=8124))
    assert components.server_url() == "http://127.0.0.3:8124/v1"
    assert isinstance(components.model_server(), ModelServer) and components.model_server().managed


def test_the_external_server_is_watched_never_started_or_stopped(
    make_config: Any, endpoint: RecordingChatServer, nothing_starts: None
) -> None:
    config: AppConfig = make_config(generator__base_url=endpoint.base_url, generator__api_key=KEY)
    server = Components(config).model_server()
    assert isinstance(server, ExternalModelServer) and not server.managed
    status = server.start(wait=True)
    assert status.healthy and status.state is None
    assert status.describe() == f"healthy: {endpoint.base_url} (generator.base_url; rag neither starts nor stops it)"
    assert endpoint.seen[-1] == ("/v1/models", f"Bearer {KEY}"), "checked where every OpenAI-compatible API answers"
    with pytest.raises(ConfigError, match="does not stop it"):
        server.stop()
    with pytest.raises(ConfigError, match="starts no server"):
        server.start(port=8001)
    assert not (config.data_dir / "server.json").exists()


def test_an_external_server_that_does_not_answer_fails_at_once(make_config: Any, nothing_starts: None) -> None:
    config: AppConfig = make_config(generator__base_url="http://127.0.0.1:1/v1", generator__startup_timeout_s=600)
    server = Components(config).model_server()
    assert not server.status().healthy
    assert "not answering: http://127.0.0.1:1/v1" in server.status().describe()
    with pytest.raises(GeneratorUnavailableError, match=r"http://127.0.0.1:1/v1 \(generator\.base_url\) does not"):
        server.start(wait=True)  # no waiting out startup_timeout_s: nothing here could make it answer
    message = server_readiness(Components(config))
    assert message is not None and "http://127.0.0.1:1/v1 (generator.base_url) does not answer" in message


@pytest.fixture
def ask_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: RecordingChatServer) -> list[str]:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("RAG_")]:
        monkeypatch.delenv(name)
    build_kb(tmp_path, eval_config(tmp_path))
    return [
        "--kb", str(tmp_path / "kb"), "--set", "embedding.model=fake/hashing-64",
        "--set", f"data_dir={tmp_path / 'data'}", "--set", f"generator.base_url={endpoint.base_url}",
        "--set", f"generator.api_key={KEY}", "--set", "generator.port=1",
    ]  # fmt: skip


def _real_client(config: AppConfig) -> FakeComponents:
    """Fake models, and the real server client, as `rag ask` builds it."""
    return FakeComponents(config, server_generator=lambda each: Components(each).server_generator())


def test_rag_ask_sends_the_question_to_the_base_url_and_starts_no_server(
    tmp_path: Path,
    ask_flags: list[str],
    endpoint: RecordingChatServer,
    nothing_starts: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ask", VACATION, "--json", *ask_flags], components=_real_client) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["answer"].startswith("Full-time employees receive 28 days")
    assert [path for path, _ in endpoint.seen] == ["/v1/models", "/v1/chat/completions"]
    assert {key for _, key in endpoint.seen} == {f"Bearer {KEY}"}
    assert not (tmp_path / "data" / "server.json").exists(), "no local server was started"


def test_rag_model_start_status_and_stop_with_a_base_url(
    ask_flags: list[str], endpoint: RecordingChatServer, nothing_starts: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "status", *ask_flags]) == 0
    assert f"healthy: {endpoint.base_url}" in capsys.readouterr().out
    assert main(["model", "start", *ask_flags]) == 0, "starting an endpoint that answers is a no-op"
    assert "rag neither starts nor stops it" in capsys.readouterr().out
    assert main(["model", "stop", *ask_flags]) == 1
    assert "does not stop it" in capsys.readouterr().err
    endpoint.httpd.shutdown()
    endpoint.httpd.server_close()  # refused at once, as a stopped server's port is
    assert main(["model", "status", *ask_flags]) == 2


def test_rag_serve_with_a_base_url_neither_starts_nor_stops_a_server(
    monkeypatch: pytest.MonkeyPatch, make_config: Any, endpoint: RecordingChatServer, nothing_starts: None
) -> None:
    config: AppConfig = make_config(generator__base_url=endpoint.base_url)
    monkeypatch.setattr(serve_module, "streamlit_command", lambda *args: [sys.executable, "-c", "pass"])
    out = io.StringIO()
    assert serve(config, Components(config).model_server(), "127.0.0.1", 8599, [], Console(file=out)) == 0
    assert f"model server: healthy: {endpoint.base_url}" in out.getvalue()
    assert "Ctrl-C stops the page\n" in out.getvalue()
    assert "starting" not in out.getvalue() and "stopping" not in out.getvalue()
