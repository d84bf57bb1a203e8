"""The RAG API over HTTP on a real gateway (ENABLE_RAG): collections, JSON and uploaded
documents, retrieval, permissions of virtual keys, errors, restarts, and a large ingest that
must not stall the event loop."""

from __future__ import annotations

import gc
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ailb.supervisor import Running, run
from tests.conftest import StartGateway, auth, make_settings

RAG = "/v1/rag/collections"
PASSWORD = "To reset your password, open the account settings and choose 'reset password'."
BILLING = "Invoices are sent on the first day of each month to the billing contact."
MARKDOWN = b"""# Operations guide

## Restarting

Restart the gateway with systemctl restart ailb; in-flight requests finish first.

## Backups

Copy the data directory while the gateway runs: the key store uses WAL.
"""
VOCABULARY = (
    "alpha amber anchor apple arrow autumn badge baker bamboo banner barrel basket beacon berry "
    "bishop blanket bottle bridge bronze bucket butter cactus camera candle canvas carpet castle "
    "cellar cherry circus cliff clover cobalt copper cotton crater crystal daisy desert dragon "
    "drum eagle ember engine falcon feather fern fiddle forest fossil garden garlic glacier "
    "goblet granite harbor hazel helmet honey island ivory jacket jungle kettle lantern lemon "
    "lizard magnet maple marble meadow mirror monkey mustard needle nutmeg oasis olive orchid "
    "oyster paddle pepper pillow pirate planet pocket puzzle quartz rabbit ribbon river rocket "
    "saddle salmon sandal scarf shadow silver spider summit tablet temple thunder timber tomato "
    "tunnel turtle velvet violin walnut whistle willow window wizard yarn zebra").split()
HTML = (b"<!doctype html><html><head><title>Shipping FAQ</title></head><body>"
        b"<h1>Shipping</h1><p>Parcels to Norway take four working days.</p>"
        b"<script>var ignored = 'parcels';</script></body></html>")


def assert_error(response: httpx.Response, status: int, code: str | None = None,
                 param: str | None = None) -> dict[str, Any]:
    """The response is an OpenAI-shaped error with this status (and code/param if given)."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


async def create_collection(http: httpx.AsyncClient, url: str, name: str,
                            key: str | None = None, **body: Any) -> httpx.Response:
    return await http.post(f"{url}{RAG}", headers=auth(key) if key else auth(),
                           json={"name": name, **body})


async def add_json(http: httpx.AsyncClient, url: str, name: str, documents: list[dict[str, Any]],
                   key: str | None = None) -> httpx.Response:
    return await http.post(f"{url}{RAG}/{name}/documents", headers=auth(key) if key else auth(),
                           json={"documents": documents})


async def query(http: httpx.AsyncClient, url: str, name: str, text: str,
                key: str | None = None, **body: Any) -> httpx.Response:
    return await http.post(f"{url}{RAG}/{name}/query", headers=auth(key) if key else auth(),
                           json={"query": text, **body})


async def new_key(http: httpx.AsyncClient, url: str, **fields: Any) -> str:
    response = await http.post(f"{url}/admin/keys", headers=auth(), json={"name": "t", **fields})
    assert response.status_code == 201, response.text
    assert response.json()["rag_collections"] == fields.get("rag_collections", [])
    key: str = response.json()["key"]
    return key


async def test_collections(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    created = await create_collection(http, url, "docs", metadata={"team": "search"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["object"], body["name"], body["documents"], body["chunks"],
            body["metadata"]) == ("rag.collection", "docs", 0, 0, {"team": "search"})
    assert body["embedder"].startswith("lexical") and body["created_at"].endswith("Z")
    assert_error(await create_collection(http, url, "docs"), 409, "collection_exists")
    assert_error(await create_collection(http, url, "-bad"), 400, param="name")
    assert_error(await create_collection(http, url, "a" * 64), 400, param="name")
    assert_error(await create_collection(http, url, "x", metadata={"a": {"b": 1}}), 400,
                 param="metadata.a")
    assert_error(await create_collection(http, url, "x", color="red"), 400, param="color")
    assert (await create_collection(http, url, "faq")).status_code == 201

    listed = (await http.get(f"{url}{RAG}", headers=auth())).json()
    assert listed["object"] == "list"
    assert [(c["name"], c["documents"], c["chunks"]) for c in listed["data"]] == [
        ("docs", 0, 0), ("faq", 0, 0)]
    assert {"name", "documents", "chunks", "embedder", "created_at"} <= set(listed["data"][0])
    got = (await http.get(f"{url}{RAG}/docs", headers=auth())).json()
    assert got == body

    deleted = await http.delete(f"{url}{RAG}/faq", headers=auth())
    assert deleted.json() == {"id": "faq", "object": "rag.collection.deleted", "deleted": True}
    assert_error(await http.get(f"{url}{RAG}/faq", headers=auth()), 404,
                 "collection_not_found")
    assert_error(await http.delete(f"{url}{RAG}/faq", headers=auth()), 404,
                 "collection_not_found")
    assert_error(await add_json(http, url, "faq", [{"text": "x"}]), 404, "collection_not_found")
    assert_error(await query(http, url, "faq", "x"), 404, "collection_not_found")
    assert_error(await http.get(f"{url}{RAG}"), 401, "invalid_api_key")


async def test_documents_json_and_files(start_gateway: StartGateway,
                                        http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    await create_collection(http, url, "docs")
    added = await add_json(http, url, "docs", [
        {"id": "pw", "text": PASSWORD, "metadata": {"lang": "en", "version": 3},
         "source": "kb/passwords"},
        {"text": BILLING, "format": "markdown"},
    ])
    assert added.status_code == 201, added.text
    data = added.json()["data"]
    assert added.json()["object"] == "list"
    assert data[0] == {"id": "pw", "chunks": 1, "source": "kb/passwords", "title": ""}
    billing_id = data[1]["id"]
    assert billing_id.startswith("doc-") and data[1]["source"] == billing_id

    files = [("file", ("notes.txt", PASSWORD.encode().replace(b"password", b"passphrase"),
                       "text/plain")),
             ("file", ("guide.md", MARKDOWN, "text/markdown")),
             ("file", ("faq.html", HTML, "text/html"))]
    uploaded = await http.post(f"{url}{RAG}/docs/documents", headers=auth(), files=files,
                               data={"metadata": '{"origin": "upload"}'})
    assert uploaded.status_code == 201, uploaded.text
    assert [(d["id"], d["source"], d["title"]) for d in uploaded.json()["data"]] == [
        ("notes.txt", "notes.txt", ""), ("guide.md", "guide.md", "Operations guide"),
        ("faq.html", "faq.html", "Shipping FAQ")]

    listed = (await http.get(f"{url}{RAG}/docs/documents", headers=auth())).json()
    assert [d["id"] for d in listed["data"]] == ["pw", billing_id, "notes.txt", "guide.md",
                                                 "faq.html"]
    assert listed["has_more"] is False
    page = (await http.get(f"{url}{RAG}/docs/documents", headers=auth(),
                           params={"limit": 2, "offset": 1})).json()
    assert [d["id"] for d in page["data"]] == [billing_id, "notes.txt"] and page["has_more"]
    assert_error(await http.get(f"{url}{RAG}/docs/documents", headers=auth(),
                                params={"limit": 0}), 400, param="limit")

    guide = (await http.get(f"{url}{RAG}/docs/documents/guide.md", headers=auth())).json()
    assert guide["metadata"] == {"origin": "upload"} and guide["kind"] == "markdown"
    assert [c["index"] for c in guide["data"]] == list(range(guide["chunks"]))
    assert "systemctl restart ailb" in " ".join(c["text"] for c in guide["data"])
    html = (await http.get(f"{url}{RAG}/docs/documents/faq.html", headers=auth())).json()
    text = " ".join(c["text"] for c in html["data"])
    assert "four working days" in text and "ignored" not in text

    found = (await query(http, url, "docs", "how can I reset my password?", top_k=2)).json()
    assert found["object"] == "list" and found["data"][0]["document_id"] == "pw"
    first = found["data"][0]
    assert set(first) == {"id", "document_id", "text", "score", "source", "section",
                          "metadata"}
    assert first["metadata"] == {"lang": "en", "version": 3}
    assert first["id"].startswith("pw::") and first["id"].endswith("::0")  # <doc>::<gen>::<n>
    shipping = (await query(http, url, "docs", "how long does shipping to Norway take",
                            top_k=1)).json()["data"]
    assert shipping[0]["document_id"] == "faq.html"
    assert shipping[0]["section"].startswith("Shipping")
    restart = (await query(http, url, "docs", "restart the gateway", top_k=1)).json()["data"]
    assert restart[0]["document_id"] == "guide.md"

    # re-adding an id replaces it; deleting removes it
    replaced = await add_json(http, url, "docs", [{"id": "pw", "text": "Kittens like milk."}])
    assert replaced.json()["data"][0]["chunks"] == 1
    pw = (await http.get(f"{url}{RAG}/docs/documents/pw", headers=auth())).json()
    assert [c["text"] for c in pw["data"]] == ["Kittens like milk."]
    gone = await http.delete(f"{url}{RAG}/docs/documents/pw", headers=auth())
    assert gone.json() == {"id": "pw", "object": "rag.document.deleted", "deleted": True,
                           "chunks_removed": 1}
    assert_error(await http.get(f"{url}{RAG}/docs/documents/pw", headers=auth()), 404,
                 "document_not_found")
    assert_error(await http.delete(f"{url}{RAG}/docs/documents/pw", headers=auth()), 404,
                 "document_not_found")
    info = (await http.get(f"{url}{RAG}/docs", headers=auth())).json()
    assert info["documents"] == 4


async def test_bad_documents_and_queries(start_gateway: StartGateway,
                                         http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    await create_collection(http, url, "docs")
    for documents, param in (
            ([{"text": "x", "metadata": {"tags": ["a", "b"]}}], "documents[0].metadata.tags"),
            ([{"text": "x"}, {"text": " "}], "documents[1].text"),
            ([{"text": "x", "format": "pdf"}], "documents[0].format"),
            ([{"text": "x", "id": "a/b"}], "documents[0].id"),
            ([{"text": "x", "colour": 1}], "documents[0].colour"),
            ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "documents"),
            ([], "documents")):
        assert_error(await add_json(http, url, "docs", documents), 400, param=param)
    pdf = await http.post(f"{url}{RAG}/docs/documents", headers=auth(),
                          files=[("file", ("a.pdf", b"%PDF-1.7 binary", "application/pdf"))])
    assert_error(pdf, 400, param="file")
    wrong_field = await http.post(f"{url}{RAG}/docs/documents", headers=auth(),
                                  files=[("upload", ("a.txt", b"text", "text/plain"))])
    assert_error(wrong_field, 400, param="upload")
    assert_error(await http.post(f"{url}{RAG}/docs/documents", headers=auth(), content=b"{"),
                 400)
    assert_error(await query(http, url, "docs", ""), 400, param="query")
    assert_error(await query(http, url, "docs", "x", top_k=0), 400, param="top_k")
    assert_error(await query(http, url, "docs", "x", min_score=2), 400, param="min_score")
    assert (await http.get(f"{url}{RAG}/docs", headers=auth())).json()["chunks"] == 0


async def test_uploads_respect_the_body_limit(start_gateway: StartGateway,
                                              http: httpx.AsyncClient) -> None:
    # RAG documents have a limit of their own (RAG.max_upload_bytes), not SERVER.max_body_bytes
    url = (await start_gateway(ENABLE_RAG=True, RAG={"max_upload_bytes": 20_000})).http_url
    await create_collection(http, url, "docs")
    big = await http.post(f"{url}{RAG}/docs/documents", headers=auth(),
                          files=[("file", ("big.txt", b"word " * 10_000, "text/plain"))])
    assert_error(big, 413, "request_too_large")
    small = await http.post(f"{url}{RAG}/docs/documents", headers=auth(),
                            files=[("file", ("small.txt", b"word " * 100, "text/plain"))])
    assert small.status_code == 201, small.text


async def test_permissions(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    plain = await new_key(http, url)
    granted = await new_key(http, url, rag_collections=["docs-*"])
    assert (await create_collection(http, url, "public")).status_code == 201
    assert (await add_json(http, url, "public", [{"id": "b", "text": BILLING}])).status_code \
        == 201

    # a key without a grant reads everything and changes nothing
    assert_error(await create_collection(http, url, "docs-x", key=plain), 403,
                 "collection_not_allowed")
    assert_error(await add_json(http, url, "public", [{"text": "x"}], key=plain), 403,
                 "collection_not_allowed")
    upload = await http.post(f"{url}{RAG}/public/documents", headers=auth(plain),
                             files=[("file", ("a.txt", b"text", "text/plain"))])
    assert_error(upload, 403, "collection_not_allowed")
    assert_error(await http.delete(f"{url}{RAG}/public/documents/b", headers=auth(plain)), 403)
    assert_error(await http.delete(f"{url}{RAG}/public", headers=auth(plain)), 403)
    assert (await query(http, url, "public", "invoices", key=plain)).status_code == 200
    assert (await http.get(f"{url}{RAG}/public/documents/b", headers=auth(plain))).status_code \
        == 200

    # a key granted docs-* fills docs-a, and reads only what it was granted
    assert (await create_collection(http, url, "docs-a", key=granted)).status_code == 201
    added = await add_json(http, url, "docs-a", [{"id": "pw", "text": PASSWORD}], key=granted)
    assert added.status_code == 201, added.text
    found = (await query(http, url, "docs-a", "reset password", key=granted)).json()["data"]
    assert found[0]["document_id"] == "pw"
    assert_error(await create_collection(http, url, "other", key=granted), 403)
    assert_error(await query(http, url, "public", "invoices", key=granted), 403,
                 "collection_not_allowed")
    names = [c["name"] for c in (await http.get(f"{url}{RAG}", headers=auth(granted))).json()[
        "data"]]
    assert names == ["docs-a"]
    plain_names = [c["name"] for c in (await http.get(f"{url}{RAG}",
                                                      headers=auth(plain))).json()["data"]]
    assert plain_names == ["docs-a", "public"]
    assert (await http.delete(f"{url}{RAG}/docs-a/documents/pw",
                              headers=auth(granted))).status_code == 200
    assert (await http.delete(f"{url}{RAG}/docs-a", headers=auth(granted))).status_code == 200


async def test_rag_disabled(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=False)).http_url
    assert_error(await http.get(f"{url}{RAG}", headers=auth()), 404, "rag_disabled")
    assert_error(await create_collection(http, url, "docs"), 404, "rag_disabled")


async def test_restart_keeps_rag(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ENABLE_RAG=True)
    async with httpx.AsyncClient(timeout=30) as http:
        async with trio.open_nursery() as first_life:
            running: Running = await first_life.start(run, settings)
            url = running.http_url
            await create_collection(http, url, "docs", metadata={"v": 1})
            await add_json(http, url, "docs", [{"id": "pw", "text": PASSWORD},
                                               {"id": "bill", "text": BILLING}])
            granted = await new_key(http, url, rag_collections=["docs"])
            running.request_shutdown()
        async with trio.open_nursery() as second_life:
            running = await second_life.start(run, settings)
            url = running.http_url
            info = (await http.get(f"{url}{RAG}/docs", headers=auth())).json()
            assert (info["documents"], info["chunks"], info["metadata"]) == (2, 2, {"v": 1})
            found = (await query(http, url, "docs", "reset my password", key=granted)).json()
            assert found["data"][0]["document_id"] == "pw"
            more = await add_json(http, url, "docs", [{"id": "x", "text": "More."}],
                                  key=granted)
            assert more.status_code == 201  # the grant survived the restart too
            running.request_shutdown()


def handbook(paragraphs: int) -> str:
    """Paragraphs of 18 words drawn (seeded) from a vocabulary of 120, and one that is not."""
    rng = random.Random(7)
    texts = [" ".join(rng.choice(VOCABULARY) for _ in range(18)) + "."
             for _ in range(paragraphs)]
    texts[paragraphs // 3] = "The zeppelin hangar key is kept in the blue cabinet by the door."
    return "\n\n".join(texts)


async def test_a_large_ingest_keeps_the_loop_responsive(start_gateway: StartGateway) -> None:
    running = await start_gateway(ENABLE_RAG=True, RAG={"chunk_chars": 200,
                                                        "chunk_overlap": 20})
    url = running.http_url
    text = handbook(3100)
    gaps: list[float] = []
    done = trio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await trio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    # A full garbage collection of this process's heap (pytest, the SDKs, ChromaDB) stalls the
    # loop for ~0.2 s whatever runs; the gateway's own heap is frozen the same way after
    # start-up. What is measured here is the ingest: parsing, chunking, embedding, writing.
    gc.collect()
    gc.freeze()
    try:
        async with httpx.AsyncClient(timeout=300) as http:
            await create_collection(http, url, "big")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                started = time.perf_counter()
                response = await add_json(http, url, "big", [{"id": "handbook", "text": text}])
                elapsed = time.perf_counter() - started
                done.set()
            assert response.status_code == 201, response.text
            chunks = response.json()["data"][0]["chunks"]
            worst = max(gaps)
            print(f"\ningested {chunks} chunks in {elapsed:.2f} s; largest gap between 5 ms "
                  f"ticks {worst * 1000:.1f} ms over {len(gaps)} ticks")
            assert chunks >= 3000
            assert worst < 0.3
            found = (await query(http, url, "big", "where is the zeppelin hangar key kept?",
                                 top_k=3)).json()["data"]
            assert "zeppelin" in found[0]["text"]
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("path", [f"{RAG}/docs/documents/a", f"{RAG}/docs"])
async def test_unknown_method_is_openai_shaped(start_gateway: StartGateway,
                                               http: httpx.AsyncClient, path: str) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    assert_error(await http.put(f"{url}{path}", headers=auth(), json={}), 405)


async def test_text_that_is_not_text_is_refused_with_400(start_gateway: StartGateway) -> None:
    running = await start_gateway(ENABLE_RAG=True)
    url = running.http_url
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{url}/v1/rag/collections", headers=auth(),
                                json={"name": "t"})).status_code == 201
        surrogate = '{"documents": [{"id": "a", "text": "bad \\ud800 text"}]}'
        bad = await http.post(f"{url}/v1/rag/collections/t/documents", content=surrogate,
                              headers={**auth(), "content-type": "application/json"})
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["param"] == "documents[0].text"
        rot13 = await http.post(f"{url}/v1/rag/collections/t/documents", headers=auth(),
                                files=[("file", ("a.txt", b"uryyb", "text/plain; charset=rot13"))])
        assert rot13.status_code == 400, rot13.text
        assert rot13.json()["error"]["param"] == "file"


def chat_with(http: httpx.AsyncClient, url: str, rag: Any, key: str | None = None) -> Any:
    return http.post(f"{url}/v1/chat/completions", headers=auth(key) if key else auth(),
                     json={"model": "echo-1", "rag": rag,
                           "messages": [{"role": "user", "content": "hi"}]})


async def test_chat_opt_in_needs_rag_on(start_gateway: StartGateway,
                                        http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=False)).http_url
    assert_error(await chat_with(http, url, {"collection": "docs"}), 400, "rag_disabled", "rag")


async def test_chat_opt_in_errors(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    assert_error(await chat_with(http, url, {"collection": "nope"}), 404, "collection_not_found")
    assert_error(await chat_with(http, url, {"collection": "docs", "top_k": 0}), 400,
                 param="rag.top_k")
    assert (await create_collection(http, url, "docs")).status_code == 201
    narrow = (await http.post(f"{url}/admin/keys", headers=auth(), json={
        "name": "narrow", "rag_collections": ["other-*"]})).json()["key"]
    assert_error(await chat_with(http, url, {"collection": "docs"}, narrow), 403,
                 "collection_not_allowed")
    ok = await chat_with(http, url, {"collection": "docs"})
    assert ok.status_code == 200 and ok.headers["x-ailb-rag-sources"] == ""
