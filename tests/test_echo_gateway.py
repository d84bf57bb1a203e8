"""The quick-start path: AILB with no provider serves the offline echo deployment, driven by
the official ``openai`` SDK over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import SDKFactory, StartGateway, auth, in_thread


async def test_chat_completion_through_the_sdk(
    sdk: SDKFactory, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    client = sdk(gw.http_url)
    raw = await in_thread(
        lambda: client.chat.completions.with_raw_response.create(
            model="echo-1", messages=[{"role": "user", "content": "Hello there, world!"}]
        )
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there, world!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 5)
    assert raw.headers["x-ailb-provider"] == "echo"
    assert raw.headers["x-ailb-model"] == "echo/echo-1"
    assert float(raw.headers["x-ailb-overhead-ms"]) >= 0
    assert len(raw.headers["x-request-id"]) >= 16


async def test_streaming_with_and_without_usage(
    sdk: SDKFactory, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    client = sdk(gw.http_url)
    messages = [{"role": "user", "content": "one two three"}]

    def collect(**extra: object) -> list[openai.types.chat.ChatCompletionChunk]:
        return list(
            client.chat.completions.create(model="echo-1", messages=messages, stream=True, **extra)
        )  # type: ignore[call-overload]

    plain = await in_thread(collect)
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == "one two three"
    assert all(c.choices for c in plain)  # no usage-only chunk unless asked
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"

    with_usage = await in_thread(lambda: collect(stream_options={"include_usage": True}))
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in with_usage[:-1])


async def test_max_tokens_truncates_with_length(
    sdk: SDKFactory, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    completion = await in_thread(
        lambda: sdk(gw.http_url).chat.completions.create(
            model="echo-1", max_tokens=2, messages=[{"role": "user", "content": "a b c d"}]
        )
    )
    assert completion.choices[0].message.content == "a b"
    assert completion.choices[0].finish_reason == "length"


async def test_models_list(sdk: SDKFactory, start_gateway: StartGateway) -> None:
    gw = await start_gateway(ECHO_MODELS="echo-1,echo-2", aliases={"friendly": ["echo/echo-2"]})
    models = await in_thread(lambda: sdk(gw.http_url).models.list())
    assert [m.id for m in models.data] == ["friendly", "echo-1", "echo-2"]
    assert all(m.object == "model" for m in models.data)


async def test_sdk_error_classes(sdk: SDKFactory, start_gateway: StartGateway) -> None:
    gw = await start_gateway(server={"max_body_bytes": 2048})
    good = sdk(gw.http_url)
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.AuthenticationError) as e401:
        await in_thread(
            lambda: sdk(gw.http_url, "wrong").chat.completions.create(model="echo-1", messages=msgs)
        )
    assert e401.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as e404:
        await in_thread(lambda: good.chat.completions.create(model="nope", messages=msgs))
    assert e404.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e400:
        await in_thread(
            lambda: good.chat.completions.create(model="echo-1", messages=msgs, temperature=9)
        )
    assert e400.value.param == "temperature"
    with pytest.raises(openai.APIStatusError) as e413:
        await in_thread(
            lambda: good.chat.completions.create(
                model="echo-1", messages=[{"role": "user", "content": "x" * 5000}]
            )
        )
    assert e413.value.status_code == 413
    assert e413.value.code == "request_too_large"


async def test_raw_http_errors_are_openai_shaped(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway()
    url = gw.http_url
    cases = [
        (await http.post(f"{url}/v1/chat/completions", content=b"{oops", headers=auth()), 400),
        (await http.post(f"{url}/v1/chat/completions", json={"model": "echo-1"}), 401),
        (await http.get(f"{url}/v2/unknown", headers=auth()), 404),
        (await http.get(f"{url}/v1/chat/completions", headers=auth()), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"]
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]


async def test_request_id_is_kept_and_generated(
    start_gateway: StartGateway, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway()
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "x"}]}
    mine = await http.post(
        f"{gw.http_url}/v1/chat/completions",
        json=body,
        headers={**auth(), "x-request-id": "req-abc-123"},
    )
    assert mine.headers["x-request-id"] == "req-abc-123"
    assert mine.json()["id"] == "chatcmpl-req-abc-123"
    bad = await http.post(
        f"{gw.http_url}/v1/chat/completions",
        json=body,
        headers={**auth(), "x-request-id": "bad id\twith junk"},
    )
    assert bad.headers["x-request-id"] != "bad id\twith junk"
    err = await http.post(f"{gw.http_url}/v1/chat/completions", json={}, headers=auth())
    assert err.status_code == 400 and err.headers["x-request-id"]


async def test_ops_endpoints(start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    gw = await start_gateway()
    raw_health = await http.get(f"{gw.http_url}/healthz", headers={"x-request-id": "probe-1"})
    assert raw_health.headers["x-request-id"] == "probe-1"
    health = raw_health.json()
    assert health["status"] in {"healthy", "degraded"}
    assert health["providers"]["echo"]["type"] == "echo"
    ready = await http.get(f"{gw.http_url}/readyz")
    assert ready.status_code == 200
    await http.post(
        f"{gw.http_url}/v1/chat/completions",
        headers=auth(),
        json={"model": "echo-1", "messages": [{"role": "user", "content": "a b"}]},
    )
    metrics = await http.get(f"{gw.http_url}/metrics")
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'ailb_requests_total{model="echo-1",provider="echo",status="200"} 1.0' in text
    assert 'ailb_tokens_total{direction="completion",model="echo-1",provider="echo"} 2.0' in text
    assert "ailb_gateway_overhead_seconds_bucket" in text
    assert 'ailb_provider_up{deployment="echo",provider="echo"} 1.0' in text
    assert "ailb_in_flight_requests 0.0" in text
    om = await http.get(
        f"{gw.http_url}/metrics", headers={"accept": "application/openmetrics-text"}
    )
    assert om.headers["content-type"].startswith("application/openmetrics-text")


async def test_echo_embeddings_are_deterministic(sdk: SDKFactory,
                                                start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    client = sdk(gw.http_url)
    first = await in_thread(lambda: client.embeddings.create(
        model="echo-1", input=["the cat sat", "the cat sat", "quantum flux"]))
    again = await in_thread(lambda: client.embeddings.create(model="echo-1", input="the cat sat"))
    a, b, c = (d.embedding for d in first.data)
    assert a == b == again.data[0].embedding
    assert len(a) == 64 and abs(sum(x * x for x in a) - 1) < 1e-5
    assert sum(x * y for x, y in zip(a, c, strict=True)) < 0.9
    assert first.usage.prompt_tokens == 8
