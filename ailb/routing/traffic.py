"""Traffic weights set at runtime (MarchProxy's blue/green RPCs): a *version* is a deployment,
its weight (0-100) replaces the YAML weight in routing, and 0 takes it out of rotation while any
other candidate has a weight. Kept in ``traffic.json`` under the data dir, with the history that
``Rollback`` goes back through."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ailb.errors import ConfigError, InvalidRequest
from ailb.files import write_json

FILE = "traffic.json"


class TrafficWeights:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / FILE
        self._weights: dict[str, int] = {}
        self._history: list[dict[str, int]] = []
        if self._path.exists():
            try:
                saved = json.loads(self._path.read_text("utf-8"))
                self._weights = {str(k): int(v) for k, v in saved["weights"].items()}
                self._history = [{str(k): int(v) for k, v in h.items()}
                                 for h in saved["history"]]
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ConfigError(str(self._path), f"cannot be read: {exc}") from exc

    def weights(self) -> Mapping[str, int]:
        return dict(self._weights)

    def _save(self, weights: dict[str, int], history: list[dict[str, int]]) -> None:
        write_json(self._path, {"weights": weights, "history": history[-20:]})

    def assign(self, updates: Mapping[str, int], known: set[str]) -> None:
        for name, weight in updates.items():
            if name not in known:
                raise InvalidRequest(f"version {name!r} is not a configured deployment",
                                     param="version")
            if not 0 <= weight <= 100:
                raise InvalidRequest("weight must be from 0 to 100", param="weight")
        history = [*self._history, dict(self._weights)]
        weights = {**self._weights, **updates}
        self._save(weights, history)  # on disk first, then live
        self._weights, self._history = weights, history

    def promote(self, version: str, known: set[str]) -> None:
        """All traffic to ``version``: 100 for it, 0 for every other deployment."""
        self.assign({name: 100 if name == version else 0 for name in known}, known)

    def rollback(self) -> bool:
        """The weights before the last change. False when there is no history."""
        if not self._history:
            return False
        weights, history = self._history[-1], self._history[:-1]
        self._save(weights, history)
        self._weights, self._history = weights, history
        return True
