"""What a knowledge base was built with, checked against the configuration on every open.

The manifest of record lives in the knowledge base's SQLite database, so it changes in the same
transaction as the rows it describes; ``manifest.json`` beside it is a readable copy.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rag.config import AppConfig, ChunkContext, EmbeddingBackend, EmbeddingConfig, EmbeddingQuantization, PdfTextEngine
from rag.errors import ManifestMismatchError

FORMAT_VERSION = 1


def vector_kind(backend: EmbeddingBackend, quantization: EmbeddingQuantization) -> str:
    """Which vectors may share an index: those of one kind.

    Unquantised, torch, ONNX Runtime and OpenVINO compute the same float32 function of the model's
    weights (cosine above 0.999 between them: tests/unit/test_embedding_backends.py), so they are
    one kind. ``embedding.precision`` bfloat16 computes that function with bfloat16 matrix
    products: its passage vectors stay within a cosine of 0.999 of float32's and keep 0.99 of their
    top-10 neighbours (bench/RESULTS.md, Embedding backends), so precision does not change the kind,
    and a knowledge base built on a CPU with bfloat16 is searched and extended on one without. An
    int8 export approximates it, each backend its own way (0.87 to 0.96 of the top 10), so each
    backend's int8 is a kind of its own, searched only with vectors of that kind (README,
    Configuration).
    """
    return "float32" if quantization == "none" else f"{backend} {quantization}"


def embedding_settings(embedding: EmbeddingConfig) -> dict[str, str]:
    """The embedding settings that what was embedded depends on, for a cache key or a resume check.
    float32 vectors add nothing, so keys made before ``embedding.backend`` existed stay valid."""
    kind = vector_kind(embedding.backend, embedding.quantization)
    return {"embedding_model": embedding.model} | ({"embedding_vectors": kind} if kind != "float32" else {})


class Manifest(BaseModel):
    """What a knowledge base was built with. Opening checks it against the configuration."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format_version: int
    embedding_model: str
    dimension: int
    normalized: bool = True
    metric: str = "inner_product"
    chunk_tokens: int
    overlap_tokens: int
    # Knowledge bases from before the setting existed indexed chunks alone.
    chunk_context: ChunkContext = "none"
    # ... and extracted PDF text with pypdf.
    pdf_text: PdfTextEngine = "pypdf"
    # ... and embedded with torch, unquantised.
    embedding_backend: EmbeddingBackend = "torch"
    embedding_quantization: EmbeddingQuantization = "none"
    index_kind: str
    index_structure: str
    generation: int = 0
    keyword_generation: int = -1  # the generation the BM25 index was built for
    documents: int = 0
    chunks: int = 0
    updated_at: str = ""

    @classmethod
    def describing(
        cls, config: AppConfig, *, dimension: int, index_structure: str, generation: int, keyword_generation: int
    ) -> Manifest:
        """What a writer opened with ``config`` records at its next commit (counts filled in then)."""
        return cls(
            format_version=FORMAT_VERSION,
            embedding_model=config.embedding.model,
            embedding_backend=config.embedding.backend,
            embedding_quantization=config.embedding.quantization,
            dimension=dimension,
            chunk_tokens=config.chunking.chunk_tokens,
            overlap_tokens=config.chunking.overlap_tokens,
            chunk_context=config.chunking.context,
            pdf_text=config.ingest.pdf_text,
            index_kind=config.index.kind,
            index_structure=index_structure,
            generation=generation,
            keyword_generation=keyword_generation,
        )

    @property
    def vectors(self) -> str:
        """The kind of vectors the index holds (:func:`vector_kind`)."""
        return vector_kind(self.embedding_backend, self.embedding_quantization)

    def check_embedding(self, embedding: EmbeddingConfig, directory: Path | str) -> None:
        """Refuse to search or extend the index with vectors of another model or kind (:func:`vector_kind`)."""
        if embedding.model != self.embedding_model:
            raise ManifestMismatchError(
                f"knowledge base {directory} was built with embedding model "
                f"{self.embedding_model!r}, but the configuration asks for {embedding.model!r}. "
                f"Re-index it with `rag ingest PATH --reindex --kb {directory}`, or set "
                f"embedding.model back to {self.embedding_model!r}."
            )
        built, wanted = self.vectors, vector_kind(embedding.backend, embedding.quantization)
        if built != wanted:
            if self.embedding_quantization == "none":
                restore = "embedding.quantization back to 'none' (with any backend)"
            else:
                restore = (
                    f"embedding.backend = {self.embedding_backend!r} and "
                    f"embedding.quantization = {self.embedding_quantization!r} again"
                )
            raise ManifestMismatchError(
                f"knowledge base {directory} holds {built} vectors (embedding.backend {self.embedding_backend!r}, "
                f"quantization {self.embedding_quantization!r}), but the configuration makes {wanted} vectors "
                f"(backend {embedding.backend!r}, quantization {embedding.quantization!r}); the two kinds do not "
                f"share an index. Re-index it with `rag ingest PATH --reindex --kb {directory}`, or set {restore}."
            )

    def check_indexing(self, config: AppConfig, directory: Path | str) -> None:
        """Refuse to add to a knowledge base whose chunks were made another way: one knowledge base
        must not hold passages extracted, cut or indexed two ways, which would rank unevenly."""
        built = indexing_settings(self)
        wanted = {
            "chunk_tokens": config.chunking.chunk_tokens,
            "overlap_tokens": config.chunking.overlap_tokens,
            "context": config.chunking.context,
            "pdf_text": config.ingest.pdf_text,
        }
        if built != wanted:
            differ = ", ".join(
                f"{key}={built[key]!r} (configured: {wanted[key]!r})" for key in built if built[key] != wanted[key]
            )
            raise ManifestMismatchError(
                f"knowledge base {directory} was built with {differ}. Re-index it with "
                f"`rag ingest PATH --reindex --kb {directory}` so every document is extracted, chunked and "
                "indexed alike, or set those values back."
            )


def indexing_settings(manifest: Manifest) -> dict[str, object]:
    """The settings that decide what a chunk's text and indexed text are, as the manifest records them."""
    return {
        "chunk_tokens": manifest.chunk_tokens,
        "overlap_tokens": manifest.overlap_tokens,
        "context": manifest.chunk_context,
        "pdf_text": manifest.pdf_text,
    }
