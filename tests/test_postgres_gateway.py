"""A whole gateway with ``DATABASE_URL``: its keys, spend and ledger are in PostgreSQL, where
another gateway (here, another store on the same database) finds them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import trio

from ailb.stores.postgres import PostgresStore
from tests.conftest import StartGateway
from tests.test_keys import PRICED, chat, create_key


async def test_a_gateway_keeps_keys_spend_and_ledger_in_postgres(
        start_gateway: StartGateway, http: httpx.AsyncClient, postgres_url: str) -> None:
    url = (await start_gateway(DATABASE_URL=postgres_url, **PRICED)).http_url
    created = await create_key(http, url, monthly_budget_usd=1)
    assert (await chat(http, url, created["key"])).status_code == 200
    other = await PostgresStore.open(postgres_url)
    try:
        assert [k.id for k in await other.keys()] == [created["id"]]
        assert await other.keys_version() == 1
        since = datetime.now(UTC) - timedelta(days=1)
        with trio.fail_after(10):  # the ledger writer's next batch
            while not (usage := await other.usage(created["id"], since)):
                await trio.sleep(0.05)
        assert usage[0]["requests"] == 1 and abs(usage[0]["cost_usd"] - 0.10) < 1e-9
    finally:
        await other.aclose()
