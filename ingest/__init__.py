"""Ingestion: find files, load them into pages, chunk, embed and store them."""
