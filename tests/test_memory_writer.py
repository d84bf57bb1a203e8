"""The memory writer and the memory service around it, against a real local ChromaDB: failures
are contained and reported, reads see every remembered turn exactly once, and a hurried exit
still writes what was queued."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from ailb.caches.lru import BoundedCache
from ailb.config.schema import MemorySettings
from ailb.errors import StoreUnavailable, UpstreamError
from ailb.memory.service import Memory, turns_size
from ailb.memory.store import PREFIX, MemoryStore
from ailb.memory.turns import Turn
from ailb.memory.writer import _Write
from ailb.metrics import Metrics
from ailb.vectors.chroma import VectorStore
from ailb.vectors.embedders import InlineEmbedder, Vector
from ailb.vectors.lexical import LexicalEmbedder

USER = {"role": "user", "content": "hello there"}
ANSWER = {"role": "assistant", "content": "hi"}


class Flaky:
    """The lexical embedder, failing on demand (with ours or a foreign error)."""

    def __init__(self) -> None:
        self._inner = InlineEmbedder(LexicalEmbedder(256))
        self.fail: BaseException | None = None

    @property
    def id(self) -> str:
        return self._inner.id

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if self.fail is not None:
            raise self.fail
        return await self._inner.embed(texts)


def make(tmp_path: Path, embedder: Flaky, **settings: int) -> Memory:
    store = MemoryStore(VectorStore(path=tmp_path / "memory", prefix=PREFIX), embedder.id)
    cache: BoundedCache[tuple[str, str], tuple] = BoundedCache(  # type: ignore[type-arg]
        max_entries=100, max_bytes=1 << 20, ttl_s=0, clock=trio.current_time,
        size_of=turns_size)
    return Memory(store, embedder, MemorySettings(**settings), cache, Metrics())


async def stored(memory: Memory, session: str = "s") -> int:
    return len(await memory.store.load("k", session))


async def test_a_failing_embedder_loses_its_batch_not_the_writer(tmp_path: Path) -> None:
    embedder = Flaky()
    memory = make(tmp_path, embedder)
    async with trio.open_nursery() as nursery:
        await nursery.start(memory.writer.run)
        for error in (UpstreamError("embeddings down"), ValueError("not a number")):
            embedder.fail = error
            await memory.remember("k", "s", [USER], ANSWER)
            with trio.fail_after(5):
                while await memory.turns("k", "s"):  # dropped: no read shows it any longer
                    await trio.sleep(0.01)
        embedder.fail = None
        await memory.remember("k", "s", [USER], ANSWER)
        await memory.writer.close()
    assert await stored(memory) == 1 and len(await memory.turns("k", "s")) == 1


async def test_a_cancelled_remember_leaves_no_phantom_turn(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    memory = make(tmp_path, Flaky(), queue_size=1)
    await memory.remember("k", "s", [USER], ANSWER)  # fills the queue (no writer running)
    with trio.move_on_after(0.05):
        await memory.remember("k", "s", [{"role": "user", "content": "second"}], ANSWER)
    assert [t.messages[0]["content"] for t in await memory.turns("k", "s")] == ["hello there"]


async def test_reads_see_each_turn_once_while_the_writer_works(tmp_path: Path) -> None:
    memory = make(tmp_path, Flaky(), write_batch=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(memory.writer.run)
        seen: list[int] = []
        for n in range(20):
            await memory.remember("k", "s", [{"role": "user", "content": f"m{n}"}], ANSWER)
            turns = await memory.turns("k", "s")
            assert len({t.id for t in turns}) == len(turns)  # never twice
            seen.append(len(turns))
            if n % 3 == 0:
                memory._cache.clear()  # reads from the store, too
        assert seen == list(range(1, 21))  # every remembered turn, at once
        await memory.writer.close()
    assert await stored(memory) == 20


async def test_a_failed_forget_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    memory = make(tmp_path, Flaky())

    def refuse(owner: str, session: str) -> int:
        raise StoreUnavailable("disk gone")

    async with trio.open_nursery() as nursery:
        await nursery.start(memory.writer.run)
        await memory.remember("k", "s", [USER], ANSWER)
        monkeypatch.setattr(memory.store, "forget", refuse)
        with pytest.raises(StoreUnavailable):
            await memory.forget("k", "s")
        await memory.writer.close()


async def test_a_hurried_exit_still_writes_the_queue(tmp_path: Path) -> None:
    memory = make(tmp_path, Flaky())
    async with trio.open_nursery() as nursery:
        await nursery.start(memory.writer.run)
        now = time.time()  # recent turns: the writer's retention task must not expire them
        for n in range(5):  # queued, not yet taken by the writer when it is cancelled
            memory.writer._send.send_nowait(_Write("k", Turn(
                id=f"t{n}", session="s", seq=n, at=now + n,
                messages=({"role": "user", "content": f"m{n}"}, ANSWER), tokens=3)))
        nursery.cancel_scope.cancel()
    assert await stored(memory) == 5
