"""One HTTP/1.1 response read with httptools' C parser (llhttp, the parser Node uses).

A :class:`ResponseReader` is fed the bytes of one socket read at a time and hands back the body
bytes that read carried, joined into one object: events that arrived together stay together.
It knows when the response head is complete, when the body is (content-length, chunked, or no
body at all for HEAD, 1xx, 204 and 304), and whether the connection may carry another request.
A body delimited by the end of the connection (neither length nor chunks) ends at EOF:
httptools has no ``finish()``, so :meth:`ends_at_eof` tells the caller that EOF is the end.
"""

from __future__ import annotations

import httptools
import httpx

_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class ResponseReader:
    """Parser callbacks and the state of one response."""

    __slots__ = ("_after", "_body", "_framed", "_head_only", "_informational", "_parser",
                 "complete", "headers", "headers_done", "http_version", "keep_alive", "reason",
                 "status")

    def __init__(self, head_only: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only  # a response to HEAD has no body, whatever it announces
        self._body: list[bytes] = []
        self._framed = False  # content-length or transfer-encoding was announced
        self._informational = False  # a 1xx interim response is being skipped
        self._after = False  # bytes of another message followed the complete response
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http_version = b"HTTP/1.1"
        self.headers_done = False
        self.complete = False
        self.keep_alive = False

    # -- httptools callbacks -------------------------------------------------------------------
    # A message that follows the complete response in the same read (an upstream answering
    # twice, or junk) changes nothing of the response, and the connection, which still owes
    # those bytes, is never reused.
    def on_message_begin(self) -> None:
        if self.complete:
            self._after = True
            self.keep_alive = False

    def on_status(self, status: bytes) -> None:
        if not self.headers_done:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # chunked trailers, or a message after the response
        self.headers.append((name, value))
        if name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        if self._after:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # 100 Continue and friends: wait for the real answer
            self.headers, self.reason, self._framed = [], b"", False
            return
        self.status = status
        self.headers_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self._parser.get_http_version() == "1.0":
            self.http_version = b"HTTP/1.0"
        if self._head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:  # bytes after a HEAD answer (llhttp reads them as its body)
            self.keep_alive = False
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._after:
            return
        if self._informational:
            self._informational = False
        else:
            self.complete = True

    # -- reading -------------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray, request: httpx.Request) -> bytes:
        """Parse one read; return the body bytes it carried (possibly empty)."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError("upstream switched protocols", request=request) \
                from None
        except httptools.HttpParserError as exc:
            if not self.complete:
                raise httpx.RemoteProtocolError(f"malformed response: {exc}",
                                                request=request) from None
            self.keep_alive = False  # junk after a whole response: answer kept, connection not
        body = self._body
        if not body:
            return b""
        self._body = []
        return body[0] if len(body) == 1 else b"".join(body)

    def ends_at_eof(self) -> bool:
        """EOF now ends the body cleanly (a body without length or chunks)."""
        return self.headers_done and not self.complete and not self._framed
