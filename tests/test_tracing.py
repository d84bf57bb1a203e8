"""OpenTelemetry traces end to end: a gateway with the OTEL_* variables set exports its spans
over OTLP/HTTP (protobuf) to a receiver on loopback, which decodes them. The span tree, the
GenAI attributes, W3C trace context from the client (HTTP headers, gRPC metadata) and to the
upstream, retries and hedges as separate attempt spans, streams; and nothing at all when the
variables are not set."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from grpclib.client import Channel

from ailb.config.tracing import parse_tracing
from ailb.errors import ConfigError
from ailb.grpc_api.gen.ailb.v1 import gateway_grpc
from ailb.grpc_api.gen.ailb.v1 import gateway_pb2 as gw
from ailb.pipeline.exchange import Exchange
from ailb.routing.table import Target
from ailb.supervisor import Running, run
from ailb.telemetry.spans import NOTHING, attempt, step, upstream_call
from tests.conftest import ADMIN_KEY, SDKFactory, StartGateway, auth, in_thread, make_settings
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.otlp_collector import Collector, ReceivedSpan, start_collector
from tests.test_grpc import on_asyncio
from tests.test_rag_api import add_json, create_collection
from tests.test_resilience import pair

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
MSGS = [{"role": "user", "content": "hello"}]


def otel(endpoint: str, **more: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "20",
            "OTEL_SERVICE_NAME": "ailb-test", **more}


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan,
             name: str | None = None) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.parent_id == parent.span_id and
                   (name is None or s.name == name)), key=lambda s: s.start_ns)


def has_request(name: str, count: int = 1) -> Any:
    return lambda spans: len([s for s in spans if s.name == name and s.kind == "server"]) >= count


async def test_a_chat_request_is_traced_under_the_clients_span(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    fake = FakeOpenAI()
    base = await start_fake(nursery, fake)
    gateway = await start_gateway(
        environ=otel(endpoint, OTEL_EXPORTER_OTLP_HEADERS="x-tenant=acme%20co",
                     OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test"),
        deployments=[{"name": "up", "type": "openai", "base_url": base,
                      "models": ["gpt-4o"]}])
    client = sdk(gateway.http_url)
    answer = await in_thread(lambda: client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MSGS, max_tokens=50, temperature=0.5,
        extra_headers={"traceparent": TRACEPARENT, "tracestate": "vendor=x"}))
    request_id = answer.headers["x-request-id"]
    spans = await collector.wait_for(has_request("chat gpt-4o"))
    spans = await collector.wait_for(lambda s: len(named(s, "POST")) >= 1)

    [request] = named(spans, "chat gpt-4o")
    assert request.kind == "server"
    assert (request.trace_id, request.parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
    a = request.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.response.model"] == "gpt-4o"
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    assert a["ailb.request_id"] == request_id and a["ailb.key_id"] == "admin"
    assert a["ailb.stream"] is False
    assert request.resource["service.name"] == "ailb-test"
    assert request.resource["deployment.environment"] == "test"
    assert collector.posts[0]["x-tenant"] == "acme co"

    [admission] = children(spans, request, "ailb.admission")
    [attempt] = children(spans, request, "ailb.attempt")
    assert attempt.attributes["ailb.attempt"] == 1
    assert attempt.attributes["ailb.deployment"] == "up"
    assert attempt.attributes["ailb.hedge"] is False
    assert attempt.attributes["ailb.outcome"] == "ok"
    [upstream] = children(spans, attempt, "POST")
    assert upstream.kind == "client" and upstream.trace_id == CLIENT_TRACE
    assert upstream.attributes["http.response.status_code"] == 200
    assert upstream.attributes["url.full"] == f"{base}/chat/completions"
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}
    assert admission.end_ns <= attempt.start_ns

    # the upstream received the trace context, its parent being the upstream-call span
    [chat] = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert chat.headers["traceparent"] == f"00-{CLIENT_TRACE}-{upstream.span_id}-01"
    assert chat.headers["tracestate"] == "vendor=x"


async def test_a_retry_after_an_upstream_500_shows_two_attempts(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    p = await pair(nursery, start_gateway, environ=otel(endpoint))
    p.a.status = 500
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await p.chat(http)
    assert answer.status_code == 200 and answer.headers["x-ailb-attempts"] == "2"
    spans = await collector.wait_for(lambda s: has_request("chat m")(s) and
                                     len(named(s, "POST")) >= 2)
    [request] = named(spans, "chat m")
    assert request.parent_id == ""  # no traceparent: a new trace
    first, second = children(spans, request, "ailb.attempt")
    assert [first.attributes["ailb.attempt"], second.attributes["ailb.attempt"]] == [1, 2]
    assert first.attributes["ailb.deployment"] == "a" and second.attributes[
        "ailb.deployment"] == "b"
    assert first.attributes["ailb.outcome"] == "error" and first.status == 2
    assert first.attributes["error.type"] == "status"
    assert second.attributes["ailb.outcome"] == "ok"
    [failed] = children(spans, first, "POST")
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["error.type"] == "500"
    assert children(spans, second, "POST")[0].attributes["http.response.status_code"] == 200
    assert request.attributes["ailb.attempts"] == 2
    assert request.attributes["ailb.deployment"] == "b"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hedged_attempt_is_its_own_span(nursery: trio.Nursery,
                                                start_gateway: StartGateway,
                                                stream: bool) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    p = await pair(nursery, start_gateway, environ=otel(endpoint))
    p.a.latency_s = 5
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await p.chat(http, stream=stream, headers={"x-ailb-hedge-ms": "100"})
    assert answer.headers["x-ailb-hedged"] == "b"
    spans = await collector.wait_for(lambda s: has_request("chat m")(s) and
                                     len(named(s, "ailb.attempt")) >= 2)
    [request] = named(spans, "chat m")
    first, hedge = children(spans, request, "ailb.attempt")
    assert first.attributes["ailb.deployment"] == "a" and first.attributes["ailb.hedge"] is False
    assert first.attributes["ailb.outcome"] == "cancelled"  # the loser
    assert hedge.attributes["ailb.deployment"] == "b" and hedge.attributes["ailb.hedge"] is True
    assert hedge.attributes["ailb.attempt"] == 2 and hedge.attributes["ailb.outcome"] == "ok"
    assert len(children(spans, hedge, "POST")) == 1


async def test_a_streamed_request_has_its_usage_and_finish_reason(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    fake = FakeOpenAI(reply="one two three four")
    base = await start_fake(nursery, fake)
    gateway = await start_gateway(environ=otel(endpoint), deployments=[
        {"name": "up", "type": "openai", "base_url": base, "models": ["gpt-4o"]}])
    client = sdk(gateway.http_url)

    def consume() -> str:
        stream = client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert await in_thread(consume) == "one two three four"
    spans = await collector.wait_for(lambda s: has_request("chat gpt-4o")(s) and
                                     len(named(s, "POST")) >= 1)
    [request] = named(spans, "chat gpt-4o")
    a = request.attributes
    assert a["ailb.stream"] is True
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.output_tokens"] > 0 and a["gen_ai.usage.input_tokens"] > 0
    [attempt] = children(spans, request, "ailb.attempt")
    [upstream] = children(spans, attempt, "POST")
    assert upstream.end_ns >= attempt.end_ns  # the upstream call lasts until the stream ends
    assert upstream.end_ns <= request.end_ns


async def test_embeddings_and_grpc_take_the_trace_context_from_metadata(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    gateway = await start_gateway(environ=otel(endpoint))
    async with httpx.AsyncClient(timeout=10) as http:
        embedded = await http.post(f"{gateway.http_url}/v1/embeddings", headers=auth(),
                                   json={"model": "echo-1", "input": "a b"})
    assert embedded.status_code == 200

    async def go() -> Any:
        channel = Channel("127.0.0.1", gateway.grpc_port)
        try:
            return await gateway_grpc.GatewayStub(channel).ChatComplete(
                gw.ChatRequest(model="echo-1", messages=[gw.Message(role="user", content="hi")]),
                metadata={"authorization": f"Bearer {ADMIN_KEY}", "traceparent": TRACEPARENT})
        finally:
            channel.close()

    reply = await on_asyncio(go)
    assert json.loads(reply.body_json)["choices"]
    spans = await collector.wait_for(lambda s: has_request("chat echo-1")(s) and
                                     has_request("embeddings echo-1")(s))
    [chat] = named(spans, "chat echo-1")
    assert (chat.trace_id, chat.parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert chat.attributes["gen_ai.provider.name"] == "echo"
    [embed] = named(spans, "embeddings echo-1")
    assert embed.attributes["gen_ai.operation.name"] == "embeddings"
    assert embed.trace_id != CLIENT_TRACE


async def test_memory_and_retrieval_are_steps_of_the_request(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    gateway = await start_gateway(environ=otel(endpoint), ENABLE_RAG=True)
    url = gateway.http_url
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await create_collection(http, url, "docs")).status_code == 201
        added = await add_json(http, url, "docs", [{"text": "The gateway is called AILB."}])
        assert added.status_code in (200, 201), added.text
        answer = await http.post(f"{url}/v1/chat/completions", headers={
            **auth(), "x-session-id": "s1", "x-ailb-rag-collection": "docs"},
            json={"model": "echo-1", "messages": [
                {"role": "user", "content": "What is the gateway called?"}]})
    assert answer.status_code == 200 and answer.headers["x-ailb-rag-sources"]
    spans = await collector.wait_for(lambda s: has_request("chat echo-1")(s) and
                                     bool(named(s, "ailb.memory.save")))
    [request] = named(spans, "chat echo-1")
    steps = [s.name for s in children(spans, request)]
    assert steps == ["ailb.memory.load", "ailb.rag.retrieve", "ailb.admission",
                     "ailb.attempt", "ailb.memory.save"]
    [retrieve] = children(spans, request, "ailb.rag.retrieve")
    assert retrieve.attributes["ailb.rag.collection"] == "docs"
    assert children(spans, children(spans, request, "ailb.attempt")[0]) == []  # echo: no HTTP


async def test_errors_are_on_the_request_span(nursery: trio.Nursery,
                                              start_gateway: StartGateway) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    gateway = await start_gateway(environ=otel(endpoint))
    async with httpx.AsyncClient(timeout=10) as http:
        missing = await http.post(f"{gateway.http_url}/v1/chat/completions", headers=auth(),
                                  json={"model": "nobody-serves-this", "messages": MSGS})
    assert missing.status_code == 404
    spans = await collector.wait_for(has_request("chat nobody-serves-this"))
    [request] = named(spans, "chat nobody-serves-this")
    assert request.attributes["http.response.status_code"] == 404
    assert request.attributes["error.type"] == missing.json()["error"]["type"]
    assert request.status == 0  # a client's error is not the server span's


@pytest.mark.parametrize("environ", [
    {},  # nothing set: off
    {"OTEL_SDK_DISABLED": "true"},
    {"OTEL_TRACES_EXPORTER": "none"},
])
async def test_without_an_endpoint_nothing_is_traced(
        nursery: trio.Nursery, start_gateway: StartGateway, environ: dict[str, str]) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    if environ:  # the endpoint is set, and something else says no
        environ = {**otel(endpoint), **environ}
    gateway = await start_gateway(environ=environ)
    assert gateway.services.tracer is None and not gateway.services.settings.tracing.enabled
    async with httpx.AsyncClient(timeout=10) as http:
        for stream in (False, True):
            answer = await http.post(f"{gateway.http_url}/v1/chat/completions",
                                     headers={**auth(), "traceparent": TRACEPARENT},
                                     json={"model": "echo-1", "messages": MSGS,
                                           "stream": stream})
            assert answer.status_code == 200
        await trio.sleep(0.2)  # 10 schedule delays of the enabled case
        metrics = (await http.get(f"{gateway.http_url}/metrics", headers=auth())).text
    assert collector.posts == [] and collector.spans == []
    assert "ailb_trace_spans_total{" not in metrics


async def test_spans_the_buffer_cannot_hold_are_dropped_and_counted(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    collector = Collector()
    collector.status = 503  # the collector refuses everything
    endpoint = await start_collector(nursery, collector)
    gateway = await start_gateway(environ=otel(endpoint, OTEL_BSP_MAX_QUEUE_SIZE="2",
                                               OTEL_BSP_SCHEDULE_DELAY="1000"))
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(3):
            answer = await http.post(f"{gateway.http_url}/v1/chat/completions",
                                     headers=auth(), json={"model": "echo-1",
                                                           "messages": MSGS})
            assert answer.status_code == 200  # telemetry never fails a request
        metrics = (await http.get(f"{gateway.http_url}/metrics", headers=auth())).text
    assert 'ailb_trace_spans_total{outcome="dropped_buffer_full"}' in metrics


async def test_the_spans_left_at_shutdown_are_sent_before_the_process_ends(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    collector = Collector()
    endpoint = await start_collector(nursery, collector)
    settings = make_settings(tmp_path, otel(endpoint, OTEL_BSP_SCHEDULE_DELAY="60000"))
    async with trio.open_nursery() as gateway_nursery:
        running: Running = await gateway_nursery.start(partial(run, settings,
                                                               load=lambda: settings))
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(f"{running.http_url}/v1/chat/completions", headers=auth(),
                                     json={"model": "echo-1", "messages": MSGS})
        assert answer.status_code == 200
        await trio.sleep(0.1)
        assert collector.spans == []  # a batch waits a minute to fill...
        running.request_shutdown(grace_s=1)
    # ...but the gateway sends it on its way out
    assert [s.name for s in collector.spans if s.kind == "server"] == ["chat echo-1"]


def test_with_tracing_off_the_request_path_makes_nothing() -> None:
    exchange = Exchange("r1")  # the frame sets no trace while services.tracer is None
    assert exchange.trace is None
    # the same shared no-op for every step and attempt: nothing allocated per request
    assert step(exchange.trace, "ailb.admission") is NOTHING
    assert attempt(exchange, Target("a", "m", "openai")) is NOTHING
    with attempt(exchange, Target("a", "m", "openai")):
        assert upstream_call("POST", "http://upstream/v1/chat/completions") is None


def test_the_otel_variables() -> None:
    assert not parse_tracing({}).enabled
    on = parse_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
                        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, x=1",
                        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
                        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": "0.25",
                        "OTEL_RESOURCE_ATTRIBUTES": "service.name=gw,team=ml"})
    assert on.endpoint == "http://collector:4318/v1/traces" and on.enabled
    assert {k: v.value for k, v in on.headers.items()} == {"api-key": "s=cret", "x": "1"}
    assert repr(on.headers["api-key"]) == "Secret('***')"
    assert on.timeout_s == 2.5 and on.sampler_arg == 0.25 and on.service_name == "gw"
    assert dict(on.resource) == {"team": "ml"}
    assert parse_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/traces",
                          "OTEL_SERVICE_NAME": "named"}).endpoint == "https://b/traces"
    assert not parse_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                              "OTEL_SDK_DISABLED": "TRUE"}).enabled
    for bad in ({"OTEL_TRACES_SAMPLER": "sometimes"}, {"OTEL_TRACES_EXPORTER": "zipkin"},
                {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
                {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
                {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}):
        with pytest.raises(ConfigError):
            parse_tracing(bad)


async def test_a_failed_export_is_logged_without_the_endpoints_password(
        nursery: trio.Nursery, start_gateway: StartGateway,
        caplog: pytest.LogCaptureFixture) -> None:
    collector = Collector()
    collector.status = 400  # refused for good: logged at once, no retries
    endpoint = await start_collector(nursery, collector)
    with_user = endpoint.replace("http://", "http://otel:CollectorPw1@")
    gateway = await start_gateway(environ=otel(with_user))
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{gateway.http_url}/v1/chat/completions", headers=auth(),
                                 json={"model": "echo-1", "messages": MSGS})
    assert answer.status_code == 200
    with trio.fail_after(5):
        while not (warned := [r for r in caplog.records if r.getMessage() ==
                              "spans not exported"]):
            await trio.sleep(0.02)
    assert warned[0].fields["endpoint"] == with_user.replace("CollectorPw1", "***")  # type: ignore[attr-defined]
    assert "CollectorPw1" not in caplog.text + repr([r.__dict__ for r in caplog.records])
