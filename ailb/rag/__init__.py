"""Retrieval-augmented generation: documents chunked into ChromaDB collections, passages
retrieved for chat requests. Chunking, extraction, options and prompt assembly are pure; the
store is the only part that touches ChromaDB (through :mod:`ailb.vectors.chroma`)."""
