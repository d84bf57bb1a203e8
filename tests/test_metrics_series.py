"""/metrics: the process's own series, no ``*_created`` series, and the per-key and per-team
series, off by default and bounded by METRICS__PER_KEY_LIMIT."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trio
from hypothesis import given
from hypothesis import strategies as st

from ailb.keys.records import TeamRecord, first_created
from tests.conftest import StartGateway, auth
from tests.test_keys import chat, create_key
from tests.test_workers import Instance, instances, total, until_served_by

__all__ = ["instances"]  # the fixture, for the two-worker test

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


@given(st.lists(st.tuples(st.integers(0, 20), st.text("abc", min_size=1, max_size=3)),
                unique_by=lambda t: t[1]), st.integers(0, 6), st.randoms())
def test_the_labelled_ones_are_the_first_created_in_any_order(
        made: list[tuple[int, str]], limit: int, rng: random.Random) -> None:
    """Two processes holding the same records in any order label the same ones: the
    ``limit`` created first (the id breaks a tie)."""
    records = [TeamRecord(id=name, created_at=_T0 + timedelta(seconds=at)) for at, name in made]
    shuffled = list(records)
    rng.shuffle(shuffled)
    chosen = first_created(records, limit)
    assert first_created(shuffled, limit) == chosen
    assert chosen == {r.id for r in sorted(records, key=lambda r: (r.created_at, r.id))[:limit]}


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
    # the first key is used before the others exist (its label is chosen then); the others are
    # used newest first: the labels still go to the keys (and teams) created first
    keys = [await create_key(http, url, name="k0", team="t0")]
    assert (await chat(http, url, keys[0]["key"])).status_code == 200
    keys += [await create_key(http, url, name=f"k{n}", team=f"t{n}") for n in (1, 2)]
    for key in reversed(keys[1:]):
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


async def test_two_workers_label_the_same_keys_and_show_each_process(
        tmp_path: Path, instances: list[Instance]) -> None:
    """With workers, the labelled keys are the same in every worker whatever each saw first,
    and ``process_*`` has one series per process (``worker`` label), whichever answers."""
    instance = Instance(tmp_path, {"ENABLE_MEMORY": False, "METRICS": {"per_key_limit": 1}})
    instances.append(instance)
    await instance.wait_log("AILB is serving", times=2)
    admin = (instance.data / "admin.key").read_text().strip()
    async with httpx.AsyncClient(timeout=30) as http:
        made = [(await http.post(f"{instance.url}/admin/keys", headers=auth(admin),
                                 json={"name": name})).json() for name in ("first", "second")]
    await trio.sleep(0.7)  # both workers know the keys
    first, second = made
    for worker in (0, 1):  # each worker sees the second key before the first one
        await until_served_by(instance, second["key"], worker)
    await until_served_by(instance, first["key"], 0)
    served = {line["worker"] for line in instance.lines()
              if line["msg"] == "request" and line.get("key_id") == second["id"]}
    assert served == {0, 1}
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{instance.url}/metrics")).text
    assert second["id"] not in text
    assert total(text, "ailb_key_requests_total", key_id=first["id"]) >= 1
    assert total(text, "ailb_key_requests_total", key_id="other") >= 2

    workers = {index: pid for pid, index in instance.workers().items()}
    for _ in range(12):  # new connections: both workers answer scrapes
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"{instance.url}/metrics")).text
        assert "python_gc_" not in text
        lines = text.splitlines()
        assert not [line for line in lines if line.startswith("process_cpu_seconds_total ")]
        cpu = {line.split('worker="')[1].split('"')[0]
               for line in lines if line.startswith("process_cpu_seconds_total{")}
        assert cpu == {"0", "1", "parent"}
        start = total(text, "process_start_time_seconds", worker="0")
        assert start == _start_time(workers[0])
    assert instance.stop() == 0


def _start_time(pid: int) -> float:
    """A process's start, as the process collector computes it, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return float(stat[19]) / ticks + boot
