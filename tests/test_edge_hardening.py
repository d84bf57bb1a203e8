"""The edge, hardened (parts of the hardening issue):

* an answer given before the request's body was read (a wrong key) must not leave the
  keep-alive connection hung: the unread body would be taken for the next request's start, and
  that request would never be answered. Driven on a raw socket, so the timing is ours: the body
  is sent only after the 401 has arrived;
* an upstream that cannot be reached is not named to the tenant (its host and port)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio

from tests.conftest import StartGateway, auth
from tests.fuzz_server import start


async def _response_head(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed before a response: {data!r}"
            data += chunk
    return data


async def test_an_early_401_closes_the_connection_whose_body_is_unread(
        start_gateway: StartGateway) -> None:
    running = await start_gateway()
    where = urlsplit(running.http_url)
    body = json.dumps({"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {where.netloc}\r\n"
            f"Authorization: Bearer sk-ailb-000000000000-wrong\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    stream = await trio.open_tcp_stream(where.hostname or "127.0.0.1", where.port or 80)
    async with stream:
        await stream.send_all(head.encode())  # the body is not sent yet
        response = await _response_head(stream)
        assert response.startswith(b"HTTP/1.1 401")
        assert b"connection: close" in response.lower()
        # the body arrives late, then a second request on the same connection: the server
        # has closed it (the client opens another), instead of leaving the request unanswered
        await stream.send_all(body.encode())
        try:
            await stream.send_all(f"GET /healthz HTTP/1.1\r\nHost: {where.netloc}\r\n\r\n"
                                  .encode())
        except trio.BrokenResourceError:
            return  # closed already: fine
        with trio.fail_after(10):
            rest = b""
            while chunk := await _receive(stream):
                rest += chunk
        assert b"HTTP/1.1 200" not in rest.split(b"\r\n\r\n", 1)[-1]  # no second answer


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:
        return b""


async def test_an_unreachable_upstream_is_not_named_to_the_tenant(
        start_gateway: StartGateway) -> None:
    import httpx

    from tests.conftest import auth, free_port

    port = free_port()  # nothing listens there
    running = await start_gateway(deployments=[{
        "name": "gpu-box", "type": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
        "models": ["m"]}])
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(f"{running.http_url}/v1/chat/completions", headers=auth(),
                                json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code in (502, 503), reply.text
    assert str(port) not in reply.text and "127.0.0.1" not in reply.text
    assert "gpu-box" in reply.json()["error"]["message"]  # the deployment's name is ours to say


def test_every_file_a_serving_process_writes_is_private(tmp_path: Path) -> None:
    """A real process (memory and RAG on ChromaDB, keys, the ledger), started under the usual
    umask 022: every file in its data directory is 0600 and every directory 0700."""
    previous = os.umask(0o022)
    try:
        running = start(tmp_path)
        server = next(running)
        reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=30,
                               headers={**auth(server.key), "x-session-id": "private"},
                               json={"model": "echo-1", "messages": [
                                   {"role": "user", "content": "remember me"}]})
        assert reply.status_code == 200, reply.text
        next(running, None)  # SIGTERM: the memory writer flushes, the process exits
    finally:
        os.umask(previous)
    data = tmp_path / "data"
    found = {p.relative_to(data).as_posix(): p.stat().st_mode & 0o777
             for p in data.rglob("*")}
    assert any(name.endswith(".sqlite3") for name in found), found  # ChromaDB wrote its files
    assert data.stat().st_mode & 0o777 == 0o700
    loose = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (data / name).is_dir() else 0o600)}
    assert not loose, loose
