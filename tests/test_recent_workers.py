"""``GET /admin/requests/recent`` with ``--workers 2``: whichever worker answers, the list has
the requests of both (each worker shares its ring as a file in the run's directory)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from ailb.pipeline.recent import Recent, RecentRequests
from ailb.workers.recent_files import RecentFiles, every_worker, share_forever
from tests.conftest import auth
from tests.test_workers import Instance, instances, until_served_by

__all__ = ["instances"]  # the fixture


async def test_every_worker_s_recent_requests_whoever_answers(
        tmp_path: Path, instances: list[Instance]) -> None:
    instance = Instance(tmp_path, {})
    instances.append(instance)
    await instance.wait_log("all workers are serving")
    key = (instance.data / "admin.key").read_text().strip()
    ids = {wanted: (await until_served_by(instance, key, wanted)).headers["x-request-id"]
           for wanted in (0, 1)}

    async def read() -> list[dict[str, object]]:
        async with httpx.AsyncClient(timeout=10) as http:  # a fresh connection: any worker
            reply = await http.get(f"{instance.url}/admin/requests/recent?limit=500",
                                   headers=auth(key))
        assert reply.status_code == 200
        data: list[dict[str, object]] = reply.json()["data"]
        return data

    def both(data: list[dict[str, object]]) -> bool:
        return set(ids.values()) <= {entry["request_id"] for entry in data}

    with trio.fail_after(15):  # another worker's file is at most a second behind
        while not both(await read()):
            await trio.sleep(0.2)
    await trio.sleep(1.5)  # the answering worker had its own in memory: now both files have it
    for _ in range(12):  # then every answer, whichever worker gives it, has both
        data = await read()
        assert both(data), data
        ats = [str(entry["at"]) for entry in data]
        assert ats == sorted(ats, reverse=True)  # newest first, across workers
    assert instance.stop() == 0


async def test_a_worker_writes_its_ring_when_it_changed_and_reads_every_file(
        tmp_path: Path) -> None:
    def entry(request_id: str, at: float) -> Recent:
        return Recent(request_id, at, "k", None, "m", None, None, False, 200, 1.0, None, None)

    mine, theirs = RecentRequests(), RecentRequests()
    files = RecentFiles(tmp_path, "w0"), RecentFiles(tmp_path, "w1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(share_forever, mine, files[0], 0.05)
        nursery.start_soon(share_forever, theirs, files[1], 0.05)
        await trio.sleep(0.2)
        assert not await trio.to_thread.run_sync(lambda: list(tmp_path.iterdir()))  # none yet
        mine.add(entry("a", 1_800_000_000.0))
        theirs.add(entry("b", 1_800_000_001.0))
        mine.add(entry("c", 1_800_000_002.0))
        with trio.fail_after(5):
            while len(await every_worker(RecentRequests(), files[0], 10)) < 3:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    (tmp_path / "w9.json").write_text("{not json")  # a half-written or foreign file is skipped
    shown = await every_worker(mine, files[0], 10)
    assert [e["request_id"] for e in shown] == ["c", "b", "a"]  # merged, once each
    assert [e["request_id"] for e in await every_worker(mine, files[0], 2)] == ["c", "b"]
    assert [e["request_id"] for e in await every_worker(mine, None, 10)] == ["c", "a"]
