"""Requests larger than a key's limits, and numbers of any size, through the real HTTP door:
a request that can never fit the key's TPM is refused at once (429, no Retry-After, nothing
taken), and no number a client sends makes a 5xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, StartGateway, auth
from tests.test_keys import HI, PRICED, create_key

PROMPT = 7  # "hi" through echo: the prompt estimate (see tests/test_keys.py)


async def _post(http: httpx.AsyncClient, url: str, key: str, body: dict[str, Any],
                path: str = "/v1/chat/completions") -> httpx.Response:
    # json.dumps writes integers of any size, as a client in any language may send them
    return await http.post(f"{url}{path}", content=json.dumps(body),
                           headers={**auth(key), "content-type": "application/json"})


async def test_a_request_larger_than_the_whole_tpm_is_refused_at_once(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway()).http_url
    key = (await create_key(http, url, tpm_limit=60))["key"]  # a token back per second
    refused = await _post(http, url, key, {**HI, "max_tokens": 3000})
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "tpm_limit_exceeded")
    assert f"limit 60, requested {PROMPT + 3000} " in error["message"]
    assert "retrying will not help" in error["message"]
    # waiting cannot help: no Retry-After, and SDKs are told not to retry
    assert "retry-after" not in refused.headers and "retry-after-ms" not in refused.headers
    assert refused.headers["x-should-retry"] == "false"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "60"  # nothing was taken
    n_times = await _post(http, url, key, {**HI, "max_tokens": 20, "n": 3})
    assert n_times.status_code == 429 and "requested 67 " in n_times.json()["error"]["message"]
    # the same over /v1/messages (Anthropic's max_tokens is required)
    messages = await _post(http, url, key, {**HI, "max_tokens": 5000}, "/v1/messages")
    assert messages.status_code == 429, messages.text
    assert "limit 60," in messages.json()["error"]["message"]
    assert "retry-after" not in messages.headers
    # what fits the whole limit passes (its unused tokens come back when it is settled)...
    fits = await _post(http, url, key, {**HI, "max_tokens": 60 - PROMPT})
    assert fits.status_code == 200, fits.text
    # ...and the same again must only wait for the 8 tokens the first one used (8 s)
    again = await _post(http, url, key, {**HI, "max_tokens": 60 - PROMPT})
    assert again.status_code == 429 and "retry-after" in again.headers
    assert "x-should-retry" not in again.headers


async def test_one_large_request_cannot_take_more_than_the_minute(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    """What main allowed: a full bucket let one request of three minutes' tokens through."""
    url = (await start_gateway()).http_url
    key = (await create_key(http, url, tpm_limit=300))["key"]
    assert (await _post(http, url, key, {**HI, "max_tokens": 900})).status_code == 429
    small = await _post(http, url, key, HI)  # main: refused, the bucket 600 tokens short
    assert small.status_code == 200
    assert 292 <= int(small.headers["x-ratelimit-remaining-tokens"]) < 300


async def test_a_request_without_max_tokens_fits_a_small_tpm(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    """The OpenAI SDK's default sends no max_tokens: the reserved default (4096) shrinks to
    what the key's TPM leaves after the prompt, instead of a "too large" refusal."""
    url = (await start_gateway()).http_url
    key = (await create_key(http, url, tpm_limit=2000))["key"]
    no_max = {name: value for name, value in HI.items() if name != "max_tokens"}
    served = await _post(http, url, key, no_max)
    assert served.status_code == 200, served.text
    # it reserved the room the prompt leaves (2000 - 7), not the default 4096
    assert served.headers["x-ratelimit-remaining-tokens"] == "0"
    # a client's own max_tokens is never lowered: too large stays too large
    too_large = await _post(http, url, key, {**no_max, "max_tokens": 4096})
    assert too_large.status_code == 429 and "limit 2000" in too_large.json()["error"]["message"]


HUGE = [10**400, 2**63, 2**64 + 1, 2**53 + 1]


@pytest.mark.parametrize("fields", [
    {}, {"tpm_limit": 100_000}, {"monthly_budget_usd": 5.0},
    {"tpm_limit": 2**53, "rpm_limit": 2**53, "monthly_budget_usd": 1e15}])
async def test_no_number_a_client_sends_makes_a_5xx(
        start_gateway: StartGateway, http: httpx.AsyncClient, fields: dict[str, Any]) -> None:
    url = (await start_gateway(**PRICED)).http_url
    key = (await create_key(http, url, **fields))["key"] if fields else \
        (await create_key(http, url))["key"]
    bodies = [{**HI, "max_tokens": n} for n in HUGE]
    bodies += [{**HI, "max_completion_tokens": n} for n in HUGE[:2]]
    bodies += [{**HI, "max_tokens": 2, "n": n} for n in HUGE[:2]]
    for caller in (key, ADMIN_KEY):
        for body in bodies:
            for path in ("/v1/chat/completions", "/v1/messages"):
                reply = await _post(http, url, caller, body, path)
                assert reply.status_code < 500, (caller == ADMIN_KEY, body, path, reply.text)
                if reply.status_code >= 400:
                    assert reply.json().get("error") or reply.json().get("type") == "error"
    # and the key still works, its spend sane: nothing huge is left reserved
    assert (await _post(http, url, key, HI)).status_code == 200
    usage = (await http.get(f"{url}/admin/keys/{(await _key_id(http, url, key))}/usage",
                            headers=auth())).json()
    assert 0 <= usage["spend_usd"] < 100


async def _key_id(http: httpx.AsyncClient, url: str, key: str) -> str:
    listed = (await http.get(f"{url}/admin/keys", headers=auth())).json()["data"]
    return next(k["id"] for k in listed if key.startswith(f"sk-ailb-{k['id']}-"))
