"""Validate the ``EMBEDDINGS``, ``MEMORY``, ``RAG`` and ``CACHE`` sections. Pure.

Each section's keys are its dataclass's fields; an unknown key is an error naming it, and every
number has a range (a zero-sized cache or a negative TTL is a typo, not a wish). Every problem is
recorded in the pass's :class:`~ailb.config.problems.Problems`, not only the first.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from ailb.config.problems import Fields, Problems, section
from ailb.config.schema import CacheSettings, EmbeddingSettings, MemorySettings, RagSettings
from ailb.config.values import Secret, as_url
from ailb.errors import ConfigError

EMBEDDERS: Final = ("lexical", "minilm", "provider")
_MB: Final = 1 << 20


def parse_chroma(raw: Any) -> tuple[str, Secret]:
    """``CHROMA_URL`` without its user info, and that user info (``user:password``) as a
    secret: it must never be logged or shown with the URL."""
    if not raw:
        return "", Secret("")
    url = as_url("CHROMA_URL", raw)
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, Secret("")
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return urlunsplit(parts._replace(netloc=netloc)), Secret(credentials)


def _fields(p: Problems, name: str, raw: Any, defaults: Any) -> Fields:
    known = [f.name for f in fields(defaults)]
    return Fields(p, name, section(p, name, raw, known), defaults)


def parse_embeddings(p: Problems, raw: Any) -> EmbeddingSettings:
    f = _fields(p, "EMBEDDINGS", raw, EmbeddingSettings())
    out = EmbeddingSettings(
        embedder=f.choice("embedder", EMBEDDERS),
        dimensions=f.integer("dimensions", 64, 8192),
        model_dir=f.text("model_dir"),
        model=f.text("model"),
    )
    if out.embedder == "minilm" and not out.model_dir:
        p.add(ConfigError("EMBEDDINGS.model_dir", "is required with embedder: minilm (a folder "
                          "whose onnx/ holds model.onnx and tokenizer.json; no download is "
                          "made)"))
    if out.embedder == "provider" and not out.model:
        p.add(ConfigError("EMBEDDINGS.model", "is required with embedder: provider (a model "
                          "that a deployment serves for /v1/embeddings)"))
    return out


def parse_memory(p: Problems, raw: Any) -> MemorySettings:
    f = _fields(p, "MEMORY", raw, MemorySettings())
    return MemorySettings(
        recent_tokens=f.integer("recent_tokens", 0, 1_000_000),
        relevant_top_k=f.integer("relevant_top_k", 0, 50),
        relevant_min_score=f.number("relevant_min_score", -1.0, 1.0),
        max_turns_per_session=f.integer("max_turns_per_session", 1, 1_000_000),
        max_age_days=f.number("max_age_days", 0, 36_500),
        queue_size=f.integer("queue_size", 1, 1_000_000),
        write_batch=f.integer("write_batch", 1, 1000),
    )


def parse_rag(p: Problems, raw: Any) -> RagSettings:
    f = _fields(p, "RAG", raw, RagSettings())
    before = len(p.found)
    out = RagSettings(
        top_k=f.integer("top_k", 1, 100),
        min_score=f.number("min_score", -1.0, 1.0),
        chunk_chars=f.integer("chunk_chars", 100, 100_000),
        chunk_overlap=f.integer("chunk_overlap", 0, 50_000),
        max_context_chars=f.integer("max_context_chars", 100, 1_000_000),
        write_batch=f.integer("write_batch", 1, 1000),
        max_upload_bytes=f.integer("max_upload_bytes", 1024, 1 << 31),
        sync_max_bytes=f.integer("sync_max_bytes", 0, 1 << 31),
        job_workers=f.integer("job_workers", 1, 16),
        job_queue=f.integer("job_queue", 0, 10_000),
        job_queue_bytes=f.integer("job_queue_bytes", 1 << 20, 1 << 40),
    )
    # compared only when both are valid: a default in place of a bad one proves nothing
    bad = {exc.key for exc in p.found[before:]}
    if not bad & {"RAG.chunk_chars", "RAG.chunk_overlap"} and \
            out.chunk_overlap >= out.chunk_chars:
        p.add(ConfigError("RAG.chunk_overlap", "must be smaller than RAG.chunk_chars"))
    return out


def parse_cache(p: Problems, raw: Any) -> CacheSettings:
    f = _fields(p, "CACHE", raw, CacheSettings())

    def entries(name: str) -> int:
        return f.integer(name, 1, 10_000_000)

    return CacheSettings(
        context_entries=entries("context_entries"),
        context_mb=f.number("context_mb", 0.01, 1_000_000),
        rag_ttl_s=f.number("rag_ttl_s", 0.0, 30 * 86400),
        rag_entries=entries("rag_entries"),
        rag_mb=f.number("rag_mb", 0.01, 1_000_000),
        response=f.flag("response"),
        response_scope=f.choice("response_scope", ("key", "shared")),
        response_ttl_s=f.number("response_ttl_s", 0.0, 30 * 86400),
        response_entries=entries("response_entries"),
        response_mb=f.number("response_mb", 0.01, 1_000_000),
    )


def megabytes(mb: float) -> int:
    """A ``*_mb`` setting in bytes."""
    return max(1, int(mb * _MB))
