"""Generators behind one Protocol: vLLM in-process (batched) and vLLM's OpenAI-compatible server.

- :class:`VllmGenerator` runs ``vllm.LLM`` in this process and takes all prompts in one call:
  paged attention batches them, which is what makes evaluation and ``rag ask --batch`` fast.
  vLLM starts its engine in a spawned process, so a script that builds one needs the
  ``if __name__ == "__main__":`` guard.
- :class:`ServerGenerator` talks to a running server through LangChain's ``ChatOpenAI`` and
  streams tokens: the web page and ``rag ask`` use it.

Both take prompts built by :class:`rag.prompt.PromptBuilder`, already sized to the context.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rag.config import AppConfig, export_vllm_environment
from rag.errors import GeneratorUnavailableError, ModelLoadError, first_line
from rag.prompt import Prompt

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessageChunk
    from pydantic import SecretStr


@dataclass(frozen=True, slots=True)
class Generation:
    """One answer. ``completion_tokens`` is the model's own count of the tokens it generated;
    ``None`` when a server did not report it."""

    text: str
    completion_tokens: int | None
    finish_reason: str | None
    seconds: float


class Generator(Protocol):
    @property
    def model_id(self) -> str: ...

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        """One generation per prompt, in order."""
        ...

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """The answer to one prompt, piece by piece as it is produced."""
        ...


class EngineGenerator(Generator, Protocol):
    """A generator whose engine runs in this process: :meth:`load` starts it (the caller picks
    when: a minute on a CPU) and :meth:`close` stops it (an idle CPU engine still spins)."""

    def load(self) -> None: ...

    def close(self) -> None: ...


def engine_settings(config: AppConfig, has_gpu: bool) -> dict[str, Any]:
    """vLLM engine arguments for this machine: float32 and eager on a CPU (PLATFORM.md)."""
    generator = config.generator
    settings: dict[str, Any] = {
        "dtype": generator.dtype if generator.dtype != "auto" else ("auto" if has_gpu else "float32"),
        "enforce_eager": generator.enforce_eager if generator.enforce_eager is not None else not has_gpu,
        "max_model_len": generator.max_model_len,
        "enable_prefix_caching": generator.prefix_caching,
    }
    if has_gpu:
        settings["gpu_memory_utilization"] = generator.gpu_memory_utilization
    return settings


def sampling_settings(config: AppConfig) -> dict[str, Any]:
    """vLLM sampling arguments shared by both generators.

    ``repetition_penalty`` is configurable but off by default (``answer.repetition_penalty``
    says why): what stops a looping answer is the grammar's sentence bound and the citer's
    removal of repeated sentences.
    """
    return {
        "temperature": config.generator.temperature,
        "max_tokens": config.generator.max_answer_tokens,
        "repetition_penalty": config.answer.repetition_penalty,
    }


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class VllmGenerator:
    """``vllm.LLM`` in this process. Cheap to build; :meth:`load` starts the engine (about 50 s on a CPU)."""

    def __init__(self, config: AppConfig, location: str) -> None:
        self._config = config
        self._location = location
        self._llm: Any = None

    @property
    def model_id(self) -> str:
        return self._config.generator.model

    def load(self) -> None:
        if self._llm is not None:
            return
        gpu = has_cuda()
        export_vllm_environment(self._config, cpu=not gpu)  # before vLLM is imported
        from vllm import LLM

        try:
            self._llm = LLM(model=self._location, served_model_name=self.model_id, **engine_settings(self._config, gpu))
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot load"
            raise ModelLoadError(f"vLLM cannot load {self._location!r}: {first_line(exc)}") from None

    def close(self) -> None:
        """Stop the engine process. An idle CPU engine still spins its OpenMP threads, so a
        process that goes on after its batch should close it."""
        if self._llm is None:
            return
        engine_core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        self._llm = None

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        if self._llm is None:
            raise RuntimeError("call load() before generating")
        params = [self._sampling(prompt) for prompt in prompts]
        started = time.perf_counter()
        outputs = self._llm.generate([p.text for p in prompts], params, use_tqdm=False)
        seconds = time.perf_counter() - started
        return [
            Generation(out.outputs[0].text, len(out.outputs[0].token_ids), out.outputs[0].finish_reason, seconds)
            for out in outputs
        ]

    def _sampling(self, prompt: Prompt) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            **sampling_settings(self._config),
            structured_outputs=StructuredOutputsParams(regex=prompt.constraint) if prompt.constraint else None,
        )

    def stream(self, prompt: Prompt) -> Iterator[str]:
        # The offline engine returns whole answers; one piece is the honest stream.
        yield self.generate([prompt])[0].text


def bearer_key(key: SecretStr | None) -> str:
    """The key an OpenAI client sends as ``Authorization: Bearer <key>``.

    Without one, a placeholder: the client requires a key (and would otherwise read
    ``OPENAI_API_KEY`` itself, behind the configuration's back), and a server run without a
    key, such as vLLM on loopback, ignores the header.
    """
    return key.get_secret_value() if key is not None else "unused"


class ServerGenerator:
    """A client of vLLM's OpenAI-compatible server (``rag model start``), through LangChain."""

    def __init__(self, config: AppConfig, base_url: str) -> None:
        from langchain_openai import ChatOpenAI

        self._config = config
        self._chat = ChatOpenAI(
            model=config.generator.model,
            base_url=base_url,
            api_key=bearer_key(config.generator.api_key),
            temperature=config.generator.temperature,
            max_completion_tokens=config.generator.max_answer_tokens,
            timeout=config.generator.request_timeout_s,
            max_retries=0,
            # The last chunk carries the server's usage (stream_options.include_usage), which
            # counts tokens; LangChain asks for it by default only from OpenAI's own address.
            stream_usage=True,
        )

    @property
    def model_id(self) -> str:
        return self._config.generator.model

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        return [self._one(prompt) for prompt in prompts]

    def _one(self, prompt: Prompt) -> Generation:
        from langchain_core.messages import AIMessageChunk

        started = time.perf_counter()
        pieces: list[str] = []
        tokens: int | None = None
        finish_reason: str | None = None
        for chunk in self._chunks(prompt):
            if isinstance(chunk.content, str):
                pieces.append(chunk.content)
            if isinstance(chunk, AIMessageChunk) and chunk.usage_metadata is not None:
                tokens = chunk.usage_metadata["output_tokens"]
            finish_reason = chunk.response_metadata.get("finish_reason", finish_reason)
        return Generation("".join(pieces), tokens, finish_reason, time.perf_counter() - started)

    def stream(self, prompt: Prompt) -> Iterator[str]:
        for chunk in self._chunks(prompt):
            if isinstance(chunk.content, str) and chunk.content:
                yield chunk.content

    def _chunks(self, prompt: Prompt) -> Iterator[BaseMessageChunk]:
        """The server's reply as LangChain chunks: text pieces, then one with the usage."""
        # vLLM's own request fields go in the body beside OpenAI's: the regex of the structured
        # outputs (the server enforces it while streaming) and the repetition penalty.
        body: dict[str, Any] = {"repetition_penalty": self._config.answer.repetition_penalty}
        if prompt.constraint:
            body["structured_outputs"] = {"regex": prompt.constraint}
        try:
            yield from self._chat.stream(list(prompt.messages), extra_body=body)
        except Exception as exc:  # noqa: BLE001 - the client raises many transport types
            raise GeneratorUnavailableError(
                f"the model server did not answer ({type(exc).__name__}: {first_line(exc)}); "
                "check it with `rag model status`"
            ) from None
