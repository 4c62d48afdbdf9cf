"""The core a user imports: configuration, records, errors, embedding, storage, retrieval."""

__version__ = "0.1.0"
