"""``ailb keys create|list|show|update|rotate|revoke|usage``: manage virtual keys from the shell.

Works through a running server's admin API (so its key cache sees the change at once): the
one at ``--url``, else ``AILB_URL``, else ``http://127.0.0.1:HTTP_PORT`` of the configuration.
It never falls back to a store: a server that does not answer is an error naming its URL.
``--local`` opens the key store instead (the data dir's SQLite, or ``DATABASE_URL``), and only
while no server holds that data dir. Needs no provider secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import trio

from ailb.cli_keys_doors import KeysDoor, Operation, local_keys, server_keys
from ailb.cli_keys_output import key_details, key_table, secret_notice, usage_text
from ailb.config.schema import Settings
from ailb.errors import CommandFailed, ConfigError, GatewayError, InvalidRequest
from ailb.keys.bootstrap import ADMIN_KEY_FILE

_EPILOG: Final = """\
where it works:
  By default, through a running server's admin API: --url, else $AILB_URL, else
  http://127.0.0.1:HTTP_PORT from the configuration (--config, $AILB_CONFIG or
  config/ailb.yaml). A server that does not answer is an error (exit 1); nothing is
  written anywhere else. --local opens the key store itself (the data dir's SQLite, or
  DATABASE_URL), refused while a server runs on that data dir.

the admin key (for the server):
  --admin-key-file, else $AILB_ADMIN_KEY (or the configuration's), else the key file a
  server writes into its data dir (AILB_DATA_DIR/admin.key).

output:
  A table (a key's secret, when created or rotated, is printed once below it); --json
  prints the admin API's JSON instead. Which door was used is said on stderr.

exit codes: 0 done; 1 the server could not be reached, refused the admin key, or the
  key was not found; 2 a bad option, value or configuration.

examples:
  ailb keys create --name search-team --team search --rpm-limit 600 --monthly-budget-usd 50
  ailb keys list --url https://ailb.internal:8080 --admin-key-file /etc/ailb/admin.key
  ailb keys update 0123456789ab --clear-budget --tpm-limit 200000
  ailb keys rotate 0123456789ab --json
  ailb keys list --local --config /etc/ailb/ailb.yaml   # the server is stopped
"""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where and how")
    door = where.add_mutually_exclusive_group()
    door.add_argument("--url", help="the server's base URL, e.g. http://10.0.0.5:8080 "
                      "(default: $AILB_URL, else http://127.0.0.1:HTTP_PORT of the configuration)")
    door.add_argument("--local", action="store_true",
                      help="edit the key store directly instead of calling a server; refused "
                           "while a server holds the data dir")
    where.add_argument("--admin-key-file", metavar="PATH",
                       help="file holding the admin key (default: $AILB_ADMIN_KEY, else "
                            "AILB_DATA_DIR/admin.key)")
    where.add_argument("--config", metavar="PATH",
                       help="the configuration file (HTTP_PORT, AILB_DATA_DIR, DATABASE_URL); "
                            "accepted anywhere on the command line")
    where.add_argument("--json", action="store_true",
                       help="print the admin API's JSON instead of a table")
    return common


def _limits(parser: argparse.ArgumentParser, *, updating: bool) -> None:
    fields = parser.add_argument_group("key fields" + (" (only those given change)"
                                                       if updating else ""))
    fields.add_argument("--name", required=not updating, help="a name for people (required)"
                        if not updating else "a new name")
    fields.add_argument("--owner", help="who the key is for")
    fields.add_argument("--team", help="the team the key belongs to (a team id)")
    fields.add_argument("--metadata", metavar="JSON", type=_json_object,
                        help='a JSON object kept with the key, e.g. \'{"ticket": "OPS-12"}\''
                             + (" (replaces the old one)" if updating else ""))
    pairs = [
        ("--allowed-models", "LIST", str, "models the key may call: comma-separated names or "
         "globs (default: all)", "--clear-allowed-models", "allow every model again"),
        ("--rag-collections", "LIST", str, "RAG collections the key may fill: comma-separated "
         "names or globs", "--clear-rag-collections", "grant no RAG collection"),
        ("--rpm-limit", "N", int, "requests per minute", "--clear-rpm-limit",
         "no requests-per-minute limit"),
        ("--tpm-limit", "N", int, "tokens per minute", "--clear-tpm-limit",
         "no tokens-per-minute limit"),
        ("--max-parallel-requests", "N", int, "requests in flight at once",
         "--clear-max-parallel-requests", "no limit on requests in flight"),
        ("--monthly-budget-usd", "USD", float, "spend allowed per budget period (ACCOUNTING "
         "period, monthly by default)", "--clear-budget", "no budget"),
        ("--expires-at", "TIME", str, "RFC 3339, e.g. 2027-01-01T00:00:00Z",
         "--clear-expires", "never expires"),
    ]
    for option, metavar, kind, text, clear, clear_text in pairs:
        target = option[2:].replace("-", "_")
        if not updating:
            fields.add_argument(option, metavar=metavar, type=kind, help=text)
            continue
        either = fields.add_mutually_exclusive_group()
        either.add_argument(option, metavar=metavar, type=kind, help=text)
        either.add_argument(clear, dest=target, action="store_const", const=_CLEAR,
                            help=clear_text)
    if updating:
        state = fields.add_mutually_exclusive_group()
        state.add_argument("--activate", dest="active", action="store_const", const=True,
                           help="make a revoked key usable again")
        state.add_argument("--deactivate", dest="active", action="store_const", const=False,
                           help="stop the key (as revoke does)")


_CLEAR: Final = object()  # an option's --clear-... twin: the field becomes null


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ailb keys", description="Manage virtual keys (through the running server's "
        "admin API, or the key store with --local).", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = _common()

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[common])

    _limits(action("create", "make a key; its secret is printed once"), updating=False)
    action("list", "list the keys (never their secrets), with this period's spend")
    for name, text in (("show", "one key's fields and this period's spend"),
                       ("rotate", "give a key a new secret (printed once); the old one "
                                  "stops working at once"),
                       ("revoke", "stop a key at once (update --activate turns it on again)"),
                       ("usage", "a key's spend this period, by day and model")):
        action(name, text).add_argument("id", help="the key's id (12 hex characters)")
    update = action("update", "change some of a key's fields (only those given)")
    update.add_argument("id", help="the key's id (12 hex characters)")
    _limits(update, updating=True)
    return top


def _body(args: argparse.Namespace) -> dict[str, Any]:
    """The admin API's JSON fields from the options given."""
    body: dict[str, Any] = {}
    for name in ("name", "owner", "team", "metadata", "rpm_limit", "tpm_limit",
                 "max_parallel_requests", "monthly_budget_usd", "expires_at", "active",
                 "allowed_models", "rag_collections"):
        value = getattr(args, name, None)
        if value is _CLEAR:
            body[name] = None
        elif value is not None and name in ("allowed_models", "rag_collections"):
            body[name] = [item.strip() for item in value.split(",") if item.strip()]
        elif value is not None:
            body[name] = value
    return body


def _operation(args: argparse.Namespace) -> Operation:
    body = _body(args) if args.action in ("create", "update") else {}
    if args.action == "update" and not body:
        raise CommandFailed("update: nothing to change (see ailb keys update --help)", 2)
    return Operation(args.action, getattr(args, "id", ""), body)


def _admin_key(settings: Settings, args: argparse.Namespace,
               environ: Mapping[str, str]) -> tuple[str, str]:
    """The admin key and where it came from (for messages). Raises CommandFailed."""
    if args.admin_key_file:
        return _read_key(Path(args.admin_key_file).expanduser(),
                         f"--admin-key-file {args.admin_key_file}"), \
            f"--admin-key-file {args.admin_key_file}"
    if environ.get("AILB_ADMIN_KEY", "").strip():
        return environ["AILB_ADMIN_KEY"].strip(), "AILB_ADMIN_KEY"
    if settings.admin_key:
        return settings.admin_key.value, f"AILB_ADMIN_KEY of {settings.config_path}"
    written = settings.data_dir / ADMIN_KEY_FILE
    if written.exists():
        return _read_key(written, str(written)), str(written)
    raise CommandFailed("no admin key: give --admin-key-file PATH or AILB_ADMIN_KEY (a server "
                        "started without AILB_ADMIN_KEY writes one to AILB_DATA_DIR/"
                        f"{ADMIN_KEY_FILE})", 2)


def _read_key(path: Path, source: str) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CommandFailed(f"cannot read the admin key from {source}: {exc}", 2) from None
    if not key:
        raise CommandFailed(f"{source} holds no admin key", 2)
    return key


def _url(settings: Settings, args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    url = (args.url or environ.get("AILB_URL", "").strip())
    if not url:
        host = settings.server.host
        if host in ("", "0.0.0.0", "::", "localhost"):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{settings.server.http_port}"
    if not url.startswith(("http://", "https://")):
        raise CommandFailed(f"{url!r} is not an http:// or https:// URL", 2)
    return url.rstrip("/")


@asynccontextmanager
async def _door(settings: Settings, args: argparse.Namespace,
                environ: Mapping[str, str]) -> AsyncIterator[KeysDoor]:
    if args.local:
        async with local_keys(settings) as store_door:
            yield store_door
        return
    url = _url(settings, args, environ)
    admin_key, source = _admin_key(settings, args, environ)
    async with server_keys(url, admin_key, source) as server_door:
        yield server_door


_WITH_SPEND: Final = frozenset({"create", "list", "show", "update", "revoke", "rotate"})


async def _session(settings: Settings, args: argparse.Namespace, environ: Mapping[str, str],
                   op: Operation) -> tuple[dict[str, Any], dict[str, float | None], str]:
    """The answer, each shown key's spend this period (for the table), and the door's name."""
    async with _door(settings, args, environ) as door:
        answer = await door.run(op)
        spends: dict[str, float | None] = {}
        if not args.json and op.action in _WITH_SPEND:
            for key in answer["data"] if op.action == "list" else [answer]:
                usage = await door.run(Operation("usage", key["id"]))
                spends[key["id"]] = usage.get("spend_usd")
        return answer, spends, door.where


def render(action: str, answer: dict[str, Any], spends: dict[str, float | None]) -> str:
    if action == "list":
        return key_table(answer["data"], spends)
    if action == "usage":
        return usage_text(answer)
    text = key_details(answer, spends.get(answer["id"]))
    return text + secret_notice(answer["key"]) if "key" in answer else text


def run_keys(load: Callable[[], Settings], argv: Sequence[str],
             environ: Mapping[str, str]) -> int:
    """``load``: the configuration, read once the arguments are known to be right."""
    args = parser().parse_args(argv)
    try:
        op = _operation(args)
        settings = load()
        answer, spends, where = trio.run(_session, settings, args, environ, op)
    except CommandFailed as exc:
        print(f"ailb keys: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:  # a bad configuration, or the store cannot be opened
        from ailb.cli import config_error_text

        print(config_error_text(exc), file=sys.stderr)
        return 2
    except GatewayError as exc:  # what the store refuses (a value, an unknown id, unavailable)
        print(f"ailb keys: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidRequest) else 1
    print(json.dumps(answer, indent=2) if args.json else render(op.action, answer, spends))
    print(f"(via {where})", file=sys.stderr)
    return 0
