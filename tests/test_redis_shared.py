"""Shared state on a real Valkey server (tests/servers/valkey.py): the coredis edge under Trio,
the counters' Lua against the pure Python, cooldowns and the response cache across instances,
and an outage in the middle."""

from __future__ import annotations

import trio

from ailb.errors import StoreUnavailable
from ailb.shared import redis as edge
from tests.servers.valkey import ValkeyProcess


async def test_coredis_runs_under_trio(valkey_url: str) -> None:
    """The edge's client works in a Trio task (coredis is anyio), scripts included."""
    async with edge.connect(valkey_url) as client:
        await client.set("k", b"v", ttl_s=10)
        assert await client.get("k") == b"v"
        echo = client.script("return {KEYS[1], ARGV[1]}")
        assert await client.run(echo, ["a"], ["b"]) == [b"a", b"b"]
        async with trio.open_nursery() as nursery:  # concurrent commands on one pool
            for i in range(20):
                nursery.start_soon(client.set, f"n{i}", b"x", 10)


async def test_outage_is_fast_and_the_client_comes_back(valkey: ValkeyProcess) -> None:
    async with edge.connect(valkey.url) as client:
        await client.ping()
        valkey.stop()
        with trio.fail_after(5):
            try:
                await client.get("k")
            except StoreUnavailable as exc:
                assert exc.code == "shared_state_unavailable"
            else:
                raise AssertionError("no error while the server is down")
        valkey.start()
        with trio.fail_after(5):
            await client.ping()  # the same client, no reconnect by hand
