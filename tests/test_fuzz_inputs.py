"""Property-based fuzzing of every public body: one field at a time (any field the declared
shapes name, at any depth) set to a wrong-typed or boundary value, raw JSON literals no
Python value makes (``1e400``, 400-digit integers, lone surrogates), and bodies that are not
JSON at all. Asserts: never a 5xx, every error in the API's own shape, and the server still
answers afterwards. Runs against one real AILB process (tests/fuzz_server.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ailb.schemas import admin, anthropic, openai, rag, responses_api
from tests.conftest import ADMIN_KEY, auth
from tests.fuzz_server import COLLECTION, MODEL, FuzzServer, error_shape_ok, start

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
RAW = "\u2063raw\u2063"  # stands for a raw JSON literal, put in after encoding
_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
# (method, path, valid body, its shape, use the admin key)
ENDPOINTS: list[tuple[str, str, dict[str, Any], type, bool]] = [
    ("POST", "/v1/chat/completions", _CHAT, openai.ChatCompletionRequest, False),
    ("POST", "/v1/messages", _CHAT, anthropic.MessagesRequest, False),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": "hi"}, openai.EmbeddingRequest,
     False),
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi"}, responses_api.ResponsesRequest,
     False),
    ("POST", "/v1/messages/count_tokens", {"model": MODEL, "messages": _CHAT["messages"]},
     anthropic.CountTokensRequest, False),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 16},
     openai.CompletionRequest, False),
    ("POST", "/admin/keys", {"name": "k"}, admin.KeyCreate, True),
    ("PATCH", "/admin/keys/{key}", {"rpm_limit": 5}, admin.KeyUpdate, True),
    ("POST", "/admin/teams", {"id": "t1"}, admin.TeamCreate, True),
    ("PATCH", "/admin/teams/fuzz-team", {"rpm_limit": 5}, admin.TeamUpdate, True),
    ("POST", "/console/session", {"admin_key": ADMIN_KEY}, admin.ConsoleSignIn, False),
    ("POST", "/v1/rag/collections", {"name": "c1"}, rag.CollectionCreate, True),
    ("POST", f"/v1/rag/collections/{COLLECTION}/documents",
     {"documents": [{"text": "hello"}]}, rag.DocumentsAdd, True),
    ("POST", f"/v1/rag/collections/{COLLECTION}/query", {"query": "inputs"}, rag.QueryRequest,
     False),
]
LITERALS = ["1e400", "-1e400", "1" + "0" * 400, "-" + "9" * 400, "18446744073709551616",
            "9223372036854775808", "-9223372036854775809", "9007199254740993", "1E-400", "-0",
            "0.1e1", '"\\ud800"', '"a\\udfffb"', '"\\u0000"', "[" * 300 + "]" * 300,
            "{}", "[]", "null", "true", '""']


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    yield from start(tmp_path_factory.mktemp("fuzz"))


def field_paths(shape: Any, depth: int = 0) -> list[tuple[str | int, ...]]:
    """Every field path a shape declares (lists entered at index 0), to depth 7."""
    info = shape if isinstance(shape, msgspec.inspect.Type) else msgspec.inspect.type_info(shape)
    paths: list[tuple[str | int, ...]] = []
    if depth > 7:
        return paths
    if isinstance(info, msgspec.inspect.StructType):
        for field in info.fields:
            paths.append((field.encode_name,))
            paths += [(field.encode_name, *rest) for rest in field_paths(field.type, depth + 1)]
    elif isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            paths += field_paths(member, depth)
    elif isinstance(info, msgspec.inspect.ListType):
        paths.append((0,))
        paths += [(0, *rest) for rest in field_paths(info.item_type, depth + 1)]
    elif isinstance(info, msgspec.inspect.DictType):
        paths.append(("k",))
    elif isinstance(info, msgspec.inspect.Metadata):
        paths += field_paths(info.type, depth)
    return sorted(set(paths), key=lambda p: [str(x) for x in p])


def put(body: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """``body`` with ``value`` at ``path``, making the objects and lists on the way."""
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(body) if isinstance(body, list) and body else [{}]
        items[0] = put(items[0], rest, value) if rest else value
        return items
    out = dict(body) if isinstance(body, dict) else {}
    out[head] = put(out.get(head), rest, value) if rest else value
    return out


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308,
                     5e-324, 0.5]),
    st.text(max_size=12), st.sampled_from(["", " ", "\ud800", "a\udc00", "\x00", "x" * 5000]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def encode(body: Any, literal: str | None) -> bytes:
    text = json.dumps(body)  # ensure_ascii: a lone surrogate goes as "\ud800"
    if literal is not None:
        text = text.replace(json.dumps(RAW), literal)
    return text.encode()


def call(server: FuzzServer, method: str, path: str, admin_key: bool, data: bytes,
         key_id: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        headers = {**(auth() if admin_key else auth(server.key)),
                   "content-type": "application/json"}
        return client.request(method, f"{server.url}{path.replace('{key}', key_id)}",
                              content=data, headers=headers)


def check(reply: httpx.Response, path: str, sent: bytes) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:500], sent[:500])
    if reply.status_code >= 400:
        assert error_shape_ok(path.split("?")[0], reply.json()), (reply.text[:500], sent[:300])


@pytest.fixture(scope="module")
def key_id(server: FuzzServer) -> str:
    made = httpx.post(f"{server.url}/admin/keys", headers=auth(), json={"name": "patched"})
    httpx.post(f"{server.url}/admin/teams", headers=auth(), json={"id": "fuzz-team"})
    found: str = made.json()["id"]
    return found


@pytest.mark.parametrize(("method", "path", "valid", "shape", "admin_key"), ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_one_field_wrong(server: FuzzServer, key_id: str, method: str, path: str,
                         valid: dict[str, Any], shape: type, admin_key: bool,
                         data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(field_paths(shape)), label="field")
    literal = data.draw(st.one_of(st.none(), st.sampled_from(LITERALS)), label="literal")
    value = RAW if literal is not None else data.draw(values, label="value")
    body = put(valid, field, value)
    if body.get("stream") is True:
        body["stream"] = False  # the stream path is fuzzed the same way; keep answers short
    sent = encode(body, literal)
    check(call(server, method, path, admin_key, sent, key_id), path, sent)


@pytest.mark.parametrize(("method", "path", "valid", "shape", "admin_key"), ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(max_size=64), st.sampled_from([
    b"", b"[]", b"null", b"1", b'"x"', b"{", b'{"model": }', b"\xff\xfe{}", b"[" * 100_000,
    b'{"model": NaN}', b'{"a": Infinity}', b'{"\\ud800": 1}'])))
def test_bodies_that_are_not_objects(server: FuzzServer, key_id: str, method: str, path: str,
                                     valid: dict[str, Any], shape: type, admin_key: bool,
                                     raw: bytes) -> None:
    reply = call(server, method, path, admin_key, raw, key_id)
    check(reply, path, raw)
    empty_patch = method == "PATCH" and not raw  # no body: nothing to change
    assert reply.status_code == (200 if empty_patch else 400), reply.text


def test_streams_with_a_wrong_field(server: FuzzServer) -> None:
    """The stream path refuses the same bad fields before it opens a stream."""
    for path in ("/v1/chat/completions", "/v1/messages"):
        for field, value in (("max_tokens", 10**400), ("temperature", "hot"),
                             ("stop_sequences" if path == "/v1/messages" else "stop", 3)):
            sent = encode({**_CHAT, "stream": True, field: value}, None)
            reply = call(server, "POST", path, False, sent, "")
            assert reply.status_code == 400, reply.text
            check(reply, path, sent)


def test_the_server_still_answers(server: FuzzServer) -> None:
    assert server.alive()
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_field_paths_cover_nested_fields() -> None:
    paths = field_paths(openai.ChatCompletionRequest)
    assert ("messages", 0, "tool_calls", 0, "function", "arguments") in paths
    assert ("stream_options", "include_usage") in paths
    assert ("tools", 0, "function", "parameters") in paths
    assert ("messages", 0, "content", 0, "type") in paths
    assert put({"a": [{"b": 1}]}, ("a", 0, "c", "d"), 2) == {"a": [{"b": 1, "c": {"d": 2}}]}
    assert Path(__file__).name.startswith("test_fuzz")
