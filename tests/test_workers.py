"""``ailb --workers 2``: real processes on loopback. A parent and two workers serving the same
ports; which worker served a request is read from the access log (every worker's log line
carries ``"worker": i``), and the processes from ``/proc``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ailb.config.parse import parse_mapping
from ailb.routing.runtime_routes import RuntimeRoutes
from ailb.workers.follow import follow_state_files
from ailb.workers.role import WorkerRole
from tests.conftest import ADMIN_KEY, StartGateway, auth, free_port
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

ROOT = Path(__file__).parent.parent


class Instance:
    """``python -m ailb --workers 2`` with its stderr (JSON lines) in a file."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "ailb.yaml"
        self.data = tmp_path / "data"
        self.write_config(config)
        self.log = tmp_path / "ailb.log"
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("AILB_", "HTTP_", "OPENAI_", "WORKERS", "NOTIFY_"))}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ailb", "--config", str(self.config), "--workers", "2"],
                env={**environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config.write_text(json.dumps({  # JSON is YAML
            "HOST": "127.0.0.1", "HTTP_PORT": self.port, "GRPC_PORT": 0,
            "AILB_DATA_DIR": str(self.data), "server": {"unready_delay_s": 0},
            **config}))

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def count(self, msg: str, worker: int | None = None) -> int:
        return sum(1 for line in self.lines() if line["msg"] == msg
                   and (worker is None or line.get("worker") == worker))

    async def wait_log(self, msg: str, times: int = 1, worker: int | None = None) -> None:
        with trio.fail_after(60):
            while self.count(msg, worker) < times:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                await trio.sleep(0.05)

    async def served_by(self, request_id: str) -> int:
        """The worker whose access log has ``request_id``."""
        with trio.fail_after(10):
            while True:
                for line in self.lines():
                    if line.get("request_id") == request_id and line["msg"] == "request":
                        worker: int = line["worker"]
                        return worker
                await trio.sleep(0.02)

    def workers(self) -> dict[int, int]:
        """pid -> worker index, from /proc (the ChromaDB server is a child too)."""
        children = []  # per thread: Trio starts processes from a worker thread
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                children += (task / "children").read_text().split()
            except OSError:
                continue  # that thread has just ended
        found = {}
        for child in map(int, children):
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in environ:
                if item.startswith(b"AILB_WORKER="):
                    found[child] = int(item.split(b"=", 1)[1])
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def instances() -> Iterator[list[Instance]]:
    started: list[Instance] = []
    yield started
    for instance in started:
        if instance.proc.poll() is None:
            instance.proc.kill()
            instance.proc.wait()


async def chat(url: str, key: str, text: str, model: str = "echo-1",
               **headers: str) -> httpx.Response:
    # a new connection each time: the kernel hands each one to whichever worker accepts it
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(f"{url}/v1/chat/completions", headers={**auth(key), **headers},
                                json={"model": model,
                                      "messages": [{"role": "user", "content": text}]})
    assert reply.status_code == 200, reply.text
    return reply


async def until_served_by(instance: Instance, key: str, wanted: int, model: str = "echo-1",
                          after: int = 0, **headers: str) -> httpx.Response:
    """Chat on fresh connections until worker ``wanted`` answers one (8 at a time)."""
    found: list[httpx.Response] = []

    async def one() -> None:
        reply = await chat(instance.url, key, "hello", model, **headers)
        if await instance.served_by(reply.headers["x-request-id"]) == wanted:
            found.append(reply)

    with trio.fail_after(60):
        while not found:
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(one)
    return found[0]


def total(metrics: str, name: str, **labels: str) -> float:
    value = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                value += float(line.rsplit(" ", 1)[1])
    return value


async def test_two_workers_share_ports_key_metrics_and_memory(
        tmp_path: Path, instances: list[Instance]) -> None:
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(tmp_path / "notify.sock"))
    instance = Instance(tmp_path, {}, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    instances.append(instance)
    with trio.fail_after(60):
        message = (await notify.recv(4096)).decode().split("\n")
    assert "READY=1" in message
    # READY=1 came once both workers serve
    assert {line.get("worker") for line in instance.lines()
            if line["msg"] == "AILB is serving"} == {0, 1}
    assert len(instance.workers()) == 2

    # one admin key, generated by the parent, accepted by both workers
    key = (instance.data / "admin.key").read_text().strip()
    assert len(list(instance.data.glob("admin.key*"))) == 1
    served = {0: 0, 1: 0}
    for wanted in (0, 1):
        await until_served_by(instance, key, wanted)
    for line in instance.lines():
        if line["msg"] == "request" and line.get("status") == 200:
            served[line["worker"]] += 1
    assert served[0] and served[1]

    # /metrics counts the requests of both workers, whichever answers the scrape
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            while True:
                text = (await http.get(f"{instance.url}/metrics")).text
                if total(text, "ailb_requests_total", status="200") == sum(served.values()):
                    break
                await trio.sleep(0.05)

    # a session remembered through one worker is recalled through the other
    first = await chat(instance.url, key, "The parcel goes to dock 12.",
                       **{"x-session-id": "shared"})
    writer = await instance.served_by(first.headers["x-request-id"])
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            while not (await http.get(f"{instance.url}/v1/memory/shared",
                                      headers=auth(key))).json().get("turns"):
                await trio.sleep(0.05)
    recalled = await until_served_by(instance, key, 1 - writer, **{"x-session-id": "shared"})
    recent = recalled.headers["x-ailb-memory"].split(",")[0]  # "recent=N"
    assert int(recent.split("=")[1]) >= 1

    assert instance.stop() == 0
    assert (await notify.recv(4096)).decode().startswith("STOPPING=1")
    notify.close()


async def test_restart_reload_and_drain(nursery: trio.Nursery, tmp_path: Path,
                                        instances: list[Instance]) -> None:
    fake = FakeOpenAI(reply="word " * 40)
    fake.chunk_delay_s = 0.05  # 40 chunks: 2 s per stream
    base = await start_fake(nursery, fake)
    deployment = {"name": "up", "type": "openai", "base_url": base, "models": ["m"]}
    config = {"AILB_ADMIN_KEY": ADMIN_KEY, "ENABLE_MEMORY": False, "deployments": [deployment]}
    instance = Instance(tmp_path, config)
    instances.append(instance)
    await instance.wait_log("all workers are serving")

    # kill -9 a worker: it is started again and serves
    pid = next(pid for pid, index in instance.workers().items() if index == 0)
    os.kill(pid, signal.SIGKILL)
    await instance.wait_log("worker exited unasked: starting it again")
    await instance.wait_log("AILB is serving", times=2, worker=0)
    assert pid not in instance.workers() and sorted(instance.workers().values()) == [0, 1]
    await until_served_by(instance, ADMIN_KEY, 0, model="m")

    # SIGHUP to the parent reloads every worker: a new model is served by both
    instance.write_config({**config, "deployments": [{**deployment, "models": ["m", "m2"]}]})
    instance.proc.send_signal(signal.SIGHUP)
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            while total((await http.get(f"{instance.url}/metrics")).text,
                        "ailb_config_reloads_total", outcome="ok") < 2:
                await trio.sleep(0.05)
    for wanted in (0, 1):
        await until_served_by(instance, ADMIN_KEY, wanted, model="m2")
    async with httpx.AsyncClient(timeout=10) as http:  # one reload: one audit entry
        audit = (await http.get(f"{instance.url}/admin/audit?action=config.reload",
                                headers=auth())).json()["data"]
    assert [(e["actor"], e["outcome"]) for e in audit] == [("signal", "ok")]

    # SIGTERM: an open stream finishes, the parent exits 0
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{instance.url}/v1/chat/completions", headers=auth(),
                               json={"model": "m", "stream": True, "messages": [
                                   {"role": "user", "content": "hi"}]}) as response:
            lines = response.aiter_lines()
            assert (await lines.__anext__()).startswith("data: ")
            instance.proc.send_signal(signal.SIGTERM)
            rest = [line async for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
    assert await trio.to_thread.run_sync(instance.stop) == 0
    assert instance.count("worker exited unasked: starting it again") == 1


async def test_a_configuration_error_in_the_workers_stops_the_parent(
        tmp_path: Path, instances: list[Instance]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "routes.json").write_text("not json")  # read by the workers only
    instance = Instance(tmp_path, {"AILB_ADMIN_KEY": ADMIN_KEY, "ENABLE_MEMORY": False})
    instances.append(instance)
    assert await trio.to_thread.run_sync(instance.proc.wait, 60) == 2
    assert instance.count("worker exited unasked: starting it again") == 0
    assert "worker 0 stopped at start-up on a configuration error" in instance.log.read_text() \
        or "worker 1 stopped at start-up on a configuration error" in instance.log.read_text()


async def test_a_worker_follows_runtime_routes_written_by_another(
        nursery: trio.Nursery, start_gateway: StartGateway, tmp_path: Path) -> None:
    running = await start_gateway()
    other = RuntimeRoutes(tmp_path / "data")  # what another worker process holds
    aliases = parse_mapping({"aliases": {"fast": {"targets": ["echo/echo-1"]}}, "ECHO_MODELS":
                             "echo-1"}, {}).aliases
    # written after this worker loaded its state but before its follower first looked: the
    # follower must still take it (it once took the file as it found it for its baseline)
    await other.put(list(aliases), replace_all=False)
    nursery.start_soon(follow_state_files, running.services, running.lifecycle)
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(30):  # a bound, not a speed (polled every 0.5 s)
            while (await http.post(f"{running.http_url}/v1/chat/completions", headers=auth(),
                                   json={"model": "fast", "messages": [
                                       {"role": "user", "content": "hi"}]})).status_code != 200:
                await trio.sleep(0.05)
    assert "fast" in running.lifecycle.routes.aliases()


def test_a_worker_role_goes_through_the_environment(tmp_path: Path) -> None:
    role = WorkerRole(1, 5, 6, 42, tmp_path, {"memory": "http://127.0.0.1:9"})
    assert WorkerRole.from_environ(role.environ("@notify")) == role
    assert WorkerRole.from_environ({}) is None
    assert parse_mapping({"WORKERS": "auto"}, {}).workers == len(os.sched_getaffinity(0))
    assert parse_mapping({}, {}).workers == 1



async def test_limits_and_budgets_are_exact_across_the_workers(
        tmp_path: Path, instances: list[Instance]) -> None:
    instance = Instance(tmp_path, {"ENABLE_MEMORY": False, "prices": {
        "echo-1": {"input_per_mtok": 10000, "output_per_mtok": 10000}}})
    instances.append(instance)
    await instance.wait_log("AILB is serving", times=2)
    admin = (instance.data / "admin.key").read_text().strip()
    async with httpx.AsyncClient(timeout=30) as http:
        made = await http.post(f"{instance.url}/admin/keys", headers=auth(admin),
                               json={"name": "rpm", "rpm_limit": 20})
        rpm_key = made.json()["key"]
        made = await http.post(f"{instance.url}/admin/keys", headers=auth(admin),
                               json={"name": "budget", "monthly_budget_usd": 0.5})
        budget_key, budget_id = made.json()["key"], made.json()["id"]
    await trio.sleep(0.5)  # both workers know the keys

    async def burst(key: str, count: int) -> list[int]:
        codes: list[int] = []

        async def one() -> None:
            async with httpx.AsyncClient(timeout=30) as fresh:  # any worker may accept it
                reply = await fresh.post(f"{instance.url}/v1/chat/completions",
                                         headers=auth(key), json={
                                             "model": "echo-1", "max_tokens": 50,
                                             "messages": [{"role": "user", "content": "hi"}]})
                codes.append(reply.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        return codes

    start = trio.current_time()
    codes = await burst(rpm_key, 60)
    refill = (trio.current_time() - start) * 20 / 60
    assert 20 <= codes.count(200) <= 20 + int(refill) and codes.count(429) == 60 - codes.count(200)
    workers = {line["worker"] for line in instance.lines()
               if line["msg"] == "request" and line.get("status") in (200, 429)}
    assert workers == {0, 1}  # both workers took part: one limit for the instance

    codes = await burst(budget_key, 120)
    assert codes.count(402) > 0
    async with httpx.AsyncClient(timeout=30) as http:
        spent = (await http.get(f"{instance.url}/admin/keys/{budget_id}/usage",
                                headers=auth(admin))).json()["spend_usd"]
    assert spent <= 0.5 + 1e-9
    assert instance.stop() == 0


async def test_a_console_session_works_and_ends_on_every_worker(
        tmp_path: Path, instances: list[Instance]) -> None:
    """A console session made on one worker is valid on the other (sessions live in the
    store), and a sign-out on one ends it on both. Which worker answered a call with the
    cookie shows in its answer: each worker's recent requests hold only its own."""
    instance = Instance(tmp_path, {"ENABLE_MEMORY": False})
    instances.append(instance)
    await instance.wait_log("AILB is serving", times=2)
    admin = (instance.data / "admin.key").read_text().strip()
    ids = {worker: (await until_served_by(instance, admin, worker)).headers["x-request-id"]
           for worker in (0, 1)}
    async with httpx.AsyncClient(timeout=30) as http:
        signed = await http.post(f"{instance.url}/console/session", json={"admin_key": admin})
        session, csrf = signed.cookies["ailb_console"], signed.json()["csrf_token"]
    cookie = {"cookie": f"ailb_console={session}"}

    async def fresh(method: str, path: str, **headers: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as http:  # a new connection: any worker
            return await http.request(method, f"{instance.url}{path}",
                                      headers={**cookie, **headers})

    answered: set[int] = set()
    with trio.fail_after(60):
        while answered != {0, 1}:
            reply = await fresh("GET", "/admin/requests/recent?limit=500")
            assert reply.status_code == 200, reply.text
            seen = {entry["request_id"] for entry in reply.json()["data"]}
            answered |= {worker for worker, request_id in ids.items() if request_id in seen}
    out = await fresh("DELETE", "/console/session", **{"x-ailb-csrf": csrf})
    assert out.status_code == 200
    for _ in range(16):
        assert (await fresh("GET", "/admin/keys")).status_code == 401
