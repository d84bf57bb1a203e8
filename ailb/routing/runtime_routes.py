"""Aliases added at runtime (MarchProxy's ``UpdateRoutes``), on top of the YAML's.

They are kept in ``routes.json`` under the data dir, so they survive restarts and reloads; a
runtime alias with the name of a YAML alias replaces it until it is deleted again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ailb.config_schema import STRATEGIES, AliasSettings, AliasTarget
from ailb.errors import ConfigError, InvalidRequest
from ailb.files import write_json

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
        if self._path.exists():
            try:
                for item in json.loads(self._path.read_text("utf-8")):
                    self._aliases[item["name"]] = AliasSettings(
                        item["name"], tuple(AliasTarget(d, m) for d, m in item["targets"]),
                        item.get("strategy"), item.get("hedge_ms"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(str(self._path), f"cannot be read: {exc}") from exc

    def aliases(self) -> Mapping[str, AliasSettings]:
        return dict(self._aliases)

    def _save(self, aliases: dict[str, AliasSettings]) -> None:
        data = [{"name": a.name, "targets": [[t.deployment, t.model] for t in a.targets],
                 "strategy": a.strategy, "hedge_ms": a.hedge_ms}
                for a in aliases.values()]
        write_json(self._path, data)

    def put(self, aliases: list[AliasSettings], replace_all: bool) -> None:
        for alias in aliases:
            if alias.strategy is not None and alias.strategy not in STRATEGIES:
                raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}",
                                     param="metadata.strategy")
        updated = {} if replace_all else dict(self._aliases)
        updated.update({a.name: a for a in aliases})
        self._save(updated)  # on disk first, then live
        self._aliases = updated

    def delete(self, name: str) -> bool:
        if name not in self._aliases:
            return False
        remaining = {k: v for k, v in self._aliases.items() if k != name}
        self._save(remaining)
        self._aliases = remaining
        return True
