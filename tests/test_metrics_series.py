"""/metrics: the process's own series, no ``*_created`` series, and the per-key and per-team
series, off by default and bounded by METRICS__PER_KEY_LIMIT."""

from __future__ import annotations

import httpx

from ailb.metrics import OTHER, BoundedLabels
from tests.conftest import StartGateway, auth
from tests.test_keys import chat, create_key


def test_bounded_labels_keep_the_first_n() -> None:
    labels = BoundedLabels(2)
    assert [labels.label(v) for v in ("a", "b", "c", "a", "d", "b")] == \
        ["a", "b", OTHER, "a", OTHER, "b"]
    assert BoundedLabels(0).label("a") == OTHER


async def test_process_series_and_no_created_series(start_gateway: StartGateway,
                                                    http: httpx.AsyncClient) -> None:
    url = (await start_gateway()).http_url
    assert (await chat(http, url, "sk-test-admin-key-0123456789")).status_code == 200
    for accept in ("", "application/openmetrics-text; version=1.0.0"):
        body = (await http.get(f"{url}/metrics", headers={"accept": accept})).text
        names = {line.split("{")[0].split(" ")[0] for line in body.splitlines()
                 if line and not line.startswith("#")}
        assert "process_cpu_seconds_total" in names
        assert "process_resident_memory_bytes" in names
        assert "python_info" in names and "ailb_requests_total" in names
        assert not [n for n in names if n.endswith("_created")], accept
    assert "ailb_key_requests" not in body  # off by default: no per-key series at all


async def test_per_key_and_team_series_are_bounded(start_gateway: StartGateway,
                                                   http: httpx.AsyncClient) -> None:
    url = (await start_gateway(METRICS={"per_key_limit": 2},
                               prices={"echo-1": {"input_per_mtok": 12500,
                                                  "output_per_mtok": 12500}})).http_url
    for n in range(3):
        made = await http.post(f"{url}/admin/teams", headers=auth(), json={"id": f"t{n}"})
        assert made.status_code == 201, made.text
    keys = [await create_key(http, url, name=f"k{n}", team=f"t{n}") for n in range(3)]
    for key in keys:
        assert (await chat(http, url, key["key"])).status_code == 200
    assert (await chat(http, url, keys[0]["key"], model="nope")).status_code == 404
    body = (await http.get(f"{url}/metrics")).text
    first, second, third = (k["id"] for k in keys)

    def value(series: str) -> float:
        lines = [line for line in body.splitlines() if line.startswith(series + " ")]
        assert lines, series
        return float(lines[0].rsplit(" ", 1)[1])

    assert value(f'ailb_key_requests_total{{key_id="{first}",status_class="2xx"}}') == 1
    assert value(f'ailb_key_requests_total{{key_id="{first}",status_class="4xx"}}') == 1
    assert value(f'ailb_key_requests_total{{key_id="{second}",status_class="2xx"}}') == 1
    assert value('ailb_key_requests_total{key_id="other",status_class="2xx"}') == 1
    assert third not in body  # the third key counts under "other"
    assert value(f'ailb_key_tokens_total{{direction="completion",key_id="{first}"}}') == 1
    assert value(f'ailb_key_tokens_total{{direction="prompt",key_id="{first}"}}') == 7
    assert abs(value(f'ailb_key_spend_usd_total{{key_id="{second}"}}') - 0.1) < 1e-9
    assert value('ailb_team_requests_total{status_class="2xx",team="t0"}') == 1
    assert value('ailb_team_requests_total{status_class="2xx",team="other"}') == 1
    assert abs(value('ailb_team_spend_usd_total{team="other"}') - 0.1) < 1e-9
    assert 't2"' not in body
    assert (await http.get(f"{url}/metrics", headers=auth())).status_code == 200
