"""The web console's session rules over plain HTTP (no browser): sign-in with the admin key
(through the failed-authentication throttle), the cookie's flags, the CSRF token and the Origin
check on every change, sign-out, idle and absolute expiry; and the two admin reads the console
added (recent requests, the masked configuration)."""

from __future__ import annotations

import sqlite3
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import trio

from ailb.console.sessions import COOKIE, CSRF_HEADER, SECURE_COOKIE, id_hash
from ailb.supervisor import Running, run
from tests.conftest import ADMIN_KEY, StartGateway, auth, make_settings


async def sign_in(http: httpx.AsyncClient, url: str) -> tuple[str, str, SimpleCookie]:
    """(session id, CSRF token, the Set-Cookie header parsed)."""
    reply = await http.post(f"{url}/console/session", json={"admin_key": ADMIN_KEY})
    assert reply.status_code == 200, reply.text
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(reply.headers["set-cookie"])
    http.cookies.clear()  # the tests send the cookie themselves
    return cookie[COOKIE].value, reply.json()["csrf_token"], cookie


def jar(session_id: str, **headers: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={session_id}", **headers}


def code(reply: httpx.Response) -> Any:
    return reply.json()["error"]["code"]


async def test_sign_in_sets_a_strict_http_only_cookie_and_writes_need_the_csrf_token(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw = await start_gateway()
    url = gw.http_url
    session_id, csrf, cookie = await sign_in(http, url)
    morsel = cookie[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain http here; https (the request's scheme) sets it
    assert len(session_id) >= 43  # 256 random bits, URL-safe base64

    # the store holds the hash of the id, never the id itself
    db = sqlite3.connect(gw.services.settings.data_dir / "ailb.db")
    try:
        held = [row[0] for row in db.execute("SELECT id_hash FROM console_sessions")]
    finally:
        db.close()
    assert held == [id_hash(session_id)]

    # reads need only the session
    assert (await http.get(f"{url}/admin/keys", headers=jar(session_id))).status_code == 200
    assert (await http.get(f"{url}/api/routing/stats",
                           headers=jar(session_id))).status_code == 200
    body = {"name": "from-console"}
    missing = await http.post(f"{url}/admin/keys", json=body, headers=jar(session_id))
    assert missing.status_code == 403 and code(missing) == "csrf_failed"
    wrong = await http.post(f"{url}/admin/keys", json=body,
                            headers=jar(session_id, **{CSRF_HEADER: "0" * 64}))
    assert wrong.status_code == 403 and code(wrong) == "csrf_failed"
    foreign = await http.post(f"{url}/admin/keys", json=body, headers=jar(
        session_id, **{CSRF_HEADER: csrf, "origin": "https://evil.example"}))
    assert foreign.status_code == 403 and code(foreign) == "origin_mismatch"
    host = url.removeprefix("http://")
    made = await http.post(f"{url}/admin/keys", json=body, headers=jar(
        session_id, **{CSRF_HEADER: csrf, "origin": f"http://{host}"}))
    assert made.status_code == 201 and made.json()["key"].startswith("sk-ailb-")
    # the CSRF token is the session's: the page can read it again after a reload
    again = await http.get(f"{url}/console/session", headers=jar(session_id))
    assert again.status_code == 200 and again.json()["csrf_token"] == csrf

    # a virtual key is no admin, with or without a cookie beside it
    virtual = await http.get(f"{url}/admin/keys", headers={**auth(made.json()["key"]),
                                                            **jar(session_id)})
    assert virtual.status_code == 403


async def test_unknown_cookie_sign_out_and_foreign_sign_in(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw = await start_gateway()
    url = gw.http_url
    unknown = await http.get(f"{url}/admin/keys", headers=jar("not-a-session"))
    assert unknown.status_code == 401 and code(unknown) == "console_session_expired"
    assert (await http.get(f"{url}/console/session")).status_code == 401

    forged = await http.post(f"{url}/console/session", json={"admin_key": ADMIN_KEY},
                             headers={"origin": "https://evil.example"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers

    session_id, csrf, _ = await sign_in(http, url)
    refused = await http.delete(f"{url}/console/session", headers=jar(session_id))
    assert refused.status_code == 403
    out = await http.delete(f"{url}/console/session", headers=jar(session_id,
                                                                   **{CSRF_HEADER: csrf}))
    assert out.status_code == 200 and f"{COOKIE}=;" in out.headers["set-cookie"]
    after = await http.get(f"{url}/admin/keys", headers=jar(session_id))
    assert after.status_code == 401
    # sign-in, sign-out and the console's changes are attributed to the console door
    made = await http.post(f"{url}/admin/keys", json={"name": "by-cookie"}, headers=jar(
        (second := await sign_in(http, url))[0], **{CSRF_HEADER: second[1]}))
    assert made.status_code == 201
    rows = (await http.get(f"{url}/admin/audit", headers=auth())).json()["data"]
    doors = [(row["action"], row["door"], row["target"]) for row in rows]
    assert doors[:4] == [("key.create", "console", made.json()["id"]),
                         ("console.sign_in", "console", ""),
                         ("console.sign_out", "console", ""),
                         ("console.sign_in", "console", "")], doors
    assert (await http.get(f"{url}/console/session", headers=jar(session_id))).status_code == 401


async def test_sessions_expire_when_idle_and_at_their_age_limit(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(console={"session_idle_s": 1.5, "session_max_s": 4})
    url = gw.http_url
    idle, _, cookie = await sign_in(http, url)
    assert cookie[COOKIE]["max-age"] == "4"
    busy, _, _ = await sign_in(http, url)
    started = trio.current_time()
    busy_statuses = []
    while trio.current_time() - started < 5:  # busy: used every 0.5 s, so never idle
        await trio.sleep(0.5)
        reply = await http.get(f"{url}/admin/keys", headers=jar(busy))
        busy_statuses.append((trio.current_time() - started, reply.status_code))
        if 2 <= busy_statuses[-1][0] < 3.5:  # idle past 1.5 s, but not 4 s old yet
            assert (await http.get(f"{url}/admin/keys", headers=jar(idle))).status_code == 401
    assert all(status == 200 for at, status in busy_statuses if at < 3.5), busy_statuses
    assert busy_statuses[-1][1] == 401  # past its 4 s, however busy


async def test_sign_in_goes_through_the_failed_authentication_throttle(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(server={"unready_delay_s": 0, "auth_failure_limit": 3})
    url = gw.http_url
    statuses = [(await http.post(f"{url}/console/session",
                                 json={"admin_key": f"guess-{i}"})).status_code
                for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    # the right key still signs in while the address is throttled (as on every door)
    assert (await http.post(f"{url}/console/session",
                            json={"admin_key": ADMIN_KEY})).status_code == 200
    bad = await http.post(f"{url}/console/session", json={"key": ADMIN_KEY})
    assert bad.status_code == 400


async def test_recent_requests_and_the_masked_configuration(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw = await start_gateway()
    url = gw.http_url
    # a key's team must exist once teams are records (/admin/teams); before that, a 404 here
    await http.post(f"{url}/admin/teams", headers=auth(), json={"id": "blue"})
    made = (await http.post(f"{url}/admin/keys", headers=auth(),
                            json={"name": "r", "team": "blue"})).json()
    chat = await http.post(f"{url}/v1/chat/completions", headers=auth(made["key"]), json={
        "model": "echo-1", "messages": [{"role": "user", "content": "secret prompt words"}]})
    assert chat.status_code == 200
    recent = await http.get(f"{url}/admin/requests/recent?limit=5", headers=auth())
    assert recent.status_code == 200
    [entry] = recent.json()["data"]
    assert entry["key_id"] == made["id"] and entry["team"] == "blue"
    assert entry["model"] == "echo-1" and entry["status"] == 200
    assert entry["request_id"] == chat.headers["x-request-id"]
    assert entry["prompt_tokens"] > 0 and "secret prompt" not in recent.text
    assert entry["at"].endswith("Z") and entry["at"][:4].isdigit()
    assert (await http.get(f"{url}/admin/requests/recent?limit=0",
                           headers=auth())).status_code == 400
    assert (await http.get(f"{url}/admin/requests/recent",
                           headers=auth(made["key"]))).status_code == 403

    config = await http.get(f"{url}/admin/config", headers=auth())
    assert config.status_code == 200
    assert ADMIN_KEY not in config.text
    assert config.json()["settings"]["admin_key"] != ADMIN_KEY
    assert config.json()["settings"]["console"] == {"session_idle_s": 1800.0,
                                                     "session_max_s": 43200.0,
                                                     "secure_cookie": "auto"}


async def test_the_cookie_is_secure_over_https_and_forwarded_headers_are_not_trusted(
        start_gateway: StartGateway) -> None:
    """The request's own scheme decides ``Secure`` (Quart's test client speaks to the same app
    object as if over TLS): ``X-Forwarded-Proto`` over plain http changes nothing."""
    from ailb.http_api.app import create_app

    gw = await start_gateway()
    client = create_app(gw.services).test_client()
    over_tls = await client.post("/console/session", json={"admin_key": ADMIN_KEY},
                                 scheme="https")
    assert over_tls.status_code == 200
    assert "Secure" in over_tls.headers["set-cookie"]
    assert over_tls.headers["set-cookie"].startswith(f"{SECURE_COOKIE}=")
    forwarded = await client.post("/console/session", json={"admin_key": ADMIN_KEY},
                                  headers={"x-forwarded-proto": "https"})
    assert forwarded.status_code == 200
    assert "Secure" not in forwarded.headers["set-cookie"]


def test_the_recent_ring_is_bounded_and_newest_first() -> None:
    from ailb.pipeline.recent import Recent, RecentRequests

    ring = RecentRequests(capacity=3)
    for n in range(5):
        ring.add(Recent(str(n), 1_800_000_000.0 + n, "k", None, "m", None, None, False, 200,
                        1.0, None, None))
    assert [e["request_id"] for e in ring.latest(10)] == ["4", "3", "2"]
    assert [e["request_id"] for e in ring.latest(2)] == ["4", "3"]
    assert ring.latest(1)[0]["at"] == "2027-01-15T08:00:04.000Z"


async def test_a_new_admin_key_ends_the_old_key_s_sessions(tmp_path: Path) -> None:
    """Sessions are tied to the admin key that opened them: after the key is rotated (and the
    gateway restarted on the same store), an old session is refused."""
    async with httpx.AsyncClient(timeout=10) as http:
        async with trio.open_nursery() as first_life:
            running: Running = await first_life.start(run, make_settings(tmp_path))
            session_id, _, _ = await sign_in(http, running.http_url)
            assert (await http.get(f"{running.http_url}/admin/keys",
                                   headers=jar(session_id))).status_code == 200
            running.request_shutdown()
        rotated = "sk-test-admin-key-rotated-9876543210"
        async with trio.open_nursery() as second_life:
            running = await second_life.start(run, make_settings(
                tmp_path, AILB_ADMIN_KEY=rotated))
            old = await http.get(f"{running.http_url}/admin/keys", headers=jar(session_id))
            assert old.status_code == 401 and code(old) == "console_session_expired"
            running.request_shutdown()


async def test_the_admin_can_end_every_console_session(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw = await start_gateway()
    url = gw.http_url
    first, _, _ = await sign_in(http, url)
    second, csrf, _ = await sign_in(http, url)
    # a console session may end them all too (its own with them), with its CSRF token
    assert (await http.delete(f"{url}/admin/console/sessions",
                              headers=jar(second))).status_code == 403
    ended = await http.delete(f"{url}/admin/console/sessions", headers=auth())
    assert ended.status_code == 200
    assert ended.json() == {"object": "console.sessions_revoked", "revoked": 2}
    for session_id in (first, second):
        assert (await http.get(f"{url}/admin/keys", headers=jar(session_id))).status_code == 401
    rows = (await http.get(f"{url}/admin/audit?action=console.sessions_revoked",
                           headers=auth())).json()["data"]
    assert [(r["door"], r["changes"]) for r in rows] == [("http", {"revoked": 2})]
    third, csrf, _ = await sign_in(http, url)
    own = await http.delete(f"{url}/admin/console/sessions", headers=jar(
        third, **{CSRF_HEADER: csrf}))
    assert own.status_code == 200 and own.json()["revoked"] == 1
    assert (await http.get(f"{url}/admin/keys", headers=jar(third))).status_code == 401
    assert (await http.delete(f"{url}/admin/console/sessions",
                              headers=auth("sk-not-the-admin"))).status_code == 401


async def test_behind_a_tls_proxy_the_cookie_can_always_be_secure(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    """CONSOLE__SECURE_COOKIE=always: Secure (and named __Host-...) though AILB itself is
    reached over plain http; only that name is a session then."""
    gw = await start_gateway(console={"secure_cookie": "always"})
    url = gw.http_url
    reply = await http.post(f"{url}/console/session", json={"admin_key": ADMIN_KEY})
    assert reply.status_code == 200
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(reply.headers["set-cookie"])
    http.cookies.clear()
    morsel = cookie[SECURE_COOKIE]
    assert morsel["secure"] and morsel["httponly"] and morsel["path"] == "/"
    assert not morsel["domain"] and COOKIE not in cookie
    session_id = morsel.value
    headers = {"cookie": f"{SECURE_COOKIE}={session_id}"}
    assert (await http.get(f"{url}/admin/keys", headers=headers)).status_code == 200
    plain = await http.get(f"{url}/admin/keys", headers=jar(session_id))
    assert plain.status_code == 401
    out = await http.delete(f"{url}/console/session", headers={
        **headers, CSRF_HEADER: reply.json()["csrf_token"]})
    assert out.status_code == 200 and out.headers["set-cookie"].startswith(f"{SECURE_COOKIE}=;")
