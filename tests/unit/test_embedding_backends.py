"""The embedding model run by ONNX Runtime and OpenVINO (``embedding.backend``), and the rule that
decides which vectors may share an index.

The exports are of the real packaged all-MiniLM-L6-v2 (an ONNX export takes seconds), and their
vectors are compared with torch's: that they agree is what lets a knowledge base embedded with one
float32 backend be searched with another.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rag.components import Components
from rag.config import EmbeddingConfig
from rag.embedder import SentenceTransformerEmbedder
from rag.errors import ManifestMismatchError
from rag.manifest import Manifest, embedding_settings, vector_kind
from rag.models import provision_folder

SENTENCES = [
    "Full-time employees receive 28 days of paid vacation per calendar year.",
    "Revenue",
    "What was the company's operating margin in fiscal 2022, and how did it change from the year before? " * 6,
    "Der Vertrag kann mit einer Frist von drei Monaten gekündigt werden.",
]


# -- which vectors share an index ---------------------------------------------------------------


def _manifest(**fields: Any) -> Manifest:
    base = {
        "format_version": 1,
        "embedding_model": "m",
        "dimension": 384,
        "chunk_tokens": 200,
        "overlap_tokens": 32,
        "index_kind": "flat",
        "index_structure": "flat",
    }
    return Manifest.model_validate(base | fields)


@pytest.mark.parametrize(
    ("built", "wanted", "shared"),
    [
        (("torch", "none"), ("onnx", "none"), True),
        (("onnx", "none"), ("openvino", "none"), True),
        (("openvino", "none"), ("torch", "none"), True),
        (("onnx", "int8"), ("onnx", "int8"), True),
        (("onnx", "int8"), ("openvino", "int8"), False),
        (("onnx", "int8"), ("onnx", "none"), False),
        (("torch", "none"), ("openvino", "int8"), False),
    ],
)
def test_float32_vectors_share_an_index_and_int8_only_with_its_own_backend(
    built: tuple[str, str], wanted: tuple[str, str], shared: bool
) -> None:
    manifest = _manifest(embedding_backend=built[0], embedding_quantization=built[1])
    embedding = EmbeddingConfig(model="m", backend=wanted[0], quantization=wanted[1])  # type: ignore[arg-type]
    if shared:
        manifest.check_embedding(embedding, Path("kb"))
    else:
        with pytest.raises(ManifestMismatchError, match=r"do not share an index.*rag ingest PATH --reindex --kb kb"):
            manifest.check_embedding(embedding, Path("kb"))


def test_a_manifest_without_the_fields_was_embedded_with_torch_float32() -> None:
    manifest = _manifest()
    assert (manifest.embedding_backend, manifest.embedding_quantization) == ("torch", "none")
    assert vector_kind(manifest.embedding_backend, manifest.embedding_quantization) == "float32"


def test_cache_keys_and_resume_checks_change_only_for_int8() -> None:
    assert embedding_settings(EmbeddingConfig(backend="openvino")) == {"embedding_model": EmbeddingConfig().model}
    assert embedding_settings(EmbeddingConfig(backend="onnx", quantization="int8"))["embedding_vectors"] == "onnx int8"


# -- provisioning a folder once ----------------------------------------------------------------


def test_a_folder_is_provisioned_once_whole_and_reused(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "model.onnx").write_text("graph")

    target = tmp_path / "exports" / "onnx"
    assert provision_folder(target, build) == target
    assert provision_folder(target, build) == target
    assert len(calls) == 1 and (target / "model.onnx").read_text() == "graph"
    assert sorted(p.name for p in target.parent.iterdir()) == ["onnx"]  # no staging folder left


def test_a_failed_build_leaves_nothing_and_the_next_call_starts_over(tmp_path: Path) -> None:
    target = tmp_path / "onnx"

    def broken(staging: Path) -> None:
        (staging / "model.onnx").write_text("half")
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        provision_folder(target, broken)
    assert list(tmp_path.iterdir()) == []
    provision_folder(target, lambda staging: (staging / "model.onnx").write_text("whole"))
    assert (target / "model.onnx").read_text() == "whole"


def test_of_two_concurrent_provisionings_the_first_rename_wins(tmp_path: Path) -> None:
    target = tmp_path / "onnx"

    def slow(staging: Path) -> None:
        (staging / "model.onnx").write_text("second")
        # Another process finishes first, while this one is still building.
        provision_folder(target, lambda other: (other / "model.onnx").write_text("first"))

    assert provision_folder(target, slow) == target
    assert (target / "model.onnx").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]


def test_staging_left_by_a_dead_process_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / ".onnx.partial-999999999-abc"  # no such process
    live = tmp_path / f".onnx.partial-{os.getpid()}-def"  # a concurrent provisioning in this process
    dead.mkdir()
    live.mkdir()
    provision_folder(tmp_path / "onnx", lambda staging: None)
    assert not dead.exists() and live.exists()


# -- the embedder with an export ---------------------------------------------------------------


def test_a_backend_other_than_torch_needs_the_data_dir() -> None:
    with pytest.raises(ValueError, match="data_dir"):
        SentenceTransformerEmbedder(EmbeddingConfig(backend="onnx"))


def test_on_a_gpu_a_float32_backend_runs_with_torch_and_int8_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attached: list[tuple[str, str]] = []

    def attach_export(model: Any, model_id: str, backend: str, quantization: str, data_dir: Path) -> Path:
        attached.append((backend, model.device.type))
        return data_dir

    monkeypatch.setattr("rag.embedding_exports.attach_export", attach_export)

    class OnGpu:
        device = SimpleNamespace(type="cuda")

        def to(self, device: str) -> None:
            self.device = SimpleNamespace(type=device)

    onnx = SentenceTransformerEmbedder(EmbeddingConfig(backend="onnx"), data_dir=tmp_path)
    onnx._attach_export(OnGpu())  # type: ignore[arg-type]
    assert attached == []  # same float32 vectors, faster on the GPU with torch
    int8 = SentenceTransformerEmbedder(EmbeddingConfig(backend="onnx", quantization="int8"), data_dir=tmp_path)
    int8._attach_export(OnGpu())  # type: ignore[arg-type]
    assert attached == [("onnx", "cpu")]  # moved to the CPU: torch cannot make int8 vectors


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the tests below: the ONNX export the first makes, the others derive from."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def torch_vectors(real_embedder: SentenceTransformerEmbedder) -> tuple[np.ndarray, np.ndarray]:
    return real_embedder.embed_documents(SENTENCES), real_embedder.embed_queries(SENTENCES)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_the_float32_export_is_made_once_and_gives_torchs_vectors(
    backend: str, make_config: Any, data_dir: Path, torch_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    pytest.importorskip("onnxruntime" if backend == "onnx" else "openvino")
    config = make_config(data_dir=data_dir, embedding__backend=backend)
    first = Components(config).embedder()
    [export] = (data_dir / "models" / "embedding-exports").iterdir()
    assert export.name.startswith("all-MiniLM-L6-v2-")
    graph = export / backend / ("model.onnx" if backend == "onnx" else "model.xml")
    made = graph.stat()

    second = Components(config).embedder()  # reuses the export
    assert (graph.stat().st_ino, graph.stat().st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    assert not [p for p in export.iterdir() if p.name.startswith(".")]  # no staging left
    documents, queries = torch_vectors
    for embedder in (first, second):
        assert embedder.dimension == 384 and embedder.tokenizer.max_tokens == 252
        for mine, theirs in (
            (embedder.embed_documents(SENTENCES), documents),
            (embedder.embed_queries(SENTENCES), queries),
        ):
            assert mine.dtype == np.float32 and mine.shape == theirs.shape
            assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
            cosines = (mine * theirs).sum(axis=1)
            assert cosines.min() > 0.999, cosines
    # One text alone (no padding) gives what it gives in a batch.
    alone = first.embed_documents(SENTENCES[:1])
    assert float((alone[0] * documents[0]).sum()) > 0.999


def test_the_int8_onnx_export_is_its_own_file_and_stays_near_torch(
    make_config: Any, data_dir: Path, torch_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    pytest.importorskip("onnxruntime")
    config = make_config(data_dir=data_dir, embedding__backend="onnx", embedding__quantization="int8")
    embedder = Components(config).embedder()
    [export] = (data_dir / "models" / "embedding-exports").iterdir()
    quantized, full = export / "onnx-int8" / "model.onnx", export / "onnx" / "model.onnx"
    assert quantized.stat().st_size < full.stat().st_size / 3  # int8 weights
    cosines = (embedder.embed_documents(SENTENCES) * torch_vectors[0]).sum(axis=1)
    assert cosines.min() > 0.95 and cosines.max() < 0.9999, cosines  # near, but not the same vectors
