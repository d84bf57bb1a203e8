"""Command line.

``ailb [--config PATH] [--workers N|auto] [run]``   serve (the default)
``ailb config``                     print the effective configuration, secrets masked
``ailb check-config [PATH]``        validate a file and the environment without starting
``ailb keys create|list|show|update|rotate|revoke|usage``   manage virtual keys through the
                                    server's admin API (see ``ailb keys --help``)
``ailb rag ingest PATH...``          upload files into a RAG collection (``ailb rag ingest -h``)
``ailb db migrate|status``          the PostgreSQL schema of ``DATABASE_URL``
``ailb --version``

``--config PATH`` may stand anywhere on the line (before or after the command and its action).

Exit codes: 0 after a clean shutdown, 1 when the server cannot start, 2 for a bad
configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

import trio

from ailb import build_info, logs
from ailb.config.parse import parse_workers
from ailb.config.schema import Settings
from ailb.config.settings import load_settings
from ailb.config.view import masked
from ailb.errors import ConfigError, ConfigErrors
from ailb.vectors.chroma_server import COMMAND
from ailb.vectors.chroma_server import serve as serve_chroma
from ailb.workers.role import WorkerRole, worker_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ailb", description="AILB: an OpenAI-compatible load balancer for LLM providers.")
    parser.add_argument("--config", metavar="PATH",
                        help="YAML configuration file (default: $AILB_CONFIG, ailb.yaml beside "
                             "the binary, or config/ailb.yaml); accepted anywhere on the line")
    parser.add_argument("--workers", metavar="N",
                        help="processes serving the same ports under one supervising parent "
                             "(an integer, or auto: one per CPU; default: $WORKERS or 1)")
    parser.add_argument("--version", action="version", version=build_info.describe())
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "config", "check-config", "keys", "db", "rag"],
                        help="run (default): serve; config: print the effective configuration "
                             "with secrets masked; check-config [PATH]: validate and exit; "
                             "keys: manage virtual keys; db: migrate or inspect the "
                             "PostgreSQL schema (DATABASE_URL); rag ingest PATH...: upload "
                             "files into a RAG collection of a running server")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def take_config(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``--config PATH`` (or ``--config=PATH``) wherever it stands before a ``--``, and the
    other arguments: every command and action accepts it in any place (the last one given
    wins). Raises ValueError when it has no value."""
    config: str | None = None
    rest: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            rest += [arg, *args]
            break
        if arg == "--config":
            if not args or not args[0]:
                raise ValueError("--config needs a PATH")
            config = args.pop(0)
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
            if not config:
                raise ValueError("--config needs a PATH")
        else:
            rest.append(arg)
    return config, rest


def _private_files() -> None:
    """Every file and directory the serving process (and what it runs: SQLite, ChromaDB, the
    metrics' files) creates is its owner's alone: 0600 and 0700. Set for the serving process
    only, before anything is written (the systemd unit says UMask=0077 as well)."""
    os.umask(0o077)


def _serve(settings: Settings, config_flag: str | None, worker: WorkerRole | None) -> int:
    _private_files()

    def load() -> Settings:  # a reload reads the same file (or search) and the environment
        return load_settings(config_flag, os.environ)

    try:
        if worker is None and settings.workers > 1:
            from ailb.workers.parent import supervise

            command = worker_command(settings.config_path, settings.workers)
            trio.run(lambda: supervise(settings, command, os.environ, handle_signals=True))
        else:
            from ailb.supervisor import run  # imported here so `ailb config` stays light

            if worker is not None:
                from ailb.metrics import share_across_workers

                # before the first metric is made
                share_across_workers(worker.metrics_dir, worker.slot)
            trio.run(lambda: run(settings, handle_signals=True, load=load, environ=os.environ,
                                 freeze_heap=True, worker=worker))
    except BaseException as exc:
        cause = _leaf(exc)  # Trio wraps failures of nursery children in exception groups
        if isinstance(cause, ConfigError):
            print(config_error_text(cause), file=sys.stderr)
            return 2
        if isinstance(cause, OSError):
            print(f"ailb: cannot start: {cause}", file=sys.stderr)
            return 1
        raise
    return 0


def config_error_text(exc: ConfigError) -> str:
    """What stderr says of a bad configuration: the problem, or every one, a line each."""
    if isinstance(exc, ConfigErrors):
        return "\n".join([f"ailb: {len(exc.errors)} configuration errors:",
                          *(f"  - {error}" for error in exc.errors)])
    return f"ailb: configuration error: {exc}"


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (else the group itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _without_httpx_cli() -> None:
    """httpx imports its command line (rich and pygments, about 4 MiB resident and 70 modules)
    whenever rich is installed, as it is here (chromadb requires it); no AILB command runs it.
    A None entry in ``sys.modules`` makes that import fail, and httpx then defines the stub
    ``httpx.main`` it has for an install without its ``cli`` extra. The binary is built the
    same way (build_binary.spec excludes httpx._main). Called before anything imports httpx."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _without_httpx_cli()
    if argv[:1] == [COMMAND]:  # not for people: the ChromaDB server of a multi-worker parent
        _private_files()
        return serve_chroma(argv[1:])
    try:
        config, argv = take_config(argv)
    except ValueError as exc:
        print(f"ailb: {exc}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    if args.command == "rag":  # a client of a running server: no configuration of its own
        from ailb.cli_rag import run_rag

        return run_rag(args.rest)
    if args.command == "check-config" and args.rest:
        config = args.rest[0]
    elif args.command not in ("keys", "db") and args.rest:
        print(f"ailb: unexpected arguments: {' '.join(args.rest)}", file=sys.stderr)
        return 2
    if args.command == "keys":  # it calls no provider: their secrets may be unset
        from ailb.cli_keys import run_keys

        return run_keys(lambda: load_settings(config, os.environ, need_secrets=False),
                        args.rest, os.environ)
    try:
        settings = load_settings(config, os.environ, need_secrets=args.command != "db")
        if args.workers is not None:  # the flag wins over the file and the variable
            settings = replace(settings, workers=parse_workers(args.workers))
        worker = WorkerRole.from_environ(os.environ)
    except ConfigError as exc:
        print(config_error_text(exc), file=sys.stderr)
        return 2
    if args.command == "check-config":
        where = settings.config_path or "built-in defaults"
        print(f"configuration OK ({where}): {len(settings.deployments)} deployment(s) "
              f"[{', '.join(d.name for d in settings.deployments)}], "
              f"{len(settings.aliases)} alias(es), {len(settings.keys)} declared key(s)")
        return 0
    if args.command == "db":
        from ailb.cli_db import run_db

        return run_db(settings, args.rest)
    if args.command == "config":
        print(json.dumps(masked(settings), indent=2))
        return 0
    logs.configure(settings.log_level, **({"worker": worker.index} if worker else {}))
    logging.getLogger("ailb").debug("configuration loaded")
    return _serve(settings, config, worker)
