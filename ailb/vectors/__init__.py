"""Vectors for memory and RAG: embedders (text -> vector) and the ChromaDB edge."""
