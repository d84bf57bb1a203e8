"""Structured logging: one JSON object per line on stderr.

Secrets never reach a log line: settings hold them in ``Secret`` values, and request logs carry
ids, names and numbers only. Prompt text is logged only at ``debug`` level.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

ACCESS = "ailb.access"


class JSONFormatter(logging.Formatter):
    def __init__(self, **static: Any) -> None:
        super().__init__()
        self._static = static  # on every line: e.g. which worker process wrote it

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._static,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def configure(level: str, **static: Any) -> None:
    """Send AILB's and the servers' logs to stderr as JSON lines at ``level``, each with the
    ``static`` fields (a worker process adds ``worker=<index>``: N workers share one stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(**static))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that log every request or connection at INFO would double our access log.
    for noisy in ("httpx", "httpcore", "hypercorn.access", "quart.serving"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # coredis logs each script's first load at INFO and every failed dial during an outage at
    # ERROR; ailb.shared reports an outage once (and /healthz, ailb_shared_state_up show it)
    logging.getLogger("coredis").setLevel(logging.CRITICAL)


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` (merged into the JSON line)."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})
