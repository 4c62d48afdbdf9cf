"""Generation on replicas: two real vLLM servers behind vllm-router, reached through
``generator.base_url`` by the product's own client (``rag ask`` and the pipeline's server client).

The first backend is the session's model server (``model_server``); the second is started here at
the same time, with the smallest KV cache vLLM takes (1 GiB). The router sends requests round
robin, so two questions must reach both, which their own ``/metrics`` counters show. Nothing may
start a local server for the router's URL: ``rag ask`` runs with a data directory of its own that
must stay without one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingest.job import run_ingest
from rag.components import Components
from rag.config import AppConfig
from rag.pipeline import build_pipeline
from rag.server import ModelServer
from tests.integration.cli import REPO, rag
from tests.integration.conftest import cli_settings, config_for, free_port

pytestmark = pytest.mark.integration

QUESTIONS = [
    "In which city is the company's headquarters located?",
    "What is the daily meal allowance on business trips?",
]


@dataclass(frozen=True)
class Replicas:
    config: AppConfig  # generator.base_url is the router's; data_dir has no server of its own
    backends: tuple[str, str]  # the two vLLM servers, http://127.0.0.1:PORT
    router_log: Path


def served_requests(backend: str) -> float:
    """Requests the vLLM server at ``backend`` has finished, whatever their finish reason."""
    with urllib.request.urlopen(f"{backend}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total{")
    )


def _start_router(backends: tuple[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "vllm_router.launch_router",
        "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *backends,
        "--policy", "round_robin",  # deterministic: two requests in a row go to both backends
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
        "--worker-startup-check-interval", "1",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def replicas(
    request: pytest.FixtureRequest,
    model_settings: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    real_embedder: Any,
) -> Iterator[Replicas]:
    """The session's model server and a second one started beside it, vllm-router in front, and a
    knowledge base of the samples; the second server and the router are stopped afterwards."""
    root = tmp_path_factory.mktemp("replicas")
    second = ModelServer(
        config_for(
            root / "unused-kb",
            model_settings,
            data_dir=root / "second",
            **{"generator.port": free_port(), "generator.kv_cache_gib": 1},
        )
    )
    second.start(wait=False)  # loads while the session's server starts (or is already up)
    router: subprocess.Popen[bytes] | None = None
    try:
        first: AppConfig = request.getfixturevalue("model_server")
        status = second.wait_until_healthy()
        assert status.state is not None
        backends = (f"http://127.0.0.1:{first.generator.port}", f"http://127.0.0.1:{status.state.port}")
        port, log = free_port(), root / "router.log"
        router = _start_router(backends, port, log)
        config = config_for(
            root / "kb",
            model_settings,
            data_dir=root / "client",
            **{"generator.base_url": f"http://127.0.0.1:{port}", "answer.citations": "constrained"},
        )
        external = Components(config).model_server()
        deadline = time.monotonic() + 60
        while not external.status().healthy:
            assert router.poll() is None, f"vllm-router exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"vllm-router not answering after 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        run_ingest([REPO / "samples"], config, real_embedder)
        yield Replicas(config, backends, log)
    finally:
        if router is not None:
            router.terminate()
            router.wait(timeout=30)
        second.stop()


def test_questions_through_the_router_reach_both_replicas(replicas: Replicas, real_embedder: Any) -> None:
    config = replicas.config
    assert config.generator.base_url is not None and config.generator.base_url.endswith("/v1")
    before = [served_requests(backend) for backend in replicas.backends]

    # `rag ask`, as a user runs it: the question goes to the router; no server is started for it.
    result = rag("ask", QUESTIONS[0], "--json", *cli_settings(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (config.data_dir / "server.json").exists(), "rag started a server of its own"
    record = json.loads(result.stdout)
    assert record["model"] == config.generator.model and record["answer"].strip()
    assert record["retrieved"], "passages were retrieved"

    # The pipeline in this process, with the same client `rag ask` builds.
    pipeline = build_pipeline(config, Components(config).server_generator(), embedder=real_embedder)
    answer = pipeline.answer(QUESTIONS[1])
    assert answer.raw_output.strip() and answer.timings["completion_tokens"] > 0

    after = [served_requests(backend) for backend in replicas.backends]
    served = [now - then for now, then in zip(after, before, strict=True)]
    assert all(count >= 1 for count in served), (
        f"requests served per replica {served}; router log:\n{replicas.router_log.read_text()[-3000:]}"
    )
    assert sum(served) == 2, served
