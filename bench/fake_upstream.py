"""Fallback fake upstream when nginx cannot be had: asyncio protocols, canned answers.

Usage: python bench/fake_upstream.py --json-port A --sse-port B [--gap-ms G]
Serves the same bodies as the nginx config (see canned.py), HTTP/1.1 keep-alive, 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import canned


def _response(status: str, ctype: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


CHAT = _response("200 OK", "application/json", canned.chat_completion_json().encode())
MODELS = _response("200 OK", "application/json", canned.models_json().encode())
NOT_FOUND = _response("404 Not Found", "text/plain", b"not found")
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


def _chunks(n: int) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(e.encode()), e.encode()) for e in canned.stream_events(n)]


SSE_CHUNKS = _chunks(canned.STREAM_CONTENT_CHUNKS)
LONG_PATH = f"/e{canned.STREAM_LONG_CHUNKS}/v1/chat/completions"
LONG_CHUNKS = _chunks(canned.STREAM_LONG_CHUNKS)
PACED_PATH = "/paced/v1/chat/completions"


class Server(asyncio.Protocol):
    def __init__(self, sse: bool, gap_s: float) -> None:
        self.sse = sse
        self.gap_s = gap_s
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            self._answer(method, path)

    def _answer(self, method: str, path: str) -> None:
        assert self.transport is not None
        if method == "GET" and path in ("/v1/models", LONG_PATH.replace("chat/completions",
                                                                         "models"),
                                        PACED_PATH.replace("chat/completions", "models")):
            self.transport.write(MODELS)
        elif method == "POST" and path in ("/v1/chat/completions", LONG_PATH, PACED_PATH):
            chunks = LONG_CHUNKS if path == LONG_PATH else SSE_CHUNKS
            gap = canned.PACED_GAP_MS / 1000 if path == PACED_PATH else self.gap_s
            if not self.sse:
                self.transport.write(CHAT)
            elif gap <= 0:
                self.transport.write(SSE_HEAD + b"".join(chunks) + b"0\r\n\r\n")
            else:
                self.busy = True
                asyncio.get_running_loop().create_task(self._stream(chunks, gap))
        else:
            self.transport.write(NOT_FOUND)

    async def _stream(self, chunks: list[bytes], gap_s: float) -> None:
        assert self.transport is not None
        self.transport.write(SSE_HEAD)
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(gap_s)
            if self.transport.is_closing():
                return
            self.transport.write(chunk)
        self.transport.write(b"0\r\n\r\n")
        self.busy = False
        self._next()


async def main(json_port: int, sse_port: int, gap_ms: float) -> None:
    loop = asyncio.get_running_loop()
    gap = gap_ms / 1000
    servers = [
        await loop.create_server(lambda: Server(False, gap), "127.0.0.1", json_port, backlog=4096),
        await loop.create_server(lambda: Server(True, gap), "127.0.0.1", sse_port, backlog=4096),
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--json-port", type=int, required=True)
    parser.add_argument("--sse-port", type=int, required=True)
    parser.add_argument("--gap-ms", type=float, default=0.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.json_port, args.sse_port, args.gap_ms))
    else:
        uvloop.run(main(args.json_port, args.sse_port, args.gap_ms))
