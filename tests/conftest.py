"""Shared fixtures. Every test runs with the network blocked but for loopback, so a test that
passes here passes on a machine with no model hub."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.config import AppConfig, load_config

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
        return _real_connect(self, address)
    raise OSError(f"network access blocked in tests: {address!r}")


@pytest.fixture(autouse=True)
def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Streamlit's AppTest installs its script as ``__main__`` and leaves it there; processes
    spawned later (the ingest job's loader workers, vLLM's engine) re-run ``__main__``, so the
    real one is put back after every test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def make_config(tmp_path: Path) -> Any:
    """Build an ``AppConfig`` for a knowledge base in ``tmp_path/kb``, with dotted overrides."""

    def build(**overrides: Any) -> AppConfig:
        values = {"kb_dir": tmp_path / "kb", **{k.replace("__", "."): v for k, v in overrides.items()}}
        return load_config(overrides=values, environ={})

    return build


@pytest.fixture(scope="session")
def real_embedder() -> Iterator[Any]:
    """The packaged all-MiniLM-L6-v2, loaded once per test session."""
    from rag.config import EmbeddingConfig
    from rag.embedder import SentenceTransformerEmbedder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _loopback_only)
        embedder = SentenceTransformerEmbedder(EmbeddingConfig())
        embedder.load()
    yield embedder
