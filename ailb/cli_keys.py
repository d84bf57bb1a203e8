"""``ailb keys create|list|revoke``: manage virtual keys from the shell.

Talks to the running server's admin API when it answers (so its in-memory key cache stays
right); when nothing listens, opens the key store in the data dir directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import trio

from ailb.config.schema import Settings
from ailb.errors import ConfigError, GatewayError
from ailb.keys.bootstrap import ADMIN_KEY_FILE, data_dir_lock
from ailb.keys.fields import parse_fields, public_view
from ailb.keys.registry import KeyRegistry
from ailb.stores.open import describe_store, open_store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ailb keys", description="Manage virtual keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a key (its secret is printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--owner", default=None)
    create.add_argument("--team", default=None)
    create.add_argument("--allowed-models", default=None, help="comma-separated names or globs")
    create.add_argument("--rag-collections", default=None,
                        help="RAG collections the key may fill: comma-separated names or globs")
    create.add_argument("--rpm-limit", type=int, default=None)
    create.add_argument("--tpm-limit", type=int, default=None)
    create.add_argument("--max-parallel-requests", type=int, default=None)
    create.add_argument("--monthly-budget-usd", type=float, default=None)
    create.add_argument("--expires-at", default=None, help="RFC 3339, e.g. 2027-01-01T00:00:00Z")
    sub.add_parser("list", help="list keys (never their secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    for command in sub.choices.values():
        command.add_argument("--url", default=None,
                             help="the server's base URL (default: http://127.0.0.1:HTTP_PORT)")
    return parser


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name}
    for name in ("owner", "team", "rpm_limit", "tpm_limit", "max_parallel_requests",
                 "monthly_budget_usd", "expires_at"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.allowed_models:
        body["allowed_models"] = [m.strip() for m in args.allowed_models.split(",") if m.strip()]
    if args.rag_collections:
        body["rag_collections"] = [c.strip() for c in args.rag_collections.split(",")
                                   if c.strip()]
    return body


def _over_http(url: str, admin: str, args: argparse.Namespace) -> Any:
    headers = {"authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, timeout=10, headers=headers, trust_env=False) as client:
        if args.action == "create":
            response = client.post("/admin/keys", json=_fields(args))
        elif args.action == "list":
            response = client.get("/admin/keys")
        else:
            response = client.delete(f"/admin/keys/{args.id}")
    answer = response.json()
    if response.status_code >= 400:
        raise SystemExit(f"ailb keys: {answer.get('error', {}).get('message', response.text)}")
    return answer


def _in_store(settings: Settings, args: argparse.Namespace) -> Any:
    """Only when no server holds the data dir (its key cache would not see the change; with
    DATABASE_URL, gateways elsewhere see it through ``keys_version``)."""
    with data_dir_lock(settings.data_dir):
        return trio.run(_store_action, settings, args)


async def _store_action(settings: Settings, args: argparse.Namespace) -> Any:
    """Raises ConfigError (the store cannot be opened) or GatewayError (StoreUnavailable,
    NotFound, InvalidRequest)."""
    store = await open_store(settings)
    try:
        keys = await KeyRegistry.load(store, lambda: datetime.now(UTC))
        if args.action == "create":
            record, secret = await keys.create(parse_fields(_fields(args), creating=True))
            return {**public_view(record), "key": secret}
        if args.action == "list":
            return {"object": "list", "data": [public_view(k) for k in keys.all()]}
        return public_view(await keys.revoke(args.id))
    finally:
        await store.aclose()


def run_keys(settings: Settings, argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    admin_file = settings.data_dir / ADMIN_KEY_FILE
    admin = settings.admin_key.value or (
        admin_file.read_text(encoding="utf-8").strip() if admin_file.exists() else "")
    url = args.url or f"http://127.0.0.1:{settings.server.http_port}"
    try:
        try:
            if not admin:  # no admin key to call a server with: only the store is left
                raise httpx.ConnectError("no admin key")
            answer = _over_http(url, admin, args)
            via = "server"
        except httpx.TransportError:
            # No server answers; one that runs on this data dir holds its lock (refused).
            answer = _in_store(settings, args)
            via = f"key store ({describe_store(settings)})"
    except (GatewayError, ConfigError) as exc:
        print(f"ailb keys: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2))
    print(f"(via the {via})", file=sys.stderr)
    return 0
