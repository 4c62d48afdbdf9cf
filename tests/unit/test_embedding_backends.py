"""The embedding model run by ONNX Runtime and OpenVINO (``embedding.backend``), and the rule that
decides which vectors may share an index.

The exports are of the real packaged all-MiniLM-L6-v2 (an ONNX export takes seconds), and their
vectors are compared with torch's: that they agree is what lets a knowledge base embedded with one
float32 backend be searched with another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rag.config import EmbeddingConfig
from rag.embedder import SentenceTransformerEmbedder, resolve_precision
from rag.errors import ManifestMismatchError
from rag.manifest import Manifest, embedding_settings, vector_kind
from rag.models import provision_folder

REPO_ROOT = Path(__file__).resolve().parents[2]

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

    def attach_export(
        model: Any, model_id: str, backend: str, quantization: str, data_dir: Path, *, bfloat16: bool
    ) -> Path:
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


# -- what the model computes in (embedding.precision) ---------------------------------------------


def test_bfloat16_needs_a_runtime_that_has_it() -> None:
    with pytest.raises(ValueError, match="precision 'bfloat16' needs backend 'torch' or 'openvino'"):
        EmbeddingConfig(backend="onnx", precision="bfloat16")
    assert EmbeddingConfig(backend="openvino", quantization="int8", precision="bfloat16").precision == "bfloat16"


@pytest.mark.parametrize(
    ("precision", "backend", "device", "has_bfloat16", "expected"),
    [
        ("auto", "torch", "cpu", True, "bfloat16"),
        ("auto", "openvino", "cpu", True, "bfloat16"),
        ("auto", "torch", "cpu", False, "float32"),  # emulated bfloat16 is no faster
        ("auto", "onnx", "cpu", True, "float32"),  # ONNX Runtime's CPU kernels are float32
        ("auto", "torch", "cuda", True, "float32"),  # not measured on a GPU yet
        ("float32", "torch", "cpu", True, "float32"),
        ("bfloat16", "torch", "cpu", False, "bfloat16"),  # asked for: honoured
        ("bfloat16", "torch", "cuda", False, "bfloat16"),
    ],
)
def test_auto_precision_is_bfloat16_only_on_a_cpu_with_bfloat16_units(
    precision: Any, backend: Any, device: str, has_bfloat16: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rag.embedder.cpu_has_bfloat16", lambda: has_bfloat16)
    assert resolve_precision(precision, backend, device) == expected


@pytest.fixture(scope="module")
def float32_and_bfloat16() -> tuple[Any, Any]:
    """The real packaged model with torch, computing in float32 and in bfloat16 (autocast)."""
    embedders = []
    for precision in ("float32", "bfloat16"):
        embedder = SentenceTransformerEmbedder(EmbeddingConfig(precision=precision, device="cpu"))
        embedder.load()
        embedders.append(embedder)
    return embedders[0], embedders[1]


def test_bfloat16_passage_vectors_are_float32_and_within_a_cosine_of_0_999_of_float32s(
    float32_and_bfloat16: tuple[Any, Any],
) -> None:
    full, half = float32_and_bfloat16
    assert (full.precision, half.precision) == ("float32", "bfloat16")
    reference, vectors = full.embed_documents(SENTENCES), half.embed_documents(SENTENCES)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (reference * vectors).sum(axis=1)
    assert cosines.min() > 0.999, cosines  # the rule in rag.manifest.vector_kind rests on this
    assert cosines.mean() < 1 - 1e-7, cosines  # bfloat16 did run: the vectors moved


def test_queries_stay_float32_with_torch(float32_and_bfloat16: tuple[Any, Any]) -> None:
    """One short query gains nothing from bfloat16: a bfloat16 embedder's queries are float32's."""
    full, half = float32_and_bfloat16
    assert np.array_equal(half.embed_queries(SENTENCES), full.embed_queries(SENTENCES))


def test_bfloat16_is_per_embedder_not_left_on_for_others(float32_and_bfloat16: tuple[Any, Any]) -> None:
    """Autocast is entered around each encode on the embedder's own thread: after a bfloat16
    embedder ran, a float32 one (same process) still gives what it gave before."""
    full, half = float32_and_bfloat16
    before = full.embed_documents(SENTENCES)
    half.embed_documents(SENTENCES)
    assert np.array_equal(full.embed_documents(SENTENCES), before)


# -- the real exports, in a child process ------------------------------------------------------
# ONNX Runtime and OpenVINO start thread pools that stay in the process that loaded them; in the
# whole suite a later test that signals its own process (test_serve's Ctrl-C) then died with a
# segmentation fault. So the real runtimes run in a child, which prints what the tests check.

_CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from rag.components import Components
from rag.config import load_config

sentences, data_dir, backend, quantization = json.loads(sys.argv[1])
def config(backend, quantization):
    # float32 compute throughout: what is compared is the export, not embedding.precision's auto
    return load_config(overrides={"data_dir": data_dir, "embedding.backend": backend,
                                  "embedding.quantization": quantization, "embedding.precision": "float32"},
                       environ={})
reference = Components(config("torch", "none")).embedder()
documents, queries = reference.embed_documents(sentences), reference.embed_queries(sentences)
first = Components(config(backend, quantization)).embedder()
[export] = (Path(data_dir) / "models" / "embedding-exports").iterdir()
folder = backend + ("-int8" if quantization == "int8" else "")
graph = export / folder / ("model.xml" if backend == "openvino" else "model.onnx")
made = graph.stat()
second = Components(config(backend, quantization)).embedder()
now = graph.stat()
onnx_files = [p / "model.onnx" for p in export.iterdir() if (p / "model.onnx").is_file()]
result = {"export": export.name, "made_once": (now.st_ino, now.st_mtime_ns) == (made.st_ino, made.st_mtime_ns),
          "staging": [p.name for p in export.iterdir() if p.name.startswith(".")],
          "sizes": {f.parent.name: f.stat().st_size for f in onnx_files}, "embedders": []}
for embedder in (first, second):
    mine_d, mine_q = embedder.embed_documents(sentences), embedder.embed_queries(sentences)
    result["embedders"].append({
        "dimension": embedder.dimension, "max_tokens": embedder.tokenizer.max_tokens, "dtype": str(mine_d.dtype),
        "norms": np.linalg.norm(mine_d, axis=1).tolist(),
        "documents": (mine_d * documents).sum(axis=1).tolist(), "queries": (mine_q * queries).sum(axis=1).tolist(),
        "alone": float((embedder.embed_documents(sentences[:1])[0] * documents[0]).sum()),
    })
print(json.dumps(result))
"""


def _export_in_a_child(data_dir: Path, backend: str, quantization: str) -> dict[str, Any]:
    argument = json.dumps([SENTENCES, str(data_dir), backend, quantization])
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, argument], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the tests below: the ONNX export the first makes, the others derive from."""
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_the_float32_export_is_made_once_and_gives_torchs_vectors(backend: str, data_dir: Path) -> None:
    pytest.importorskip("onnxruntime" if backend == "onnx" else "openvino")
    result = _export_in_a_child(data_dir, backend, "none")
    assert result["export"].startswith("all-MiniLM-L6-v2-")
    assert result["made_once"], "the second load reuses the export"
    assert result["staging"] == [], "no staging left"
    for embedder in result["embedders"]:
        assert embedder["dimension"] == 384 and embedder["max_tokens"] == 252 and embedder["dtype"] == "float32"
        assert np.allclose(embedder["norms"], 1.0, atol=1e-5)
        assert min(embedder["documents"]) > 0.999 and min(embedder["queries"]) > 0.999, embedder
        # One text alone (no padding) gives what it gives in a batch.
        assert embedder["alone"] > 0.999


def test_the_int8_onnx_export_is_its_own_file_and_stays_near_torch(data_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    result = _export_in_a_child(data_dir, "onnx", "int8")
    assert result["sizes"]["onnx-int8"] < result["sizes"]["onnx"] / 3  # int8 weights
    cosines = result["embedders"][0]["documents"]
    assert min(cosines) > 0.95 and max(cosines) < 0.9999, cosines  # near, but not the same vectors
