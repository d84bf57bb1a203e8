"""The admin API for virtual keys (``/admin/keys``) and the audit log (``/admin/audit``): only
the admin key may call it. Every change is recorded in the audit log (:mod:`ailb.audit`) before
its answer; a change the admin asked for and that was refused (a field, an unknown key) is
recorded as ``refused``. Callers that are not the admin are never recorded."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response, request
from werkzeug.exceptions import HTTPException

from ailb.accounting.periods import period_start
from ailb.audit.entry import CLIENT_HEADER, MAX_TEXT, diff, with_client_hint
from ailb.audit.log import DEFAULT_PAGE, MAX_PAGE
from ailb.errors import GatewayError, InvalidRequest
from ailb.http_api.admin_auth import current_admin, remember_admin, require_admin
from ailb.http_api.caller import http_caller
from ailb.http_api.errors import error_response, from_http_exception
from ailb.keys.fields import parse_fields, public_view, usage_view
from ailb.keys.records import KeyRecord
from ailb.pipeline.chat_parse import decode_json
from ailb.pipeline.services import Services


def json_answer(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    content_type="application/json")


async def read_body() -> dict[str, Any]:
    try:
        data = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    except HTTPException as exc:
        raise from_http_exception(exc) from exc
    return decode_json(data or b"{}")


async def audited(services: Services, action: str, target: str, changes: dict[str, Any],
                  outcome: str = "ok") -> None:
    """Record an admin action of the current HTTP request in the audit log: the admin as
    :func:`require_admin` let it in (door "console" for a console session, else "http"), its
    address; returns once it is written (or its failure logged and counted)."""
    identity = current_admin()
    actor = identity.actor if identity.door != "http" else \
        with_client_hint(identity.actor, request.headers.get(CLIENT_HEADER))
    await services.audit.record(actor=actor, door=identity.door,
                                address=http_caller().address, action=action, target=target,
                                changes=changes, outcome=outcome)


async def admin_call(services: Services, work: Callable[[], Awaitable[Response]],
                 action: str = "", target: str = "") -> Response:
    """``work`` for the admin (admin key or console session: :func:`require_admin`), with the
    identity kept for the request (:func:`ailb.http_api.admin_auth.current_admin`). With an
    ``action``, a GatewayError from ``work`` (the admin asked, the change was refused) is
    recorded as ``refused``."""
    try:
        remember_admin(await require_admin(services))
    except GatewayError as exc:
        return error_response(exc)
    try:
        return await work()
    except GatewayError as exc:
        if action:
            await audited(services, action, target, {"error": exc.message}, "refused")
        return error_response(exc)


def _with_secret(key: KeyRecord) -> dict[str, Any]:
    """The key's view and its secret's hash: a rotation's diff says the secret changed (the
    audit entry shows it redacted)."""
    return {**public_view(key), "secret_hash": key.secret_hash}


def _filter_arg(name: str) -> str | None:
    """An exact-match filter of ``GET /admin/audit``: at most as long as what entries hold, no
    NUL (PostgreSQL's text has none). Raises InvalidRequest."""
    value = request.args.get(name)
    if value is not None and (len(value) > MAX_TEXT or "\x00" in value):
        raise InvalidRequest(f"'{name}' must be at most {MAX_TEXT} characters, without NUL.",
                             param=name)
    return value


def _page_args() -> tuple[int, int | None]:
    """``limit`` (1..500, default 100) and ``before`` (an entry id) of ``GET /admin/audit``.
    Raises InvalidRequest."""
    values: dict[str, int | None] = {}
    for name, low, high, default in (("limit", 1, MAX_PAGE, DEFAULT_PAGE),
                                     ("before", 1, 2**63 - 1, None)):
        raw = request.args.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            value = low - 1
        if value is not None and not low <= value <= high:
            raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}.",
                                 param=name)
        values[name] = value
    limit = values["limit"]
    assert limit is not None
    return limit, values["before"]


def routes(services: Services) -> list[tuple[str, str, Callable[..., Awaitable[Response]],
                                             list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""
    keys = services.keys

    async def create() -> Response:
        async def work() -> Response:
            fields = parse_fields(await read_body(), creating=True)
            record, secret = await keys.create(fields)
            await audited(services, "key.create", record.id, diff(None, public_view(record)))
            return json_answer({**public_view(record), "key": secret}, 201)
        return await admin_call(services, work, "key.create")

    async def list_keys() -> Response:
        async def work() -> Response:
            return json_answer({"object": "list", "data": [public_view(k) for k in keys.all()]})
        return await admin_call(services, work)

    async def get_key(key_id: str) -> Response:
        async def work() -> Response:
            return json_answer(public_view(keys.require(key_id)))
        return await admin_call(services, work)

    async def patch_key(key_id: str) -> Response:
        async def work() -> Response:
            keys.require(key_id)
            fields = parse_fields(await read_body(), creating=False)
            before = public_view(keys.require(key_id))
            after = public_view(await keys.update(key_id, fields))
            await audited(services, "key.update", key_id, diff(before, after))
            return json_answer(after)
        return await admin_call(services, work, "key.update", key_id)

    async def revoke_key(key_id: str) -> Response:
        async def work() -> Response:
            before = public_view(keys.require(key_id))
            after = public_view(await keys.revoke(key_id))
            await audited(services, "key.revoke", key_id, diff(before, after))
            return json_answer(after)
        return await admin_call(services, work, "key.revoke", key_id)

    async def rotate_key(key_id: str) -> Response:
        async def work() -> Response:
            before = _with_secret(keys.require(key_id))
            record, secret = await keys.rotate(key_id)
            await audited(services, "key.rotate", key_id, diff(before, _with_secret(record)))
            return json_answer({**public_view(record), "key": secret})
        return await admin_call(services, work, "key.rotate", key_id)

    async def usage(key_id: str) -> Response:
        async def work() -> Response:
            key = keys.require(key_id)
            gate = services.gate
            period = gate.period()
            spent = await gate.spent(key.id, period)
            since = period_start(gate.wall_now(), services.settings.accounting.period)
            rows = await gate.usage(key.id, since)
            return json_answer(usage_view(key, period, spent, rows))
        return await admin_call(services, work)

    async def audit_log() -> Response:
        async def work() -> Response:
            limit, before = _page_args()
            return json_answer(await services.audit.page(limit, before, _filter_arg("action"),
                                                   _filter_arg("target")))
        return await admin_call(services, work)

    return [
        ("/admin/audit", "admin_audit", audit_log, ["GET"]),
        ("/admin/keys", "admin_create_key", create, ["POST"]),
        ("/admin/keys", "admin_list_keys", list_keys, ["GET"]),
        ("/admin/keys/<key_id>", "admin_get_key", get_key, ["GET"]),
        ("/admin/keys/<key_id>", "admin_patch_key", patch_key, ["PATCH"]),
        ("/admin/keys/<key_id>", "admin_revoke_key", revoke_key, ["DELETE"]),
        ("/admin/keys/<key_id>/rotate", "admin_rotate_key", rotate_key, ["POST"]),
        ("/admin/keys/<key_id>/usage", "admin_key_usage", usage, ["GET"]),
    ]
