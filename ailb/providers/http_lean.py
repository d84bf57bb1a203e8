"""What httpx does on each upstream call, done cheaper where that changes nothing on the wire:
the address parsed once per deployment, the JSON body encoded and the answer parsed by msgspec,
a plain streamed body read from the transport's stream itself, and cookies looked for only in
a response that sets one. Used by :mod:`ailb.providers.http`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import msgspec

Url = httpx.URL | str  # an upstream address: parsed once per deployment (see :func:`url`)
_JSON = "application/json"
_encode = msgspec.json.Encoder().encode


def url(text: str) -> Url:
    """An upstream address parsed once, so that each call does not parse it again; the text
    itself if httpx rejects it (the call fails then, as it would have)."""
    try:
        return httpx.URL(text)
    except httpx.InvalidURL:
        return text


def json_request(client: httpx.AsyncClient, url: Url, body: Mapping[str, Any],
                 headers: Mapping[str, str]) -> httpx.Request:
    """The POST of ``body`` as JSON (msgspec: UTF-8, compact, keys in order; what httpx's
    ``json=`` sends, without its ``json.dumps``)."""
    request = client.build_request("POST", url, content=_encode(body), headers=headers)
    request.headers.setdefault("Content-Type", _JSON)  # a deployment's own header wins, as before
    return request


def decode(raw: bytes) -> Any:
    """JSON bytes parsed (msgspec; the stdlib's parser for what msgspec refuses, such as a
    number out of float range, so that nothing accepted before is refused now)."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


def body_of(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive: the transport's own stream when nothing is to be
    decoded (no content-encoding), without the decoder, chunker and generator layers of
    ``aiter_bytes`` per read; ``aiter_bytes`` otherwise. Closing the response closes either."""
    if "content-encoding" in response.headers:
        return response.aiter_bytes()
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    return aiter(stream)


class Cookies(httpx.Cookies):
    """httpx's cookie jar, which looks at a response only if it sets a cookie: for every other
    one httpx's own builds a urllib request and response to find none (about 19 us)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)
