"""Command line: ``ailb [--config PATH] [run]``, ``ailb config``, ``ailb --version``.

Exit codes: 0 after a clean shutdown, 2 for a bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ailb import __version__, logs
from ailb.config_schema import Settings
from ailb.config_values import Secret
from ailb.errors import ConfigError
from ailb.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ailb", description="AILB: an OpenAI-compatible load balancer for LLM providers.")
    parser.add_argument("--config", metavar="PATH",
                        help="YAML configuration file (default: $AILB_CONFIG, ailb.yaml beside "
                             "the binary, or config/ailb.yaml)")
    parser.add_argument("--version", action="version", version=f"ailb {__version__}")
    parser.add_argument("command", nargs="?", default="run", choices=["run", "config"],
                        help="run (default): serve; config: print the effective configuration "
                             "with secrets masked")
    return parser


def masked(value: Any) -> Any:
    """Settings as plain JSON-able data, every secret masked."""
    if isinstance(value, Secret):
        return value.masked()
    if hasattr(value, "__dataclass_fields__"):
        return {name: masked(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [masked(v) for v in value]
    if isinstance(value, dict):
        return {str(k): masked(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _serve(settings: Settings) -> int:
    from ailb.supervisor import run  # imported here so `ailb config` stays light

    try:
        trio.run(lambda: run(settings, handle_signals=True))
    except ConfigError as exc:
        print(f"ailb: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ailb: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as exc:
        print(f"ailb: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(json.dumps(masked(settings), indent=2))
        return 0
    logs.configure(settings.log_level)
    logging.getLogger("ailb").debug("configuration loaded")
    return _serve(settings)
