"""Validate the ``EMBEDDINGS``, ``MEMORY``, ``RAG`` and ``CACHE`` sections. Pure.

Each section's keys are its dataclass's fields; an unknown key is an error naming it, and every
number has a range (a zero-sized cache or a negative TTL is a typo, not a wish).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from ailb.config.schema import CacheSettings, EmbeddingSettings, MemorySettings, RagSettings
from ailb.config.values import (
    Secret,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_section,
    as_str,
    as_url,
)
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


def parse_embeddings(raw: Any) -> EmbeddingSettings:
    values = as_section("EMBEDDINGS", raw, [f.name for f in fields(EmbeddingSettings)])
    d = EmbeddingSettings()
    out = EmbeddingSettings(
        embedder=as_choice("EMBEDDINGS.embedder", values.get("embedder", d.embedder), EMBEDDERS),
        dimensions=as_int("EMBEDDINGS.dimensions", values.get("dimensions", d.dimensions), 64,
                          8192),
        model_dir=as_str("EMBEDDINGS.model_dir", values.get("model_dir", d.model_dir)),
        model=as_str("EMBEDDINGS.model", values.get("model", d.model)),
    )
    if out.embedder == "minilm" and not out.model_dir:
        raise ConfigError("EMBEDDINGS.model_dir", "is required with embedder: minilm (a folder "
                          "whose onnx/ holds model.onnx and tokenizer.json; no download is made)")
    if out.embedder == "provider" and not out.model:
        raise ConfigError("EMBEDDINGS.model", "is required with embedder: provider (a model "
                          "that a deployment serves for /v1/embeddings)")
    return out


def parse_memory(raw: Any) -> MemorySettings:
    values = as_section("MEMORY", raw, [f.name for f in fields(MemorySettings)])
    d = MemorySettings()

    def integer(name: str, lo: int, hi: int) -> int:
        return as_int(f"MEMORY.{name}", values.get(name, getattr(d, name)), lo, hi)

    return MemorySettings(
        recent_tokens=integer("recent_tokens", 0, 1_000_000),
        relevant_top_k=integer("relevant_top_k", 0, 50),
        relevant_min_score=as_float("MEMORY.relevant_min_score",
                                    values.get("relevant_min_score", d.relevant_min_score),
                                    -1.0, 1.0),
        max_turns_per_session=integer("max_turns_per_session", 1, 1_000_000),
        max_age_days=as_float("MEMORY.max_age_days", values.get("max_age_days",
                                                                d.max_age_days), 0, 36_500),
        queue_size=integer("queue_size", 1, 1_000_000),
        write_batch=integer("write_batch", 1, 1000),
    )


def parse_rag(raw: Any) -> RagSettings:
    values = as_section("RAG", raw, [f.name for f in fields(RagSettings)])
    d = RagSettings()

    def integer(name: str, lo: int, hi: int) -> int:
        return as_int(f"RAG.{name}", values.get(name, getattr(d, name)), lo, hi)

    out = RagSettings(
        top_k=integer("top_k", 1, 100),
        min_score=as_float("RAG.min_score", values.get("min_score", d.min_score), -1.0, 1.0),
        chunk_chars=integer("chunk_chars", 100, 100_000),
        chunk_overlap=integer("chunk_overlap", 0, 50_000),
        max_context_chars=integer("max_context_chars", 100, 1_000_000),
        write_batch=integer("write_batch", 1, 1000),
    )
    if out.chunk_overlap >= out.chunk_chars:
        raise ConfigError("RAG.chunk_overlap", "must be smaller than RAG.chunk_chars")
    return out


def parse_cache(raw: Any) -> CacheSettings:
    values = as_section("CACHE", raw, [f.name for f in fields(CacheSettings)])
    d = CacheSettings()

    def integer(name: str) -> int:
        return as_int(f"CACHE.{name}", values.get(name, getattr(d, name)), 1, 10_000_000)

    def number(name: str, lo: float, hi: float) -> float:
        return as_float(f"CACHE.{name}", values.get(name, getattr(d, name)), lo, hi)

    return CacheSettings(
        context_entries=integer("context_entries"),
        context_mb=number("context_mb", 0.01, 1_000_000),
        rag_ttl_s=number("rag_ttl_s", 0.0, 30 * 86400),
        rag_entries=integer("rag_entries"),
        rag_mb=number("rag_mb", 0.01, 1_000_000),
        response=as_bool("CACHE.response", values.get("response", d.response)),
        response_scope=as_choice("CACHE.response_scope",
                                 values.get("response_scope", d.response_scope),
                                 ("key", "shared")),
        response_ttl_s=number("response_ttl_s", 0.0, 30 * 86400),
        response_entries=integer("response_entries"),
        response_mb=number("response_mb", 0.01, 1_000_000),
    )


def megabytes(mb: float) -> int:
    """A ``*_mb`` setting in bytes."""
    return max(1, int(mb * _MB))
