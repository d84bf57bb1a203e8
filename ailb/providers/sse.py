"""An incremental Server-Sent Events decoder: bytes in, events out. Pure; no I/O.

Follows the WHATWG event-stream rules that matter for LLM APIs: lines end in LF, CRLF or CR;
``data`` lines of one event are joined with LF; an empty line dispatches the event; comment lines
(starting with ``:``) are ignored; a field without a colon has an empty value. Bytes that do not
yet form a whole line are kept for the next ``feed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ailb.errors import UpstreamStreamCut


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"


class SSEDecoder:
    """Feed it chunks of bytes; it returns the events they complete."""

    __slots__ = ("_buffer", "_data", "_event", "_pending_cr")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across two chunks
        self._pending_cr = chunk.endswith(b"\r")
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            event = self._line(line.decode("utf-8"))
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """End of input. A final event not followed by an empty line is discarded, per the spec."""
        self._buffer = b""
        self._data.clear()
        self._event = ""
        return []

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent("\n".join(self._data), self._event or "message")
            self._data.clear()
            self._event = ""
            return event
        if line[0] == ":":
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    @property
    def has_partial(self) -> bool:
        """True when bytes of an unfinished event are buffered (a cut stream leaves these)."""
        return bool(self._buffer) or bool(self._data)


def event_object(data: str | bytes, source: str) -> dict[str, Any]:
    """One stream event's payload (an SSE ``data`` or an NDJSON line), which must be a JSON
    object. Raises UpstreamStreamCut naming ``source`` otherwise: a stream that sends garbage is
    as broken as one that stops."""
    try:
        value = json.loads(data)
    except ValueError:
        raise UpstreamStreamCut(f"{source} sent a stream event that is not JSON") from None
    if not isinstance(value, dict):
        raise UpstreamStreamCut(f"{source} sent a stream event that is not a JSON object")
    return value
