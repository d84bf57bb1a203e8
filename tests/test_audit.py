"""The audit log: no secret can reach an entry (properties), admin actions over HTTP and gRPC
are recorded with who, where and what changed (newest first, paged, filtered), callers that are
not the admin are never recorded, and a store that refuses the write is logged and counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from ailb.audit.entry import (
    CLIENT_HEADER,
    MAX_CLIENT_HINT,
    REDACTED,
    client_hint,
    diff,
    is_secret,
    new_entry,
    redact,
)
from ailb.audit.log import AuditLog, cli_actor
from ailb.grpc_api.gen.marchproxy import module_pb2 as pb
from ailb.grpc_api.gen.marchproxy import types_pb2 as t
from ailb.keys.store import SqliteStore
from ailb.metrics import Metrics
from tests.conftest import StartGateway, auth
from tests.test_grpc import call

WHEN = datetime(2026, 12, 6, 8, tzinfo=UTC)
SECRET = "sk-THE-SECRET-VALUE-42"
SECRET_NAMES = ("key", "secret_hash", "api_key", "OPENAI_API_KEY", "password", "token",
                "Authorization", "admin_key", "client_secret", "db_password", "refresh_token")

# JSON-like values in which a secret-named field anywhere holds the secret
_plain = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
_names = st.text(min_size=1, max_size=8).filter(lambda n: SECRET not in n)
_values = st.recursive(
    _plain,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(_names, inner, max_size=3),
        st.dictionaries(st.sampled_from(SECRET_NAMES), st.just(SECRET), min_size=1,
                        max_size=2).flatmap(
            lambda secrets: st.dictionaries(_names, inner, max_size=2).map(
                lambda rest: {**rest, **secrets}))),
    max_leaves=12)
_records = st.dictionaries(_names, _values, max_size=4).flatmap(
    lambda rest: st.sampled_from(SECRET_NAMES).map(lambda name: {**rest, name: SECRET}))


@given(_values)
def test_redact_leaves_no_secret_at_any_depth(value: Any) -> None:
    assert SECRET not in json.dumps(redact(value))


@given(st.one_of(st.none(), _records), st.one_of(st.none(), _records))
def test_diff_and_entries_never_hold_a_secret(before: Any, after: Any) -> None:
    changes = diff(before, after)
    entry = new_entry(WHEN, actor="a", door="http", action="key.update", changes=changes)
    assert SECRET not in json.dumps(entry.view())
    # and what the caller passes as changes is redacted too
    raw = new_entry(WHEN, actor="a", door="cli", action="x", changes=after)
    assert SECRET not in json.dumps(raw.view())


def test_diff_names_what_changed_and_says_a_secret_changed_without_its_value() -> None:
    before = {"name": "a", "rpm_limit": 5, "secret_hash": "h1", "team": None}
    after = {"name": "a", "rpm_limit": 9, "secret_hash": "h2", "team": "t"}
    assert diff(before, after) == {"rpm_limit": {"from": 5, "to": 9},
                                   "secret_hash": {"from": REDACTED, "to": REDACTED},
                                   "team": {"from": None, "to": "t"}}
    assert diff(None, {"name": "n", "owner": None}) == {"name": {"from": None, "to": "n"}}
    assert not any(is_secret(n) for n in ("max_tokens", "key_id", "tpm_limit", "name",
                                          "rag_collections", "monkey", "keys"))
    assert all(is_secret(n) for n in SECRET_NAMES)


async def test_a_store_that_refuses_the_write_is_logged_and_counted(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "ailb.db")
    metrics = Metrics()
    log = AuditLog(store, metrics.audit_write_failures)
    recorded = await log.record(actor=cli_actor(), door="cli", action="key.create",
                                changes={"name": {"from": None, "to": "n"}})
    assert recorded is not None and recorded.id == 1 and recorded.actor.startswith("cli:")
    assert (await log.page())["data"] == [recorded.view()]
    await store.aclose()  # every call now fails (sqlite3: closed database)
    assert await log.record(actor="a", door="cli", action="key.create", target="k") is None
    body = metrics.render(None)[0].decode()
    assert "ailb_audit_write_failures_total 1.0" in body


async def _audit(http: httpx.AsyncClient, url: str, **params: Any) -> dict[str, Any]:
    response = await http.get(f"{url}/admin/audit", headers=auth(), params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_http_admin_actions_are_recorded_newest_first_without_secrets(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway()).http_url
    created = await http.post(f"{url}/admin/keys", headers=auth(),
                              json={"name": "ana", "rpm_limit": 5,
                                    "metadata": {"api_key": SECRET}})
    assert created.status_code == 201
    key_id, secret = created.json()["id"], created.json()["key"]
    await http.patch(f"{url}/admin/keys/{key_id}", headers=auth(),
                     json={"rpm_limit": 9, "owner": "bo"})
    bad = await http.patch(f"{url}/admin/keys/{key_id}", headers=auth(), json={"rpm": 3})
    assert bad.status_code == 400
    rotated = (await http.post(f"{url}/admin/keys/{key_id}/rotate", headers=auth())).json()
    await http.delete(f"{url}/admin/keys/{key_id}", headers=auth())
    # not the admin: refused and never recorded (an anonymous client cannot fill the log)
    assert (await http.post(f"{url}/admin/keys", json={"name": "x"})).status_code == 401
    assert (await http.delete(f"{url}/admin/keys/{key_id}",
                              headers=auth(rotated["key"]))).status_code in (401, 403)

    page = await _audit(http, url)
    text = json.dumps(page)
    for leaked in (secret, rotated["key"], SECRET, secret.rsplit("-", 1)[-1]):
        assert leaked not in text
    data = page["data"]
    assert [(e["action"], e["outcome"]) for e in data] == [
        ("key.revoke", "ok"), ("key.rotate", "ok"), ("key.update", "refused"),
        ("key.update", "ok"), ("key.create", "ok")]
    assert page["has_more"] is False
    assert all((e["actor"], e["door"], e["address"], e["target"]) ==
               ("admin-key", "http", "127.0.0.1", key_id) for e in data)
    assert [e["id"] for e in data] == sorted((e["id"] for e in data), reverse=True)
    revoke, rotate, refused, update, create = data
    assert revoke["changes"] == {"active": {"from": True, "to": False}}
    assert rotate["changes"] == {"secret_hash": REDACTED}  # it changed; nothing of it shown
    assert refused["changes"]["error"] and "rpm" in refused["changes"]["error"]
    assert update["changes"] == {"owner": {"from": "", "to": "bo"},
                                 "rpm_limit": {"from": 5, "to": 9}}
    assert create["changes"]["name"] == {"from": None, "to": "ana"}
    assert create["changes"]["metadata"]["to"] == {"api_key": REDACTED}
    datetime.fromisoformat(create["at"])  # RFC 3339

    # pages: `before` an id, `has_more`
    first = await _audit(http, url, limit=2)
    assert [e["id"] for e in first["data"]] == [e["id"] for e in data[:2]]
    assert first["has_more"] is True
    rest = await _audit(http, url, limit=2, before=first["data"][-1]["id"])
    assert [e["id"] for e in rest["data"]] == [e["id"] for e in data[2:4]]
    # filters
    only = await _audit(http, url, action="key.update")
    assert [e["id"] for e in only["data"]] == [refused["id"], update["id"]]
    assert (await _audit(http, url, target="nobody"))["data"] == []
    assert len((await _audit(http, url, target=key_id))["data"]) == 5
    for wrong in ({"limit": 0}, {"limit": 501}, {"before": "x"}, {"action": "a" * 201},
                  {"target": "a\x00"}):
        answer = await http.get(f"{url}/admin/audit", headers=auth(), params=wrong)
        assert answer.status_code == 400 and answer.json()["error"]["param"] in wrong
    assert (await http.get(f"{url}/admin/audit")).status_code == 401


async def test_grpc_changes_are_recorded(start_gateway: StartGateway,
                                         http: httpx.AsyncClient) -> None:
    gw_ = await start_gateway()
    port = gw_.grpc_port
    await call(port, "SetRateLimit", pb.SetRateLimitRequest(limit=t.RateLimit(
        limit_id="cap", target="model:echo-1", requests_per_minute=60, enabled=True)))
    await call(port, "RemoveRateLimit", pb.RemoveRateLimitRequest(limit_id="nope"))
    await call(port, "UpdateRoutes", pb.UpdateRoutesRequest(routes=[t.Route(
        route_id="fast", destination_pattern="echo/echo-1")]))
    await call(port, "DeleteRoute", pb.DeleteRouteRequest(route_id="fast"))
    await call(port, "Scale", pb.ScaleRequest())
    await call(port, "Reload", pb.ReloadRequest())
    await call(port, "GetRateLimits", pb.GetRateLimitsRequest())  # a read: not recorded
    await call(port, "SetTrafficWeight", pb.SetTrafficWeightRequest(version="echo", weight=40))
    await call(port, "SetTrafficWeight", pb.SetTrafficWeightRequest(version="echo", weight=101))
    await call(port, "PromoteVersion", pb.PromoteVersionRequest(version="echo"))
    await call(port, "Rollback", pb.RollbackRequest())
    config = b"LOG_LEVEL: info\nOPENAI_API_KEY: sk-" + SECRET.encode() + b"\n"
    await call(port, "UpdateConfig", pb.UpdateConfigRequest(config=t.ConfigUpdate(
        config_data=config)))  # started without a file: refused, its text never recorded
    page = await _audit(http, gw_.http_url)
    assert SECRET not in json.dumps(page)
    data = page["data"]
    assert [(e["action"], e["target"], e["outcome"], e["changes"]) for e in data[1:5]] == [
        ("version.rollback", "", "ok", {"echo": {"from": 100, "to": 40}}),
        ("version.promote", "echo", "ok", {"echo": {"from": 40, "to": 100}}),
        ("traffic_weight.set", "echo", "refused",
         {"error": "weight must be from 0 to 100", "weight": 101}),
        ("traffic_weight.set", "echo", "ok", {"echo": {"from": 100, "to": 40}})]
    assert (data[0]["action"], data[0]["outcome"]) == ("config.update", "refused")
    assert set(data[0]["changes"]) == {"sha256", "bytes", "error"}
    data = data[5:]
    assert [(e["action"], e["target"], e["outcome"]) for e in data] == [
        ("config.reload", "", "ok"), ("scale", gw_.services.settings.module_id, "refused"),
        ("routes.delete", "fast", "ok"), ("routes.update", "fast", "ok"),
        ("rate_limit.remove", "nope", "refused"), ("rate_limit.set", "cap", "ok")]
    assert all((e["door"], e["actor"], e["address"]) == ("grpc", "admin-key", "127.0.0.1")
               for e in page["data"])
    assert data[-1]["changes"]["requests_per_minute"] == 60
    assert data[3]["changes"]["routes"][0]["destination_pattern"] == "echo/echo-1"


@given(st.text(max_size=300))
def test_a_client_hint_is_short_and_plain(value: str) -> None:
    hint = client_hint(value)
    assert len(hint) <= MAX_CLIENT_HINT
    assert all(c.isascii() and (c.isalnum() or c in "._:@+-") for c in hint)
    assert client_hint("cli:alice") == "cli:alice" and client_hint(None) == ""


async def test_the_clients_word_about_itself_is_a_sanitized_hint_in_the_actor(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway()).http_url
    odd = 'cli:eve) {"actor": "root"}\t' + "x" * 100
    said = {"cli:alice": "admin-key (cli:alice)",
            odd: "admin-key (cli:eve____actor_:__root___" + "x" * 37 + ")", "": "admin-key"}
    for n, header in enumerate(said):
        made = await http.post(f"{url}/admin/keys", headers={**auth(), CLIENT_HEADER: header},
                               json={"name": f"k{n}"})
        assert made.status_code == 201
    page = (await http.get(f"{url}/admin/audit?action=key.create", headers=auth())).json()
    assert [e["actor"] for e in reversed(page["data"])] == list(said.values())
    assert len(page["data"][1]["actor"]) == len("admin-key ()") + MAX_CLIENT_HINT
