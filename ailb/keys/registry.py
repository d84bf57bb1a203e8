"""The keys AILB knows, cached in memory (every request looks its key up) and kept in the store.

Keys declared in the YAML (``keys:``) are upserted at start with ``source: config``; the admin
API manages the others and refuses to change configuration keys (edit the YAML instead).

A change made through the admin API is in the store before it is live (and before the caller
hears of it). Configuration keys are applied to the cache at once (a reload cannot await) and
written by ``save_config`` right after; if the store refuses, the error is logged and the next
start writes them again (they come from the YAML).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import trio

from ailb import logs
from ailb.accounting.store import Store
from ailb.config.schema import ConfiguredKey
from ailb.errors import Conflict, InvalidRequest, NotFound, StoreUnavailable
from ailb.keys.records import KeyRecord, TeamRecord, first_created, new_key
from ailb.keys.teams import TeamRegistry

_log = logging.getLogger("ailb.keys")


def configured_record(key: ConfiguredKey, now: datetime) -> KeyRecord:
    """The record of a key declared in the YAML."""
    return replace(KeyRecord(id=key.id, name="", secret_hash=key.secret_hash, created_at=now,
                             source="config"), **key.fields)


class KeyRegistry:
    def __init__(self, store: Store, clock: Callable[[], datetime],
                 keys: Iterable[KeyRecord] = (), teams: Iterable[TeamRecord] = ()) -> None:
        self._store = store
        self._clock = clock
        self._keys = {key.id: key for key in keys}
        self._first: tuple[int, frozenset[str]] | None = None  # first_key_ids's last answer
        self.teams = TeamRegistry(store, clock, teams)  # changed through the methods below
        self._unsaved: set[str] = set()  # configuration keys changed in the cache only
        # one admin change at a time, each read after the one before it was saved: a PATCH
        # overlapping a revoke or a rotation cannot write back the key as it was before them
        self._changing = trio.Lock()

    @classmethod
    async def load(cls, store: Store, clock: Callable[[], datetime]) -> KeyRegistry:
        """The registry of the keys and teams in ``store``. Raises StoreUnavailable."""
        return cls(store, clock, await store.keys(), await store.teams())

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def require(self, key_id: str) -> KeyRecord:
        key = self._keys.get(key_id)
        if key is None:
            raise NotFound(f"No key with id `{key_id}`.", param="id", code="key_not_found")
        return key

    def all(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def first_key_ids(self, limit: int) -> frozenset[str]:
        """The ``limit`` keys created first, revoked ones included (their per-key metric
        labels, :mod:`ailb.metrics`): worked out again only after the keys changed."""
        if self._first is None or self._first[0] != limit:
            self._first = (limit, first_created(self._keys.values(), limit))
        return self._first[1]

    def first_team_ids(self, limit: int) -> frozenset[str]:
        return self.teams.first_ids(limit)

    async def _save(self, key: KeyRecord) -> KeyRecord:
        await self._store.put_key(key)
        self._keys[key.id] = key
        self._first = None
        return key

    async def create(self, fields: Mapping[str, Any]) -> tuple[KeyRecord, str]:
        """A new key with ``fields``; returns it and the full secret key (shown once). Raises
        StoreUnavailable."""
        key_id, secret_key, secret_hash = new_key()
        record = KeyRecord(id=key_id, name=str(fields.get("name", "")),
                           secret_hash=secret_hash, created_at=self._clock())
        return await self._save(replace(record, **{k: v for k, v in fields.items()
                                                   if k != "name"}, name=record.name)), secret_key

    async def _change(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord:
        """Apply ``change`` to the key as it is once the changes before it are saved."""
        async with self._changing:
            return await self._save(change(self._editable(key_id)))

    async def update(self, key_id: str, fields: Mapping[str, Any]) -> KeyRecord:
        """Raises NotFound, InvalidRequest (a configuration key) or StoreUnavailable."""
        return await self._change(key_id, lambda key: replace(key, **fields))

    async def revoke(self, key_id: str) -> KeyRecord:
        """Raises NotFound, InvalidRequest (a configuration key) or StoreUnavailable."""
        return await self._change(key_id, lambda key: replace(key, active=False))

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret for the same key id (limits, budget and spend stay). Raises NotFound,
        InvalidRequest (a configuration key) or StoreUnavailable."""
        _, secret_key, secret_hash = new_key(key_id)
        return await self._change(key_id, lambda key: replace(key, secret_hash=secret_hash)), \
            secret_key

    def members(self, team_id: str) -> list[KeyRecord]:
        """The active keys that name ``team_id``."""
        return [key for key in self._keys.values() if key.team == team_id and key.active]

    async def create_team(self, fields: Mapping[str, Any]) -> TeamRecord:
        """Raises Conflict (the id is taken) or StoreUnavailable."""
        async with self._changing:
            return await self.teams.create(fields)

    async def update_team(self, team_id: str, fields: Mapping[str, Any]) -> TeamRecord:
        """Raises NotFound or StoreUnavailable."""
        async with self._changing:
            return await self.teams.update(team_id, fields)

    async def delete_team(self, team_id: str) -> TeamRecord:
        """Remove a team no active key names (revoke or move its keys first). Raises
        NotFound, Conflict (``team_has_keys``) or StoreUnavailable."""
        async with self._changing:  # no key joins it between the check and the delete here
            self.teams.require(team_id)
            members = self.members(team_id)
            if members:
                raise Conflict(f"Team `{team_id}` still has {len(members)} active key(s); "
                               "revoke them or move them to another team first.",
                               param="team_id", code="team_has_keys")
            return await self.teams.delete(team_id)

    def _editable(self, key_id: str) -> KeyRecord:
        key = self.require(key_id)
        if key.source == "config":
            raise InvalidRequest(f"Key `{key_id}` is declared in the configuration file; change "
                                 "it there.", param="id", code="key_managed_by_config")
        return key

    async def refresh_forever(self, interval_s: float,
                              on_error: Callable[[StoreUnavailable], None] = lambda exc: None,
                              on_success: Callable[[], None] = lambda: None, *,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                              ) -> None:
        """Keep the cache equal to the store while other gateways share it: every
        ``interval_s``, one cheap look at the store's ``keys_version``, and all keys read again
        when it moved, and the teams with them (a key or team created, changed, revoked or
        deleted elsewhere is live here within about
        ``interval_s`` plus one read). A store that fails is tried again at the next tick."""
        version: int | None = None
        task_status.started()
        while True:
            try:
                async with self._changing:  # no admin change of ours between the two reads
                    now = await self._store.keys_version()
                    if now != version:
                        self._replace(await self._store.keys())
                        self.teams.replace_all(await self._store.teams())
                        version = now
                on_success()
            except StoreUnavailable as exc:
                on_error(exc)
            except Exception:  # a key row this version cannot read: keep serving the others
                _log.exception("keys not reloaded from the store")
            await trio.sleep(interval_s)

    def _replace(self, stored: Iterable[KeyRecord]) -> None:
        """The store's keys, but configuration keys this gateway has not saved yet stay as
        they are here (they come from this gateway's YAML)."""
        keys = {key.id: key for key in stored}
        for key_id in self._unsaved:
            if key_id in self._keys:
                keys[key_id] = self._keys[key_id]
        for key_id, key in self._keys.items():  # not in the store yet (never saved)
            keys.setdefault(key_id, key)
        self._keys = keys
        self._first = None

    def _cache(self, key: KeyRecord) -> None:
        if self._keys.get(key.id) != key:
            self._keys[key.id] = key
            self._unsaved.add(key.id)
            self._first = None

    def apply_config(self, records: Iterable[KeyRecord]) -> None:
        """The YAML's keys, live at once; keys once declared there and no longer there stop
        working (kept for history). ``save_config`` writes the changes."""
        declared = set()
        for record in records:
            existing = self._keys.get(record.id)
            created = existing.created_at if existing else record.created_at
            self._cache(replace(record, created_at=created, source="config"))
            declared.add(record.id)
        for key in list(self._keys.values()):
            if key.source == "config" and key.id not in declared and key.active:
                self._cache(replace(key, active=False))

    async def save_config(self) -> None:
        """Write the configuration keys ``apply_config`` changed (their latest version). If the
        store refuses, logs an error and keeps them for the next call."""
        while self._unsaved:
            key_id = self._unsaved.pop()
            try:
                await self._store.put_key(self._keys[key_id])
            except StoreUnavailable as exc:
                self._unsaved.add(key_id)
                logs.event(_log, "configuration keys not saved (live in memory; the next "
                           "start saves them)", logging.ERROR, keys=sorted(self._unsaved),
                           error=exc.message)
                return
