"""A LangChain ``BaseRetriever`` over a knowledge base, to drop it into any LangChain chain.

    retriever = KnowledgeBaseRetriever(retriever=Components(config).retriever(kb, embedder), k=5)
    retriever.invoke("What is the vacation policy?")  # -> list[langchain_core.documents.Document]

Each document's metadata is :class:`rag.records.HitRecord` without the text (the file, page,
character span, chunk id, score and retrievers), the same record ``rag search --json`` prints, so
a chain can cite where its context came from.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.records import HitRecord
from rag.retriever import Retriever


class KnowledgeBaseRetriever(BaseRetriever):
    """Wraps any :class:`rag.retriever.Retriever` (dense, keyword, hybrid, reranked)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # a rag.retriever.Retriever; Any because Protocols are not pydantic types
    k: int = 5

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        inner: Retriever = self.retriever
        return [
            Document(page_content=hit.chunk.text, metadata=HitRecord.of(hit).model_dump(exclude={"text"}))
            for hit in inner.retrieve(query, self.k)
        ]
