"""A small incremental HTTP/1.1 response parser for the load generator.

Handles Content-Length and chunked bodies, notes ``Connection: close`` and the moment the
first body byte arrived (for streams: the first byte of the first non-empty chunk).
"""

from __future__ import annotations

import time

MAX_HEAD = 64 * 1024
MAX_LINE = 4 * 1024
KEEP_HEAD = 300
KEEP_TAIL = 64

_HEAD, _LENGTH, _CHUNKED, _DONE = range(4)


class ResponseParser:
    __slots__ = (
        "buf",
        "chunk_left",
        "close",
        "first_body_at",
        "head",
        "in_trailer",
        "keep_body",
        "kept_body",
        "nbytes",
        "need_crlf",
        "parts",
        "remaining",
        "state",
        "status",
        "tail",
    )

    def __init__(self, keep_body: bool = False) -> None:
        self.reset(keep_body)

    def reset(self, keep_body: bool) -> None:
        self.buf = b""
        self.state = _HEAD
        self.status = 0
        self.close = False
        self.remaining = 0
        self.chunk_left = 0
        self.need_crlf = False
        self.in_trailer = False
        self.first_body_at = 0.0
        self.kept_body = self.keep_body = keep_body
        self.parts: list[bytes] = []
        self.head = b""
        self.tail = b""
        self.nbytes = 0

    def body_bytes(self) -> bytes:
        """The whole body when it was kept, else its first and last bytes."""
        return b"".join(self.parts) if self.kept_body else self.head + b"..." + self.tail

    def problem(self) -> str | None:
        if self.status != 200:
            return f"HTTP {self.status}: {self.body_bytes()[:300]!r}"
        return None

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; True once the response is complete."""
        if self.state == _HEAD:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise ValueError("response head too large")
                return False
            self._head(self.buf[:end])
            data = self.buf[end + 4 :]
            self.buf = b""
        if self.state == _LENGTH:
            if data:
                take = data[: self.remaining]
                self._body(take)
                self.remaining -= len(take)
            if self.remaining <= 0:
                self.state = _DONE
        elif self.state == _CHUNKED and data:
            self._chunked(data)
        return self.state == _DONE

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"bad status line {lines[0][:100]!r}")
        self.status = int(parts[1])
        self.close = parts[0] == b"HTTP/1.0"
        length = -1
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.close = b"close" in value.lower()
        if chunked:
            self.state = _CHUNKED
        elif length >= 0:
            self.state = _LENGTH
            self.remaining = length
        else:
            raise ValueError("response without Content-Length or chunked encoding")

    def _body(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self.first_body_at:
            self.first_body_at = time.perf_counter()
        self.nbytes += len(chunk)
        if self.keep_body:
            self.parts.append(chunk)
            return
        if len(self.head) < KEEP_HEAD:
            self.head += chunk[: KEEP_HEAD - len(self.head)]
        self.tail = (self.tail + chunk)[-KEEP_TAIL:]

    def _chunked(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while pos < end or self.chunk_left:
            if self.chunk_left:
                take = min(self.chunk_left, end - pos)
                if take == 0:
                    break
                self._body(buf[pos : pos + take])
                pos += take
                self.chunk_left -= take
                self.need_crlf = self.chunk_left == 0
                continue
            if self.need_crlf:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                pos += 2
                self.need_crlf = False
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if end - pos > MAX_LINE:
                    raise ValueError("chunk-size line too long")
                break
            if self.in_trailer:
                empty = nl == pos
                pos = nl + 2
                if empty:  # the blank line that ends the trailer section
                    self.state = _DONE
                    break
                continue
            size = int(buf[pos:nl].split(b";", 1)[0], 16)
            pos = nl + 2
            if size == 0:
                self.in_trailer = True
            else:
                self.chunk_left = size
        self.buf = buf[pos:]

