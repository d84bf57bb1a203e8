"""Pure routing pieces (route table, least-loaded choice) and health probes over MockTransport."""

from __future__ import annotations

import itertools
import random

import httpx
import pytest
import trio

from ailb.config.parse import parse_mapping
from ailb.config.schema import UpstreamSettings
from ailb.errors import NotFound
from ailb.health import HealthBoard, probe_forever
from ailb.metrics import Metrics
from ailb.providers.anthropic import AnthropicProvider
from ailb.providers.base import ProbeResult
from ailb.providers.http import make_client, retry_after_s
from ailb.providers.ollama import OllamaProvider
from ailb.providers.openai import OpenAIProvider
from ailb.routing.table import RouteTable

SETTINGS = parse_mapping({
    "deployments": [
        {"name": "a", "type": "openai", "base_url": "http://a/v1", "models": ["gpt-x", "shared"]},
        {"name": "b", "type": "openai", "base_url": "http://b/v1", "models": ["shared"],
         "weight": 3},
        {"name": "o", "type": "ollama", "base_url": "http://o:11434"},
    ],
    "aliases": {"smart": {"strategy": "failover", "targets": ["b/shared", "a/gpt-x"]}},
}, {})


def test_route_resolution_order() -> None:
    table = RouteTable(SETTINGS)
    smart = table.resolve("smart", {})
    assert smart.strategy == "failover"
    assert [(t.deployment, t.model) for t in smart.targets] == [("b", "shared"), ("a", "gpt-x")]
    shared = table.resolve("shared", {})
    assert [(t.deployment, t.weight) for t in shared.targets] == [("a", 1.0), ("b", 3.0)]
    assert shared.strategy == "load_balanced"
    pinned = table.resolve("a/some-new-model", {})
    assert [(t.deployment, t.model) for t in pinned.targets] == [("a", "some-new-model")]
    assert table.resolve("llama3", {"o": ("llama3",)}).targets[0].provider == "ollama"
    with pytest.raises(NotFound) as info:
        table.resolve("llama3", {})
    assert (info.value.code, info.value.param, info.value.status) == \
        ("model_not_found", "model", 404)
    names = [r.public for r in table.public_models({"o": ("llama3",)})]
    assert names == ["smart", "gpt-x", "shared", "llama3"]


def _mock(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return make_client(SETTINGS.deployment("a"), UpstreamSettings(), handler)


async def test_ollama_probe_discovers_models() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"models": [{"name": "llama3:8b"}, {"name": "qwen"}]})

    async with _mock(httpx.MockTransport(handle)) as client:
        result = await OllamaProvider(SETTINGS.deployment("o"), client).probe()
    assert seen == ["http://o:11434/api/tags"]
    assert result.ok and result.models == ("llama3:8b", "qwen")


async def test_anthropic_probe_sends_its_headers() -> None:
    settings = parse_mapping({"ANTHROPIC_API_KEY": "sk-ant-1"}, {})
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"type": "error", "error": {"type": "auth"}})

    async with _mock(httpx.MockTransport(handle)) as client:
        result = await AnthropicProvider(settings.deployment("anthropic"), client).probe()
    assert str(seen[0].url) == "https://api.anthropic.com/v1/models"
    assert seen[0].headers["x-api-key"] == "sk-ant-1"
    assert seen[0].headers["anthropic-version"]
    assert not result.ok and result.detail == "HTTP 401"


async def test_openai_probe_failure_kinds() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with _mock(httpx.MockTransport(refuse)) as client:
        result = await OpenAIProvider(SETTINGS.deployment("a"), client).probe()
    assert not result.ok and result.detail == "ConnectError"


async def test_probe_loop_marks_down_then_up(autojump_clock: trio.testing.MockClock) -> None:
    answers = itertools.chain([200, 500, 500], itertools.repeat(200))

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={"data": []})

    board = HealthBoard(["a"])
    metrics = Metrics()
    states: list[str] = []
    health = parse_mapping({"health": {"interval_s": 10, "jitter": 0}}, {}).health
    async with _mock(httpx.MockTransport(handle)) as client, trio.open_nursery() as nursery:
        provider = OpenAIProvider(SETTINGS.deployment("a"), client)
        await nursery.start(probe_forever, provider, board, health, metrics, random.Random(1))
        await trio.sleep(5)  # sample between probes (t = 5, 15, 25, 35)
        for _ in range(4):
            states.append(board.snapshot()["a"].state)
            await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert states == ["up", "up", "down", "up"]  # down after two failures in a row
    assert board.snapshot()["a"].consecutive_failures == 0


def test_board_records_failures() -> None:
    board = HealthBoard(["x"])
    assert board.routable("x") and not board.any_up()  # unknown: routable, not yet "up"
    board.record("x", ProbeResult(False, 0.1, "HTTP 500"), 1.0)
    board.record("x", ProbeResult(False, 0.1, "HTTP 500"), 2.0)
    assert not board.routable("x")
    assert board.snapshot()["x"].consecutive_failures == 2


async def test_a_crashing_probe_is_a_failed_probe() -> None:
    class Broken:
        deployment = SETTINGS.deployment("a")

        async def probe(self) -> ProbeResult:
            raise TypeError("'NoneType' object is not iterable")

    board = HealthBoard(["a"])
    health = parse_mapping({"health": {"interval_s": 10, "down_after": 1}}, {}).health
    async with trio.open_nursery() as nursery:
        await nursery.start(probe_forever, Broken(), board, health, Metrics(), random.Random(1))
        nursery.cancel_scope.cancel()
    record = board.snapshot()["a"]
    assert (record.state, record.detail) == ("down", "TypeError")


def test_retry_after_forms() -> None:
    assert retry_after_s({"retry-after": "7"}) == 7
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "7"}) == 1.5
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
                         now=1445412480.0) == 10.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None
