"""Aliases added at runtime (MarchProxy's ``UpdateRoutes``), on top of the YAML's.

They are kept in ``routes.json`` under the data dir, so they survive restarts and reloads; a
runtime alias with the name of a YAML alias replaces it until it is deleted again. Changes are
made one at a time under a lock, each from the aliases as they are when its turn comes: written
in a worker thread first, then live.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import trio

from ailb.config.schema import STRATEGIES, AliasSettings, AliasTarget
from ailb.errors import ConfigError, InvalidRequest
from ailb.files import write_json_in_thread

FILE = "routes.json"


def parse_targets(text: str, deployments: set[str]) -> tuple[AliasTarget, ...]:
    """``dep/model,dep/model`` -> targets. Raises InvalidRequest naming what is wrong."""
    targets = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        deployment, sep, model = item.partition("/")
        if not sep or not model:
            raise InvalidRequest(f"{item!r} must look like deployment/model",
                                 param="destination_pattern")
        if deployment not in deployments:
            raise InvalidRequest(f"deployment {deployment!r} is not configured",
                                 param="destination_pattern")
        targets.append(AliasTarget(deployment, model))
    if not targets:
        raise InvalidRequest("destination_pattern lists no deployment/model",
                             param="destination_pattern")
    return tuple(targets)


class RuntimeRoutes:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / FILE
        self._aliases: dict[str, AliasSettings] = {}
        self._changing = trio.Lock()  # one change at a time: file, then live state
        self._aliases = self._read()

    @property
    def path(self) -> Path:
        return self._path

    def _read(self) -> dict[str, AliasSettings]:
        """The aliases in the file (none without one). Raises ConfigError."""
        aliases: dict[str, AliasSettings] = {}
        if self._path.exists():
            try:
                for item in json.loads(self._path.read_text("utf-8")):
                    aliases[item["name"]] = AliasSettings(
                        item["name"], tuple(AliasTarget(d, m) for d, m in item["targets"]),
                        item.get("strategy"), item.get("hedge_ms"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(str(self._path), f"cannot be read: {exc}") from exc
        return aliases

    async def refresh(self) -> bool:
        """Take the file as it is now (another worker process changed it). True when the live
        aliases changed. Raises ConfigError when the file cannot be read."""
        async with self._changing:
            aliases = await trio.to_thread.run_sync(self._read)
            if aliases == self._aliases:
                return False
            self._aliases = aliases
            return True

    def aliases(self) -> Mapping[str, AliasSettings]:
        return dict(self._aliases)

    async def _commit(self, aliases: dict[str, AliasSettings]) -> None:
        """On disk first, then live; shielded: once the file is written, the change is live.
        Raises GatewayError (500) when the file cannot be written (nothing changes then)."""
        data = [{"name": a.name, "targets": [[t.deployment, t.model] for t in a.targets],
                 "strategy": a.strategy, "hedge_ms": a.hedge_ms}
                for a in aliases.values()]
        with trio.CancelScope(shield=True):
            await write_json_in_thread(self._path, data)
            self._aliases = aliases

    async def put(self, aliases: list[AliasSettings], replace_all: bool) -> None:
        """Add or replace aliases (all of them with ``replace_all``). Raises InvalidRequest for
        an unknown strategy, GatewayError (500) when the file cannot be written."""
        for alias in aliases:
            if alias.strategy is not None and alias.strategy not in STRATEGIES:
                raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}",
                                     param="metadata.strategy")
        async with self._changing:
            updated = {} if replace_all else dict(self._aliases)
            updated.update({a.name: a for a in aliases})
            await self._commit(updated)

    async def delete(self, name: str) -> bool:
        """Delete a runtime alias. False when there is none of that name. Raises GatewayError
        (500) when the file cannot be written."""
        async with self._changing:
            if name not in self._aliases:
                return False
            await self._commit({k: v for k, v in self._aliases.items() if k != name})
            return True
