"""The keys AILB knows, cached in memory (every request looks its key up) and kept in the store.

Keys declared in the YAML (``keys:``) are upserted at start with ``source: config``; the admin
API manages the others and refuses to change configuration keys (edit the YAML instead).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from ailb.config_schema import ConfiguredKey
from ailb.errors import InvalidRequest, NotFound
from ailb.keys.records import KeyRecord, new_key
from ailb.keys.store import Store


def configured_record(key: ConfiguredKey, now: datetime) -> KeyRecord:
    """The record of a key declared in the YAML."""
    return replace(KeyRecord(id=key.id, name="", secret_hash=key.secret_hash, created_at=now,
                             source="config"), **key.fields)


class KeyRegistry:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._keys = {key.id: key for key in store.keys()}

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def require(self, key_id: str) -> KeyRecord:
        key = self._keys.get(key_id)
        if key is None:
            raise NotFound(f"No key with id `{key_id}`.", param="id", code="key_not_found")
        return key

    def all(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def _save(self, key: KeyRecord) -> KeyRecord:
        self._store.put_key(key)
        self._keys[key.id] = key
        return key

    def create(self, fields: Mapping[str, Any]) -> tuple[KeyRecord, str]:
        """A new key with ``fields``; returns it and the full secret key (shown once)."""
        key_id, secret_key, secret_hash = new_key()
        record = KeyRecord(id=key_id, name=str(fields.get("name", "")),
                           secret_hash=secret_hash, created_at=self._clock())
        return self._save(replace(record, **{k: v for k, v in fields.items() if k != "name"},
                                  name=record.name)), secret_key

    def update(self, key_id: str, fields: Mapping[str, Any]) -> KeyRecord:
        key = self._editable(key_id)
        return self._save(replace(key, **fields))

    def revoke(self, key_id: str) -> KeyRecord:
        return self._save(replace(self._editable(key_id), active=False))

    def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret for the same key id (limits, budget and spend stay)."""
        key = self._editable(key_id)
        _, secret_key, secret_hash = new_key(key.id)
        return self._save(replace(key, secret_hash=secret_hash)), secret_key

    def _editable(self, key_id: str) -> KeyRecord:
        key = self.require(key_id)
        if key.source == "config":
            raise InvalidRequest(f"Key `{key_id}` is declared in the configuration file; change "
                                 "it there.", param="id", code="key_managed_by_config")
        return key

    def deactivate_config_keys_except(self, ids: set[str]) -> None:
        """Keys once declared in the YAML and no longer there stop working (kept for history)."""
        for key in list(self._keys.values()):
            if key.source == "config" and key.id not in ids and key.active:
                self._save(replace(key, active=False))

    def upsert_config_key(self, record: KeyRecord) -> None:
        existing = self._keys.get(record.id)
        created = existing.created_at if existing else record.created_at
        self._save(replace(record, created_at=created, source="config"))
