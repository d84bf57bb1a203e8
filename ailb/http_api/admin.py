"""The admin API for virtual keys (``/admin/keys``): only the admin key may call it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request
from werkzeug.exceptions import HTTPException

from ailb.accounting.periods import period_start
from ailb.errors import GatewayError
from ailb.http_api.admin_auth import remember_admin, require_admin
from ailb.http_api.errors import error_response, from_http_exception
from ailb.keys.fields import parse_fields, public_view
from ailb.pipeline.chat_parse import decode_json
from ailb.pipeline.services import Services


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    content_type="application/json")


async def _body() -> dict[str, Any]:
    try:
        data = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    except HTTPException as exc:
        raise from_http_exception(exc) from exc
    return decode_json(data or b"{}")


async def _admin(services: Services, work: Callable[[], Awaitable[Response]]) -> Response:
    """``work`` for the admin (admin key or console session: :func:`require_admin`), with the
    identity kept for the request (:func:`ailb.http_api.admin_auth.current_admin`); a
    GatewayError as its OpenAI-shaped answer."""
    try:
        remember_admin(await require_admin(services))
        return await work()
    except GatewayError as exc:
        return error_response(exc)


def routes(services: Services) -> list[tuple[str, str, Callable[..., Awaitable[Response]],
                                             list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""
    keys = services.keys

    async def create() -> Response:
        async def work() -> Response:
            record, secret = await keys.create(parse_fields(await _body(), creating=True))
            return _json({**public_view(record), "key": secret}, 201)
        return await _admin(services, work)

    async def list_keys() -> Response:
        async def work() -> Response:
            return _json({"object": "list", "data": [public_view(k) for k in keys.all()]})
        return await _admin(services, work)

    async def get_key(key_id: str) -> Response:
        async def work() -> Response:
            return _json(public_view(keys.require(key_id)))
        return await _admin(services, work)

    async def patch_key(key_id: str) -> Response:
        async def work() -> Response:
            fields = parse_fields(await _body(), creating=False)
            return _json(public_view(await keys.update(key_id, fields)))
        return await _admin(services, work)

    async def revoke_key(key_id: str) -> Response:
        async def work() -> Response:
            return _json(public_view(await keys.revoke(key_id)))
        return await _admin(services, work)

    async def rotate_key(key_id: str) -> Response:
        async def work() -> Response:
            record, secret = await keys.rotate(key_id)
            return _json({**public_view(record), "key": secret})
        return await _admin(services, work)

    async def usage(key_id: str) -> Response:
        async def work() -> Response:
            key = keys.require(key_id)
            gate = services.gate
            period = gate.period()
            spent = await gate.spent(key.id, period)
            since = period_start(gate.wall_now(), services.settings.accounting.period)
            rows = await gate.usage(key.id, since)
            budget = key.monthly_budget_usd
            return _json({
                "key_id": key.id, "period": period, "spend_usd": round(spent, 6),
                "budget_usd": budget,
                "budget_remaining_usd": None if budget is None else round(max(0.0, budget -
                                                                              spent), 6),
                "requests": sum(r["requests"] for r in rows),
                "by_day_and_model": rows,
            })
        return await _admin(services, work)

    return [
        ("/admin/keys", "admin_create_key", create, ["POST"]),
        ("/admin/keys", "admin_list_keys", list_keys, ["GET"]),
        ("/admin/keys/<key_id>", "admin_get_key", get_key, ["GET"]),
        ("/admin/keys/<key_id>", "admin_patch_key", patch_key, ["PATCH"]),
        ("/admin/keys/<key_id>", "admin_revoke_key", revoke_key, ["DELETE"]),
        ("/admin/keys/<key_id>/rotate", "admin_rotate_key", rotate_key, ["POST"]),
        ("/admin/keys/<key_id>/usage", "admin_key_usage", usage, ["GET"]),
    ]
