"""The floor: a bare pass-through on AILB's own stack (Quart-Trio on Hypercorn, httpx).

Usage: python bench/passthrough.py --port P --upstream URL --stream-upstream URL
    [--long-upstream URL] [--paced-upstream URL]
``POST /v1/chat/completions`` forwards the body unchanged with one shared ``httpx.AsyncClient``;
a body asking for ``"stream": true`` goes to the stream upstream and its bytes are relayed as
they come. No parsing, auth, routing or metrics: whatever AILB costs above this is its own.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncGenerator

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

app = QuartTrio(__name__)
state: dict[str, str] = {}
clients: list[httpx.AsyncClient] = []
MODEL_UPSTREAMS = ((b'"bench-stream-200"', "long_upstream"), (b'"bench-stream-paced"',
                                                             "paced_upstream"))


@app.before_serving
async def _open_client() -> None:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    clients.append(httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False))


@app.after_serving
async def _close_client() -> None:
    for client in clients:
        await client.aclose()


@app.get("/healthz")
async def healthz() -> str:
    return "ok"


@app.post("/v1/chat/completions")
async def chat() -> Response:
    body = await request.get_data()
    stream = b'"stream": true' in body or b'"stream":true' in body
    base = "stream_upstream" if stream else "upstream"
    for model, upstream_name in MODEL_UPSTREAMS:  # the 200-event and the paced streams
        if stream and model in body:
            base = upstream_name
    url = state[base] + "/chat/completions"
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    client = clients[0]
    if not stream:
        resp = await client.post(url, content=body, headers=headers)
        return Response(resp.content, status=resp.status_code,
                        content_type=resp.headers.get("content-type"))
    upstream = await client.send(client.build_request("POST", url, content=body,
                                                      headers=headers), stream=True)

    async def relay() -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    response = Response(relay(), status=upstream.status_code,
                        content_type=upstream.headers.get("content-type"))
    response.timeout = None
    return response


async def main(port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    await serve(app, config, mode="asgi")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:1/v1")
    parser.add_argument("--stream-upstream", required=True)
    parser.add_argument("--long-upstream", help="for model bench-stream-200")
    parser.add_argument("--paced-upstream", help="for model bench-stream-paced")
    args = parser.parse_args()
    state["upstream"] = args.upstream.rstrip("/")
    state["stream_upstream"] = args.stream_upstream.rstrip("/")
    state["long_upstream"] = (args.long_upstream or args.stream_upstream).rstrip("/")
    state["paced_upstream"] = (args.paced_upstream or args.stream_upstream).rstrip("/")
    trio.run(main, args.port)
