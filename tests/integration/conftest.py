"""Fixtures shared by the integration tests: the real default generator, and one vLLM server
for the whole session (it takes about a minute to start on a CPU), stopped at the end."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.config import AppConfig, load_config
from rag.models import resolve_generator_location
from rag.server import ModelServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def model_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Configuration overrides naming the provisioned default generator (by path, so no hub is
    asked), a data directory of the session's own and a free port for its server."""
    location = resolve_generator_location(load_config(environ={}))  # provisioned by `make install`
    return {
        "data_dir": tmp_path_factory.mktemp("model") / "data",
        "generator.model": location,
        "generator.max_answer_tokens": 64,
        "generator.port": free_port(),
        "generator.startup_timeout_s": 400,
    }


def config_for(kb_dir: Path, model_settings: dict[str, Any], **more: Any) -> AppConfig:
    return load_config(environ={}, overrides={"kb_dir": kb_dir, **model_settings, **more})


def cli_settings(config: AppConfig) -> list[str]:
    """The same configuration as ``rag`` command-line flags."""
    flags = [
        "--kb", str(config.kb_dir), "--set", f"data_dir={config.data_dir}",
        "--set", f"generator.model={config.generator.model}", "--set", f"generator.port={config.generator.port}",
        "--set", f"generator.max_answer_tokens={config.generator.max_answer_tokens}",
        "--set", f"retrieval.top_k={config.retrieval.top_k}",
        "--set", f"answer.citations={config.answer.citations}",
    ]  # fmt: skip
    if config.generator.base_url is not None:
        flags += ["--set", f"generator.base_url={config.generator.base_url}"]
    return flags


@pytest.fixture(scope="session")
def model_server(model_settings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppConfig]:
    """One healthy vLLM OpenAI-compatible server for the session; confirmed gone afterwards."""
    config = config_for(tmp_path_factory.mktemp("unused-kb"), model_settings)
    server = ModelServer(config)
    status = server.start(wait=True)
    assert status.healthy
    yield config
    assert server.stop()
    assert not server.status().running
