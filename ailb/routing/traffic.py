"""Traffic weights set at runtime (MarchProxy's blue/green RPCs): a *version* is a deployment,
its weight (0-100) replaces the YAML weight in routing, and 0 takes it out of rotation while any
other candidate has a weight. Kept in ``traffic.json`` under the data dir, with the history that
``Rollback`` goes back through.

Changes are made one at a time under a lock, each from the weights as they are when its turn
comes: written in a worker thread first, then live."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import trio

from ailb.errors import ConfigError, InvalidRequest
from ailb.files import write_json_in_thread

FILE = "traffic.json"


class TrafficWeights:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / FILE
        self._weights: dict[str, int] = {}
        self._history: list[dict[str, int]] = []
        self._changing = trio.Lock()  # one change at a time: file, then live state
        self._weights, self._history = self._read()

    @property
    def path(self) -> Path:
        return self._path

    def _read(self) -> tuple[dict[str, int], list[dict[str, int]]]:
        """Weights and history in the file (none without one). Raises ConfigError."""
        if not self._path.exists():
            return {}, []
        try:
            saved = json.loads(self._path.read_text("utf-8"))
            return ({str(k): int(v) for k, v in saved["weights"].items()},
                    [{str(k): int(v) for k, v in h.items()} for h in saved["history"]])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(str(self._path), f"cannot be read: {exc}") from exc

    async def refresh(self) -> bool:
        """Take the file as it is now (another worker process changed it). True when the live
        weights changed. Raises ConfigError when the file cannot be read."""
        async with self._changing:
            weights, history = await trio.to_thread.run_sync(self._read)
            changed = weights != self._weights
            self._weights, self._history = weights, history
            return changed

    def weights(self) -> Mapping[str, int]:
        return dict(self._weights)

    async def _commit(self, weights: dict[str, int], history: list[dict[str, int]]) -> None:
        """On disk first, then live; shielded: once the file is written, the change is live.
        Raises GatewayError (500) when the file cannot be written (nothing changes then)."""
        with trio.CancelScope(shield=True):
            await write_json_in_thread(self._path, {"weights": weights, "history": history[-20:]})
            self._weights, self._history = weights, history

    async def assign(self, updates: Mapping[str, int], known: set[str]) -> None:
        """New weights for some versions. Raises InvalidRequest for an unknown version or a
        weight out of 0-100, GatewayError (500) when the file cannot be written."""
        for name, weight in updates.items():
            if name not in known:
                raise InvalidRequest(f"version {name!r} is not a configured deployment",
                                     param="version")
            if not 0 <= weight <= 100:
                raise InvalidRequest("weight must be from 0 to 100", param="weight")
        async with self._changing:
            await self._commit({**self._weights, **updates},
                               [*self._history, dict(self._weights)])

    async def promote(self, version: str, known: set[str]) -> None:
        """All traffic to ``version``: 100 for it, 0 for every other deployment. Raises as
        :meth:`assign`."""
        await self.assign({name: 100 if name == version else 0 for name in known}, known)

    async def rollback(self) -> bool:
        """The weights before the last change. False when there is no history. Raises
        GatewayError (500) when the file cannot be written."""
        async with self._changing:
            if not self._history:
                return False
            await self._commit(self._history[-1], self._history[:-1])
            return True
