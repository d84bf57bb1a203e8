"""Virtual keys as values: the key format, hashing, and what a key allows. Pure.

A key looks like ``sk-ailb-<id>-<secret>``: ``id`` (12 hex characters) is public and names the
key in logs, metrics and the admin API; only a SHA-256 hash of the secret is stored. Secrets are
256 random bits, so a fast hash is enough (there is nothing to brute-force), and hashes are
compared in constant time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

PREFIX: Final = "sk-ailb-"
_KEY: Final = re.compile(r"^sk-ailb-(?P<id>[0-9a-f]{12})-(?P<secret>[A-Za-z0-9_-]{20,200})$")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    secret_hash: str
    created_at: datetime
    owner: str = ""
    team: str = ""
    expires_at: datetime | None = None
    active: bool = True
    allowed_models: tuple[str, ...] = ()  # empty: every model; globs allowed ("gpt-4o*")
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    monthly_budget_usd: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = "api"  # "api" (admin API) or "config" (declared in the YAML)
    # RAG collections (names or globs, "docs-*") this key may fill; see may_read_collection
    rag_collections: tuple[str, ...] = ()

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or any(fnmatch.fnmatchcase(model, pattern)
                                              for pattern in self.allowed_models)

    def grants_collection(self, name: str) -> bool:
        """Whether ``rag_collections`` names RAG collection ``name``: the key may create it,
        add and delete its documents, and delete it."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.rag_collections)

    def may_read_collection(self, name: str) -> bool:
        """Whether the key may read RAG collection ``name`` (list, get, query, chat opt-in):
        every collection when ``rag_collections`` is empty, else only the granted ones."""
        return not self.rag_collections or self.grants_collection(name)

    def usable(self, now: datetime) -> bool:
        return self.active and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class TeamRecord:
    """A team: keys name it in their ``team`` field; its limits and budget apply on top of each
    key's (:mod:`ailb.accounting.teams`)."""

    id: str
    created_at: datetime
    description: str = ""
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    monthly_budget_usd: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def first_created(records: Iterable[KeyRecord | TeamRecord], limit: int) -> frozenset[str]:
    """The ids of the ``limit`` records created first (the id breaks a tie): the same for
    any order the records come in, so every process holding the same records agrees."""
    return frozenset(record.id for record in heapq.nsmallest(
        limit, records, key=lambda r: (r.created_at.timestamp(), r.id)))


def new_key(key_id: str | None = None) -> tuple[str, str, str]:
    """A fresh ``(id, full key, secret hash)``; a new secret for ``key_id`` when given."""
    key_id = key_id or secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}-{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    match = _KEY.match(key)
    return (match["id"], match["secret"]) if match else None


def secret_matches(record: KeyRecord, secret: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), record.secret_hash)
