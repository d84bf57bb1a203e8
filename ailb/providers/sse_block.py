"""An OpenAI-compatible chat stream, relayed in blocks: bytes in, blocks of whole events out.
Pure; no I/O.

Every upstream read becomes at most one :class:`~ailb.model.StreamChunk` block: the complete
events it finishes, exactly as the upstream framed them (``raw``), how many there are
(``events``), the last usage reported among them and where a usage-only event sits (so that the
encoder can cut it out for a client that did not ask for usage). Only an event whose bytes
mention ``"usage"``, ``"error"`` or ``[DONE]`` is decoded, with :class:`SSEDecoder` itself, and
classified by :func:`parse_chunk`, so a block holds exactly the events per-event decoding gives,
whatever the read boundaries (WHATWG rules: lines end in LF, CRLF or CR; an empty line dispatches
an event that has a ``data`` field).

* A partial event stays buffered until its empty line arrives: half an event is never relayed.
* ``data: [DONE]`` is not relayed (the door sends its own end once the key is charged): the
  block holds the events before it, and :attr:`BlockScanner.done` is set.
* An in-band error event: the block holds the events before it, and :attr:`BlockScanner.error`
  the error to raise after relaying them.
* Comments (``: keep-alive``) and other non-event lines are relayed as they came, in the block
  of the next event; a read that completes no event yields no block (a comment is not a token:
  it must not satisfy the wait for the first one).
"""

from __future__ import annotations

import re

from ailb.errors import UpstreamError, UpstreamStatusError
from ailb.model import StreamChunk, Usage
from ailb.providers.sse import SSEDecoder, event_object

_USAGE_OBJECT = re.compile(r'"usage"\s*:\s*\{')
# An empty line: a line end followed by another (CRLF, CR or LF each). A CR at the very end
# of the bytes counts as a line end; a LF that follows it in the next read is relayed with the
# next block but not scanned as a line end of its own.
_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


def parse_chunk(data: str) -> StreamChunk:
    """Classify one SSE ``data`` payload of a chat stream.

    Most chunks are relayed untouched without being parsed: only a payload that carries a usage
    object or an ``"error"`` key is decoded (inside JSON strings quotes are escaped, so these
    substrings can only be keys). Raises UpstreamStatusError for an in-band ``{"error": ...}``
    event and UpstreamStreamCut for such a payload that is not JSON.
    """
    if '"error"' not in data and _USAGE_OBJECT.search(data) is None:
        return StreamChunk(data)
    obj = event_object(data, "upstream")
    if "error" in obj and "choices" not in obj:
        err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
        raise UpstreamStatusError(str(err.get("message") or "upstream stream error"), status=502,
                                  error_type=err.get("type"), code=err.get("code"))
    usage = Usage.from_openai(obj.get("usage"))
    return StreamChunk(data=data, usage=usage,
                       usage_only=obj.get("choices") == [] and usage is not None)


def _data_of(segment: bytes) -> str | None:
    """The data of the event ``segment`` (an event's lines without their empty line), or None
    when it dispatches none (comments, a field without data)."""
    events = SSEDecoder().feed(segment + b"\n\n")
    return events[0].data if events else None


def _special(segment: bytes) -> bool:
    return b'"usage"' in segment or b'"error"' in segment or b"[DONE]" in segment


def _segments(buffer: bytes) -> list[tuple[bytes, int]]:
    """Each complete event of ``buffer`` (its lines, without the empty line) and the offset
    where the next one starts."""
    out: list[tuple[bytes, int]] = []
    if b"\r" not in buffer:
        parts = buffer.split(b"\n\n")
        end = 0
        for part in parts[:-1]:
            end += len(part) + 2
            out.append((part, end))
        return out
    start = 0
    for match in _BOUNDARY.finditer(buffer):
        out.append((buffer[start:match.start()], match.end()))
        start = match.end()
    return out


class BlockScanner:
    """Feed it the upstream's reads; each gives the block of events it completes (or None).

    After a feed, ``done`` is True once ``data: [DONE]`` arrived and ``error`` holds an in-band
    error event's exception; either ends the stream (nothing after them is relayed).
    """

    __slots__ = ("_buffer", "_pending_cr", "_relayed", "_skip", "done", "error")

    def __init__(self) -> None:
        self._buffer = b""
        self._relayed = False  # a block with an event was given out
        self._skip = 0  # leading bytes of the buffer relayed but not scanned (a CRLF's LF)
        self._pending_cr = False
        self.done = False
        self.error: UpstreamError | None = None

    @property
    def has_partial(self) -> bool:
        """True when bytes of an unfinished event (or comments) are buffered."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> StreamChunk | None:
        if self._pending_cr:
            self._pending_cr = False
            if not self._buffer and data[:1] == b"\n":
                # the LF of a CRLF split across two reads: relayed (the client gets the
                # upstream's bytes exactly) but not scanned as a line end of its own
                self._skip = 1
        whole = self._buffer + data if self._buffer else data
        skip = self._skip
        buffer = whole[skip:] if skip else whole
        special = _special(buffer)
        events = 0
        last = 0  # where the last complete event ends
        start = 0
        usage: Usage | None = None
        spans: list[tuple[int, int]] = []
        for segment, end in _segments(buffer):
            if special and _special(segment):
                text = _data_of(segment)
                if text is not None:
                    if text == "[DONE]":
                        self.done = True
                        return self._end(whole, skip + start, events, usage, spans, skip)
                    try:
                        chunk = parse_chunk(text)
                    except UpstreamError as exc:
                        self.error = exc
                        return self._end(whole, skip + start, events, usage, spans, skip)
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.usage_only:
                        spans.append((start, end))
                    events += 1
                    last = end
            elif segment.startswith(b"data:") or _data_of(segment) is not None:
                events += 1
                last = end
            start = end
        if not events:
            self._buffer = whole
            return None
        self._buffer = buffer[last:]
        self._skip = 0
        self._relayed = True
        self._pending_cr = last == len(buffer) and buffer.endswith(b"\r")
        return StreamChunk("", usage=usage, raw=whole[:skip + last], events=events,
                           usage_spans=_shifted(spans, skip))

    def _end(self, whole: bytes, end: int, events: int, usage: Usage | None,
             spans: list[tuple[int, int]], skip: int) -> StreamChunk | None:
        """The stream ends at the event that begins at ``end`` (of ``whole``): the block
        before it."""
        self._buffer = b""
        self._skip = 0
        if not end or not (events or self._relayed):
            # nothing before the end, or no event at all (a comment, then [DONE]): no block,
            # so a stream without a chunk stays one. A block of no event after others relays
            # what came before [DONE] (a CRLF's LF left from the last read, a comment).
            return None
        return StreamChunk("", usage=usage, raw=whole[:end], events=events,
                           usage_spans=_shifted(spans, skip), last=True)


def _shifted(spans: list[tuple[int, int]], by: int) -> tuple[tuple[int, int], ...]:
    return tuple((a + by, b + by) for a, b in spans) if by else tuple(spans)


def events_of(chunk: StreamChunk) -> list[StreamChunk]:
    """A block's events one by one, as per-event decoding gives them (for the doors that
    translate each event); a chunk that is not a block is its only event."""
    if chunk.raw is None:
        return [chunk]
    return [parse_chunk(event.data) for event in SSEDecoder().feed(chunk.raw)]


def without_spans(raw: bytes, spans: tuple[tuple[int, int], ...]) -> bytes:
    """``raw`` with the byte ranges ``spans`` (in order, not overlapping) cut out."""
    out = []
    start = 0
    for begin, end in spans:
        out.append(raw[start:begin])
        start = end
    out.append(raw[start:])
    return b"".join(out)
