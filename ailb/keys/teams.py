"""The teams AILB knows, cached in memory (every admission of a key in a team looks it up) and
kept in the store, with the team fields of admin API bodies and the team's public view.

Teams are reloaded with the keys (:meth:`ailb.keys.registry.KeyRegistry.refresh_forever`):
the store's ``keys_version`` moves when a team is put or deleted too. A change made through the
admin API is in the store before it is live here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from msgspec import UNSET

from ailb.accounting.store import Store
from ailb.errors import Conflict, InvalidRequest, NotFound
from ailb.keys.records import TeamRecord, first_created
from ailb.schemas.admin import TeamCreate, TeamUpdate
from ailb.schemas.check import conform

FIELDS: Final = ("description", "rpm_limit", "tpm_limit", "max_parallel_requests",
                 "monthly_budget_usd", "metadata")


def parse_team(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """TeamRecord fields (``id`` too when ``creating``) from a JSON object, held to
    :class:`~ailb.schemas.admin.TeamCreate` or :class:`~ailb.schemas.admin.TeamUpdate`.
    Raises InvalidRequest naming the field."""
    shape = conform(dict(body), TeamCreate if creating else TeamUpdate)
    out = {name: getattr(shape, name) for name in (("id", *FIELDS) if creating else FIELDS)
           if getattr(shape, name) is not UNSET}
    if out.get("monthly_budget_usd") is not None:
        out["monthly_budget_usd"] = float(out["monthly_budget_usd"])
    return out


def team_view(team: TeamRecord, spend_usd: float, keys: int) -> dict[str, Any]:
    return {"object": "team", "id": team.id, "description": team.description,
            "created_at": team.created_at.isoformat(), "rpm_limit": team.rpm_limit,
            "tpm_limit": team.tpm_limit, "max_parallel_requests": team.max_parallel_requests,
            "monthly_budget_usd": team.monthly_budget_usd, "metadata": dict(team.metadata),
            "spend_usd": round(spend_usd, 6), "keys": keys}


class TeamRegistry:
    def __init__(self, store: Store, clock: Callable[[], datetime],
                 teams: Iterable[TeamRecord] = ()) -> None:
        self._store = store
        self._clock = clock
        self._teams = {team.id: team for team in teams}
        self._first: tuple[int, frozenset[str]] | None = None  # first_ids's last answer

    def first_ids(self, limit: int) -> frozenset[str]:
        """The ``limit`` teams created first (their per-team metric labels)."""
        if self._first is None or self._first[0] != limit:
            self._first = (limit, first_created(self._teams.values(), limit))
        return self._first[1]

    def get(self, team_id: str) -> TeamRecord | None:
        return self._teams.get(team_id)

    def require(self, team_id: str) -> TeamRecord:
        team = self._teams.get(team_id)
        if team is None:
            raise NotFound(f"No team with id `{team_id}`.", param="team_id",
                           code="team_not_found")
        return team

    def require_known(self, team_id: str) -> None:
        """For a key written through the admin API: its team must exist ("" is no team).
        Raises InvalidRequest."""
        if team_id and team_id not in self._teams:
            raise InvalidRequest(f"No team with id `{team_id}`: create it first "
                                 "(POST /admin/teams).", param="team", code="team_not_found")

    def all(self) -> list[TeamRecord]:
        return sorted(self._teams.values(), key=lambda t: (t.created_at, t.id))

    async def create(self, fields: Mapping[str, Any]) -> TeamRecord:
        """Raises Conflict (the id is taken) or StoreUnavailable. The caller holds the
        registry's lock."""
        team_id = str(fields["id"])
        if team_id in self._teams:
            raise Conflict(f"A team with id `{team_id}` exists already.", param="id",
                           code="team_exists")
        team = TeamRecord(id=team_id, created_at=self._clock(),
                          **{k: v for k, v in fields.items() if k != "id"})
        await self._store.put_team(team)
        self._teams[team.id] = team
        self._first = None
        return team

    async def update(self, team_id: str, fields: Mapping[str, Any]) -> TeamRecord:
        """Raises NotFound or StoreUnavailable. The caller holds the registry's lock."""
        team = replace(self.require(team_id), **fields)
        await self._store.put_team(team)
        self._teams[team.id] = team
        return team

    async def delete(self, team_id: str) -> TeamRecord:
        """Raises NotFound or StoreUnavailable. The caller holds the registry's lock (and has
        checked that no active key names the team)."""
        team = self.require(team_id)
        await self._store.delete_team(team_id)
        self._teams.pop(team_id, None)
        self._first = None
        return team

    def replace_all(self, teams: Iterable[TeamRecord]) -> None:
        """The store's teams (another gateway changed them)."""
        self._teams = {team.id: team for team in teams}
        self._first = None
