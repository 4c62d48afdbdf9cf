"""What a knowledge base was built with, checked against the configuration on every open.

The manifest of record lives in the knowledge base's SQLite database, so it changes in the same
transaction as the rows it describes; ``manifest.json`` beside it is a readable copy.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rag.config import ChunkContext, ChunkingConfig
from rag.errors import ManifestMismatchError

FORMAT_VERSION = 1


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
    index_kind: str
    index_structure: str
    generation: int = 0
    keyword_generation: int = -1  # the generation the BM25 index was built for
    documents: int = 0
    chunks: int = 0
    updated_at: str = ""

    def check_embedding(self, model_id: str, directory: Path) -> None:
        if model_id != self.embedding_model:
            raise ManifestMismatchError(
                f"knowledge base {directory} was built with embedding model "
                f"{self.embedding_model!r}, but the configuration asks for {model_id!r}. "
                f"Re-index it with `rag ingest --reindex --kb {directory}`, or set "
                f"embedding.model back to {self.embedding_model!r}."
            )

    def check_chunking(self, chunking: ChunkingConfig, directory: Path) -> None:
        built = (self.chunk_tokens, self.overlap_tokens, self.chunk_context)
        wanted = (chunking.chunk_tokens, chunking.overlap_tokens, chunking.context)
        if built != wanted:
            raise ManifestMismatchError(
                f"knowledge base {directory} was chunked with chunk_tokens={built[0]}, "
                f"overlap_tokens={built[1]}, context={built[2]!r}, but the configuration asks for "
                f"chunk_tokens={wanted[0]}, overlap_tokens={wanted[1]}, context={wanted[2]!r}. "
                f"Re-index it with `rag ingest --reindex --kb {directory}` so every document is "
                "chunked and indexed alike."
            )
