"""A LangChain ``BaseRetriever`` over a knowledge base, to drop it into any LangChain chain.

    retriever = KnowledgeBaseRetriever(retriever=Components(config).retriever(kb, embedder), k=5)
    retriever.invoke("What is the vacation policy?")  # -> list[langchain_core.documents.Document]

Each document's metadata carries the file, page, character span, score and retrievers, so a
chain can cite where its context came from.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.retriever import Retriever


class KnowledgeBaseRetriever(BaseRetriever):
    """Wraps any :class:`rag.retriever.Retriever` (dense, keyword, hybrid, reranked)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # a rag.retriever.Retriever; Any because Protocols are not pydantic types
    k: int = 5

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        inner: Retriever = self.retriever
        return [
            Document(
                page_content=hit.chunk.text,
                metadata={
                    "file": hit.source,
                    "page": hit.chunk.page,
                    "page_label": hit.chunk.page_label,
                    "start": hit.chunk.start,
                    "end": hit.chunk.end,
                    "chunk_id": hit.chunk.id,
                    "score": hit.score,
                    "retrievers": list(hit.retrievers),
                },
            )
            for hit in inner.retrieve(query, self.k)
        ]
