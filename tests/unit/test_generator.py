"""The generators' bookkeeping: the server's token count, vLLM's environment set before it starts."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from rag import generator as generator_module
from rag.config import AppConfig, vllm_environment
from rag.generator import ServerGenerator, VllmGenerator
from rag.prompt import Prompt
from tests.openai_server import RecordingChatServer

PROMPT = Prompt("q", ({"role": "user", "content": "q"},), "q", 1, (), 0)


@pytest.fixture
def chat_server() -> Iterator[RecordingChatServer]:
    # Three pieces the server says took eleven tokens: the count must be the server's.
    with RecordingChatServer(["The answer ", "is ", "42 [1]."], completion_tokens=11) as server:
        yield server


def test_a_served_generation_counts_the_servers_tokens_not_its_chunks(
    make_config: Any, chat_server: RecordingChatServer
) -> None:
    generation = ServerGenerator(make_config(), chat_server.base_url).generate([PROMPT])[0]
    assert generation.text == "The answer is 42 [1]."
    assert generation.completion_tokens == 11
    assert generation.finish_reason == "stop"
    assert chat_server.bodies[0]["stream_options"] == {"include_usage": True}


def test_streaming_yields_the_text_only(make_config: Any, chat_server: RecordingChatServer) -> None:
    assert list(ServerGenerator(make_config(), chat_server.base_url).stream(PROMPT)) == [
        "The answer ",
        "is ",
        "42 [1].",
    ]


def test_a_server_that_reports_no_usage_gives_no_count(make_config: Any) -> None:
    with RecordingChatServer(["Yes."], reports_usage=False) as server:
        generation = ServerGenerator(make_config(), server.base_url).generate([PROMPT])[0]
    assert generation.text == "Yes." and generation.completion_tokens is None, "a chunk count would be a guess"


def test_in_process_vllm_finds_its_environment_set_when_it_is_imported(
    make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config: AppConfig = make_config(generator__log_level="ERROR", generator__kv_cache_gib=3)
    expected = vllm_environment(config, cpu=True)
    for name in expected:
        monkeypatch.delenv(name, raising=False)  # and restored after the test
    seen: dict[str, str] = {}

    class FakeLLM:
        def __init__(self, **kwargs: Any) -> None:
            seen.update({name: os.environ[name] for name in expected})

    fake_vllm = types.ModuleType("vllm")
    fake_vllm.LLM = FakeLLM  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setattr(generator_module, "has_cuda", lambda: False)
    VllmGenerator(config, "/models/m").load()
    assert seen == expected
    assert seen["VLLM_LOGGING_LEVEL"] == "ERROR" and seen["VLLM_CPU_KVCACHE_SPACE"] == "3"
