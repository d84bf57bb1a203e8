"""Where ``ailb keys`` does its work: a running server's admin API (:class:`ServerKeys`), or,
only when asked with ``--local``, the key store directly (:class:`LocalKeys`).

Both take the same :class:`Operation` and answer what the admin API answers, so the output
does not depend on the door. The server door never falls back to the store: a server that
does not answer is an error naming its URL. The store door holds the data dir lock for as
long as it is open, so it is refused while a server runs on that data dir (whose key cache
would not see the change).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import httpx

from ailb.accounting.periods import period_of, period_start
from ailb.audit.entry import CLIENT_HEADER, diff
from ailb.audit.log import AuditLog, cli_actor
from ailb.config.schema import Settings
from ailb.errors import CommandFailed, ConfigError, GatewayError
from ailb.keys.bootstrap import data_dir_lock
from ailb.keys.fields import parse_fields, public_view, usage_view
from ailb.keys.registry import KeyRegistry
from ailb.stores.open import AccountingStore, describe_store, open_store

TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class Operation:
    """One action on the keys: ``key_id`` for all but create and list, ``body`` (admin API
    JSON fields) for create and update."""

    action: str
    key_id: str = ""
    body: dict[str, Any] = field(default_factory=dict)


class KeysDoor(Protocol):
    where: str  # for messages: "the server at URL", "the key store (SQLite at PATH)"

    async def run(self, op: Operation) -> dict[str, Any]:
        """The admin API's answer to ``op``. Raises CommandFailed, or GatewayError for what
        the store refuses (InvalidRequest, NotFound, StoreUnavailable)."""
        ...


_ROUTES: Final[dict[str, tuple[str, str]]] = {
    "create": ("POST", "/admin/keys"),
    "list": ("GET", "/admin/keys"),
    "show": ("GET", "/admin/keys/{id}"),
    "update": ("PATCH", "/admin/keys/{id}"),
    "rotate": ("POST", "/admin/keys/{id}/rotate"),
    "revoke": ("DELETE", "/admin/keys/{id}"),
    "usage": ("GET", "/admin/keys/{id}/usage"),
}


class ServerKeys:
    """The admin API of the server at ``url``, called with the admin key."""

    def __init__(self, client: httpx.AsyncClient, url: str, key_source: str) -> None:
        self._client = client
        self._url = url
        self._key_source = key_source
        self.where = f"the server at {url}"

    async def run(self, op: Operation) -> dict[str, Any]:
        method, path = _ROUTES[op.action]
        path = path.format(id=op.key_id)
        body = op.body if method in ("POST", "PATCH") and op.action != "rotate" else None
        try:
            response = await self._client.request(method, path, json=body)
        except httpx.TimeoutException:
            raise CommandFailed(f"no answer from {self._url} within {TIMEOUT_S:g} s "
                                "(is it an AILB server? see --url or AILB_URL)") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CommandFailed(f"cannot reach an AILB server at {self._url} ({reason}): start "
                                "it, or name the right one with --url or AILB_URL (--local "
                                "edits a store no server runs on)") from None
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise CommandFailed(f"{self._url} answered HTTP {response.status_code} without "
                                "AILB's JSON: is it an AILB server?")
        if response.status_code < 400:
            return answer
        error = answer.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str):
            raise CommandFailed(f"{self._url} answered HTTP {response.status_code} without "
                                "AILB's error: is it an AILB server?")
        if response.status_code in (401, 403):
            raise CommandFailed(f"the server at {self._url} refused the admin key (from "
                                f"{self._key_source}): {message}")
        # a value the server refuses is a usage error (2), like argparse's; the rest fail (1)
        raise CommandFailed(message, exit_code=2 if response.status_code in (400, 422) else 1)


@asynccontextmanager
async def server_keys(url: str, admin_key: str, key_source: str) -> AsyncIterator[ServerKeys]:
    # who runs the CLI, as a hint the server records beside "admin-key" (its actor)
    headers = {"authorization": f"Bearer {admin_key}", CLIENT_HEADER: cli_actor()}
    # trust_env=False: a proxy from the environment must not see the admin key
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT_S,
                                 trust_env=False) as client:
        yield ServerKeys(client, url, key_source)


class LocalKeys:
    """The key store itself. Every change goes through :meth:`_change`."""

    def __init__(self, keys: KeyRegistry, store: AccountingStore, settings: Settings) -> None:
        self._keys = keys
        self._store = store
        self._audit = AuditLog(store)
        self._period_kind = settings.accounting.period
        self.where = f"the key store ({describe_store(settings)})"

    async def _change(self, op: Operation,
                      work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """A change to the store: the one place that sees every one, recorded in the audit log
        (actor ``cli:<os user>``, door ``cli``) once made, or as refused. Raises what ``work``
        raises."""
        existing = self._keys.get(op.key_id) if op.key_id else None
        before = public_view(existing) if existing is not None else None
        action = f"key.{op.action}"
        try:
            answer = await work()
        except GatewayError as exc:
            await self._audit.record(actor=cli_actor(), door="cli", action=action,
                                     target=op.key_id, outcome="refused",
                                     changes={"error": exc.message})
            raise
        after = {k: v for k, v in answer.items() if k != "key"}
        changes = {"secret_hash": "[redacted]"} if op.action == "rotate" else diff(before,
                                                                                  after)
        await self._audit.record(actor=cli_actor(), door="cli", action=action,
                                 target=str(answer.get("id", op.key_id)), changes=changes)
        return answer

    async def run(self, op: Operation) -> dict[str, Any]:
        keys = self._keys
        if op.action == "list":
            return {"object": "list", "data": [public_view(k) for k in keys.all()]}
        if op.action == "show":
            return public_view(keys.require(op.key_id))
        if op.action == "usage":
            return await self._usage(op.key_id)

        async def work() -> dict[str, Any]:
            fields = parse_fields(op.body, creating=op.action == "create") \
                if op.action in ("create", "update") else {}
            if op.action == "create":
                record, secret = await keys.create(fields)
                return {**public_view(record), "key": secret}
            if op.action == "rotate":
                record, secret = await keys.rotate(op.key_id)
                return {**public_view(record), "key": secret}
            if op.action == "update":
                return public_view(await keys.update(op.key_id, fields))
            return public_view(await keys.revoke(op.key_id))

        return await self._change(op, work)

    async def _usage(self, key_id: str) -> dict[str, Any]:
        key = self._keys.require(key_id)
        now = datetime.now(UTC)
        period = period_of(now, self._period_kind)
        spent = await self._store.read(key.id, period)  # no server: nothing is in flight
        rows = await self._store.usage(key.id, period_start(now, self._period_kind))
        return usage_view(key, period, spent, rows)


@asynccontextmanager
async def local_keys(settings: Settings) -> AsyncIterator[LocalKeys]:
    """The store of ``settings``, while no server holds its data dir. Raises CommandFailed
    (a server holds it) or ConfigError (the store cannot be opened)."""
    async with AsyncExitStack() as stack:
        try:
            stack.enter_context(data_dir_lock(settings.data_dir))
        except ConfigError as exc:
            held = exc.problem.replace(" (one data dir per server)", "")
            raise CommandFailed(f"--local refused: {held}; its key cache would not see a "
                                "change made behind its back; drop --local to go through its "
                                "admin API (--url or AILB_URL if it is not at "
                                "http://127.0.0.1:HTTP_PORT)") from None
        store = await open_store(settings)
        stack.push_async_callback(store.aclose)
        keys = await KeyRegistry.load(store, lambda: datetime.now(UTC))
        yield LocalKeys(keys, store, settings)
