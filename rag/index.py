"""The FAISS vector index: chunk ids in, chunk ids out.

FAISS ids are the chunks' int64 ids (``IndexIDMap2``), so the chunks of a changed or removed
file can be deleted by id. Vectors are normalised, so inner product is cosine similarity.

Kinds (``IndexConfig.kind``):
- ``flat``: exact search. The default; fine to a few hundred thousand chunks.
- ``ivf``: inverted lists. Training needs data, so the index stays flat until it holds
  ``39 x ivf_nlist`` vectors (FAISS's own rule of thumb), then is trained and rebuilt once.
- ``hnsw``: a graph.
Deleting from ``ivf`` or ``hnsw`` rebuilds the index without the deleted ids (FAISS cannot
delete from HNSW, nor from IVF behind an id map); deletes only happen when files change or are
pruned, at most once per commit.

Search moves to the GPU when FAISS sees one (``faiss.get_num_gpus() > 0``) and the kind has a
GPU implementation; the code path is otherwise the same. Writes always happen on the CPU copy.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from rag.config import IndexConfig

Ids = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]

IVF_POINTS_PER_CELL = 39  # FAISS warns below this many training points per IVF cell.
GPU_KINDS = frozenset({"flat", "ivf"})  # FAISS has no GPU HNSW.


def search_device(config: IndexConfig, structure: str, num_gpus: int) -> Literal["cpu", "gpu"]:
    """Where searches run: the GPU when allowed, present, and supported for this structure."""
    if config.gpu == "auto" and num_gpus > 0 and structure in GPU_KINDS:
        return "gpu"
    return "cpu"


def _new_index(structure: str, dimension: int, config: IndexConfig) -> Any:
    inner: Any
    if structure == "flat":
        inner = faiss.IndexFlatIP(dimension)
    elif structure == "hnsw":
        inner = faiss.IndexHNSWFlat(dimension, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    elif structure == "ivf":
        quantizer = faiss.IndexFlatIP(dimension)
        inner = faiss.IndexIVFFlat(quantizer, dimension, config.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        inner.make_direct_map()  # lets vectors be read back for rebuilds
    else:
        raise ValueError(f"unknown index structure {structure!r}")
    # FAISS's Python constructors keep references to the wrapped indexes, so no ownership
    # juggling is needed here.
    return faiss.IndexIDMap2(inner)


def _structure_of(index: Any) -> str:
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"


class FaissIndex:
    """A mutable FAISS index keyed by chunk id. One writer at a time; searches may come from
    several threads (they take turns: GPU indexes are not thread-safe, and a CPU search already
    uses every core)."""

    def __init__(self, index: Any, config: IndexConfig) -> None:
        self._index = index
        self._config = config
        self._search_index: Any = None
        self._gpu_resources: Any = None
        self._search_lock = threading.Lock()

    @classmethod
    def create(cls, dimension: int, config: IndexConfig) -> FaissIndex:
        """An empty index; an ``ivf`` index starts flat until there is data to train on."""
        structure = "hnsw" if config.kind == "hnsw" else "flat"
        return cls(_new_index(structure, dimension, config), config)

    @classmethod
    def read(cls, path: Path, config: IndexConfig) -> FaissIndex:
        return cls(faiss.read_index(str(path)), config)

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    @property
    def structure(self) -> str:
        """What the index is now: ``flat``, ``ivf`` or ``hnsw`` (``ivf`` starts ``flat``)."""
        return _structure_of(self._index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> Ids:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: Ids, vectors: Vectors) -> None:
        if len(ids) == 0:
            return
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        self._search_index = None
        trainable = len(self) >= IVF_POINTS_PER_CELL * self._config.ivf_nlist
        if self._config.kind == "ivf" and self.structure == "flat" and trainable:
            self._rebuild("ivf")

    def remove(self, ids: Ids) -> None:
        if len(ids) == 0:
            return
        self._search_index = None
        structure = self.structure
        if structure == "flat":
            self._index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64)))
        else:
            # HNSW cannot delete at all, and IVF under IndexIDMap2 would leave its lists
            # pointing at shifted positions: rebuild both without the deleted ids.
            self._rebuild(structure, drop=ids)

    def _rebuild(self, structure: str, drop: Ids | None = None) -> None:
        ids = self.ids()
        vectors = self._index.index.reconstruct_n(0, len(ids))
        if drop is not None:
            keep = ~np.isin(ids, drop)
            ids, vectors = ids[keep], vectors[keep]
        index = _new_index(structure, self.dimension, self._config)
        if structure == "ivf":
            faiss.downcast_index(index.index).train(vectors)
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index = index

    def write(self, path: Path) -> None:
        """Write to ``path`` atomically: a reader sees the old file or the new one."""
        # Not rag.files.write_bytes_atomic: FAISS writes by file name, and the partial's name
        # (index-N.faiss.tmp) is one the store's sweep of a killed commit's leftovers
        # (INDEX_GLOB + "*") finds, where a hidden mkstemp name would be left behind.
        temporary = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(temporary))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        temporary.replace(path)

    def search(self, queries: Vectors, k: int) -> tuple[npt.NDArray[np.float32], Ids]:
        """Top ``k`` (scores, ids) per query; missing hits have id -1."""
        if len(self) == 0 or k <= 0:
            shape = (len(queries), max(k, 0))
            return np.zeros(shape, dtype=np.float32), np.full(shape, -1, dtype=np.int64)
        with self._search_lock:
            index = self._searchable()
            scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))
        return scores, ids

    def _searchable(self) -> Any:
        if self._search_index is None:
            structure = self.structure
            if structure == "ivf":
                faiss.extract_index_ivf(self._index).nprobe = self._config.ivf_nprobe
            if structure == "hnsw":
                hnsw: Any = faiss.downcast_index(self._index.index)
                hnsw.hnsw.efSearch = self._config.hnsw_ef_search
            if search_device(self._config, structure, faiss.get_num_gpus()) == "gpu":
                # The resources must outlive the GPU index: keep them beside it.
                self._gpu_resources = faiss.StandardGpuResources()
                self._search_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
            else:
                self._search_index = self._index
        return self._search_index
