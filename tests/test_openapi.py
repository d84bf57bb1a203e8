"""``/openapi.json`` and ``/docs``: the document covers every route the application serves,
with every method, and nothing it does not; it is valid OpenAPI 3.1; its request schemas are
the shapes the doors check (a body the schema refuses, the door refuses)."""

from __future__ import annotations

import re

import httpx
import jsonschema
import pytest
from quart_trio import QuartTrio

from ailb.http_api.app import create_app
from ailb.schemas.openapi import OPERATIONS, document
from tests.conftest import StartGateway


def _served(app: QuartTrio) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes |= {(method.lower(), path) for method in rule.methods or ()
                   if method not in ("HEAD", "OPTIONS")}
    return routes


async def test_the_document_lists_every_route_and_only_those(
        start_gateway: StartGateway) -> None:
    running = await start_gateway(ENABLE_RAG=True, ENABLE_MEMORY=True)
    app = create_app(running.services)
    documented = {(o.method, o.path) for o in OPERATIONS}
    assert _served(app) == documented
    paths = document()["paths"]
    assert {(m, p) for p, ops in paths.items() for m in ops} == documented


async def test_served_and_rendered(start_gateway: StartGateway,
                                   http: httpx.AsyncClient) -> None:
    url = (await start_gateway()).http_url
    served = await http.get(f"{url}/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("application/json")
    assert served.json() == document()
    page = await http.get(f"{url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in page.text and "/openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN


def test_every_operation_loads_in_an_openapi_tool() -> None:
    import schemathesis

    loaded = schemathesis.openapi.from_dict(document())
    found = [result.ok() for result in loaded.get_all_operations()]
    assert len(found) == len(OPERATIONS)
    for schema in document()["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def _request_schema(path: str, method: str = "post") -> dict[str, object]:
    doc = document()
    ref = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return {**ref, "components": doc["components"]}


@pytest.mark.parametrize(("body", "ok"), [
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, True),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "new_field": [1]}, True),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": 3}]}, False),
    ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 2**31}, False),
    ({"model": "m", "messages": [{"role": "user"}], "stream": "x"}, False),
    ({"model": "m", "messages": []}, False),
])
def test_the_schema_says_what_the_door_checks(body: dict[str, object], ok: bool) -> None:
    from ailb.errors import InvalidRequest
    from ailb.pipeline.chat_parse import parse_chat

    schema = _request_schema("/v1/chat/completions")
    valid = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        parse_chat(body, "r")
        accepted = True
    except InvalidRequest:
        accepted = False
    assert valid == accepted == ok
