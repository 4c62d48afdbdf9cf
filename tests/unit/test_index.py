from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.config import IndexConfig
from rag.index import FaissIndex, search_device


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_add_search_remove_write_read(kind: str, tmp_path: Path) -> None:
    config = IndexConfig(kind=kind, ivf_nlist=4, ivf_nprobe=4)
    index = FaissIndex.create(16, config)
    vectors = _vectors(400)
    ids = np.arange(10_000, 10_400, dtype=np.int64)
    index.add(ids[:50], vectors[:50])
    assert index.structure == ("hnsw" if kind == "hnsw" else "flat")
    index.add(ids[50:], vectors[50:])
    assert index.structure == kind  # ivf is trained once 39 x nlist vectors exist
    assert len(index) == 400

    scores, found = index.search(vectors[100:103], 1)
    assert found[:, 0].tolist() == ids[100:103].tolist()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)

    index.remove(ids[100:200])
    assert len(index) == 300
    assert set(index.ids().tolist()) == set(ids.tolist()) - set(ids[100:200].tolist())
    _, found = index.search(vectors[100:101], 5)
    assert not set(found[0].tolist()) & set(ids[100:200].tolist())

    path = tmp_path / "index.faiss"
    index.write(path)
    again = FaissIndex.read(path, config)
    assert again.structure == kind and len(again) == 300
    assert again.search(vectors[300:301], 1)[1][0, 0] == ids[300]


def test_empty_index_search_returns_no_hits() -> None:
    index = FaissIndex.create(8, IndexConfig())
    _scores, ids = index.search(_vectors(2, 8), 3)
    assert ids.shape == (2, 3) and (ids == -1).all()


@pytest.mark.parametrize(
    ("gpu", "structure", "gpus", "expected"),
    [
        ("auto", "flat", 1, "gpu"),
        ("auto", "ivf", 2, "gpu"),
        ("auto", "flat", 0, "cpu"),
        ("off", "flat", 1, "cpu"),
        ("auto", "hnsw", 1, "cpu"),  # FAISS has no GPU HNSW
    ],
)
def test_search_device_selection(gpu: str, structure: str, gpus: int, expected: str) -> None:
    assert search_device(IndexConfig(gpu=gpu), structure, gpus) == expected  # type: ignore[arg-type]


def test_gpu_path_is_taken_when_faiss_reports_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On this CPU machine the GPU calls are fakes; what is tested is that the same search
    code moves the index with ``index_cpu_to_gpu`` when FAISS reports a GPU."""
    import rag.index as module

    moved: list[object] = []

    class FakeGpuResources:  # a fake of faiss.StandardGpuResources
        pass

    def fake_to_gpu(resources: object, device: int, index: object) -> object:
        moved.append(index)
        return index

    monkeypatch.setattr(module.faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(module.faiss, "StandardGpuResources", FakeGpuResources, raising=False)
    monkeypatch.setattr(module.faiss, "index_cpu_to_gpu", fake_to_gpu, raising=False)
    index = FaissIndex.create(8, IndexConfig())
    index.add(np.array([1, 2], dtype=np.int64), _vectors(2, 8))
    assert index.search(_vectors(1, 8), 1)[1].shape == (1, 1)
    assert len(moved) == 1
