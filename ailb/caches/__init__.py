"""In-memory caches (RAG results, deterministic chat answers): bounded LRU and pure key helpers."""
