"""The admin API for teams (``/admin/teams``) and the spend report (``/admin/spend``): only the
admin key may call it. The rules are in :mod:`ailb.keys.teams`, :mod:`ailb.accounting.teams`
and :mod:`ailb.accounting.spend_report`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final

from quart import Response, request

from ailb.accounting import spend_report, teams
from ailb.accounting.periods import period_start
from ailb.audit.entry import diff

# the admin door's own helpers: one admin check, one JSON answer, one body reader
from ailb.http_api.admin import admin_call, audited, json_answer, read_body
from ailb.keys.fields import spend_view
from ailb.keys.records import TeamRecord
from ailb.keys.teams import parse_team, team_view
from ailb.pipeline.services import Services

_DAY: Final = timedelta(days=1)


def _audited_view(team: TeamRecord | None) -> dict[str, Any] | None:
    """A team's own fields, for the audit log's diff (not its spend or key count)."""
    if team is None:
        return None
    return {k: v for k, v in team_view(team, 0.0, 0).items()
            if k not in ("object", "spend_usd", "keys")}


def routes(services: Services) -> list[tuple[str, str, Callable[..., Awaitable[Response]],
                                             list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""
    keys = services.keys
    gate = services.gate

    async def view(team: TeamRecord) -> dict[str, Any]:
        spent = await gate.spent(teams.subject(team.id), gate.period())
        return team_view(team, spent, len(keys.members(team.id)))

    async def create() -> Response:
        async def work() -> Response:
            team = await keys.create_team(parse_team(await read_body(), creating=True))
            await audited(services, "team.create", team.id, diff(None, _audited_view(team)))
            return json_answer(await view(team), 201)
        return await admin_call(services, work, "team.create")

    async def list_teams() -> Response:
        async def work() -> Response:
            return json_answer({"object": "list",
                                  "data": [await view(t) for t in keys.teams.all()]})
        return await admin_call(services, work)

    async def get_team(team_id: str) -> Response:
        async def work() -> Response:
            return json_answer(await view(keys.teams.require(team_id)))
        return await admin_call(services, work)

    async def patch_team(team_id: str) -> Response:
        async def work() -> Response:
            before = keys.teams.require(team_id)
            fields = parse_team(await read_body(), creating=False)
            team = await keys.update_team(team_id, fields)
            await audited(services, "team.update", team_id,
                          diff(_audited_view(before), _audited_view(team)))
            return json_answer(await view(team))
        return await admin_call(services, work, "team.update", team_id)

    async def delete_team(team_id: str) -> Response:
        async def work() -> Response:
            team = await keys.delete_team(team_id)
            await audited(services, "team.delete", team.id, diff(_audited_view(team), None))
            return json_answer({"object": "team.deleted", "id": team.id, "deleted": True})
        return await admin_call(services, work, "team.delete", team_id)

    async def usage(team_id: str) -> Response:
        async def work() -> Response:
            team = keys.teams.require(team_id)
            period = gate.period()
            spent = await gate.spent(teams.subject(team.id), period)
            since = period_start(gate.wall_now(), services.settings.accounting.period)
            rows = await gate.report(
                since, gate.wall_now() + _DAY, ["day", "model"], {"team": team.id})
            return json_answer(spend_view("team", team.id, team.monthly_budget_usd, period,
                                             spent, rows))
        return await admin_call(services, work)

    async def spend() -> Response:
        async def work() -> Response:
            query = spend_report.parse_query(request.args, gate.wall_now().date())
            stored = await gate.report(
                query.since, query.until, query.fields, query.filters)
            rows = spend_report.rows(query, stored, lambda key_id: _name(key_id))
            if query.csv:
                return Response(spend_report.as_csv(query, rows), content_type="text/csv",
                                headers={"content-disposition":
                                         f'attachment; filename="spend-{query.start}-'
                                         f'{query.end}.csv"'})
            return json_answer(spend_report.as_json(query, rows))
        return await admin_call(services, work)

    def _name(key_id: str) -> str:
        key = keys.get(key_id)
        return key.name if key is not None else ""

    return [
        ("/admin/teams", "admin_create_team", create, ["POST"]),
        ("/admin/teams", "admin_list_teams", list_teams, ["GET"]),
        ("/admin/teams/<team_id>", "admin_get_team", get_team, ["GET"]),
        ("/admin/teams/<team_id>", "admin_patch_team", patch_team, ["PATCH"]),
        ("/admin/teams/<team_id>", "admin_delete_team", delete_team, ["DELETE"]),
        ("/admin/teams/<team_id>/usage", "admin_team_usage", usage, ["GET"]),
        ("/admin/spend", "admin_spend", spend, ["GET"]),
    ]
