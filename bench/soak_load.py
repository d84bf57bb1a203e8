"""The soak's clients: closed-loop httpx (on Trio) sending chat completions to AILB's HTTP port
with a virtual key, half of them streamed, each with its own ``x-request-id`` (AILB keeps it, so
the ledger can be matched request by request). An answer is served when it is a 200 whose
content is the fake's reply in full (a stream: every chunk, then ``data: [DONE]``)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from soak_check import Outcome

MODEL = "soak-model"
REPLY = "Hello from the fake upstream."  # tests/fakes/openai_upstream.py DEFAULT_REPLY
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()
TRANSPORT_PAUSE_S = 0.05  # after a transport error (AILB is down): do not spin


@dataclass
class Tally:
    """What the clients saw, for the whole run."""

    sent: int = 0
    finished: int = 0
    served_json: int = 0
    served_stream: int = 0
    served_ids: list[str] = field(default_factory=list)
    errors: list[Outcome] = field(default_factory=list)

    @property
    def served(self) -> int:
        return self.served_json + self.served_stream


@dataclass(frozen=True, slots=True)
class Load:
    url: str  # AILB's base URL, http://127.0.0.1:PORT
    key: str
    run_id: str
    t0: float  # trio.current_time() at the start of the run
    stop_at: float  # trio time after which no new request starts
    seed: int = 1


def _body(rng: random.Random, stream: bool) -> dict[str, Any]:
    """A conversation of one to three turns of a few to a few hundred words."""
    messages: list[dict[str, str]] = []
    for turn in range(rng.choice((1, 1, 2, 3))):
        text = " ".join(rng.choices(WORDS, k=rng.randint(3, 300)))
        messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": text})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "and then?"})
    body: dict[str, Any] = {"model": MODEL, "messages": messages, "max_tokens": 64}
    if stream:
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
    return body


def _error_kind(response: httpx.Response) -> str:
    try:
        kind = str(response.json()["error"]["type"])
    except (ValueError, KeyError, TypeError):
        kind = "unparsable"
    return f"http_{response.status_code}:{kind}"


async def _json(http: httpx.AsyncClient, url: str, body: dict[str, Any],
                headers: dict[str, str]) -> tuple[str, str]:
    """(kind, deployment): kind "ok" when served."""
    response = await http.post(url, json=body, headers=headers)
    deployment = response.headers.get("x-ailb-deployment", "")
    if response.status_code != 200:
        return _error_kind(response), deployment
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "bad_body", deployment
    return ("ok" if content == REPLY else "wrong_answer"), deployment


async def _stream(http: httpx.AsyncClient, url: str, body: dict[str, Any],
                  headers: dict[str, str]) -> tuple[str, str]:
    async with http.stream("POST", url, json=body, headers=headers) as response:
        deployment = response.headers.get("x-ailb-deployment", "")
        if response.status_code != 200:
            await response.aread()
            return _error_kind(response), deployment
        text: list[str] = []
        done, error = False, ""
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    continue
                event = json.loads(data)
                if "error" in event:
                    error = str(event["error"].get("type") or "unknown")
                for choice in event.get("choices") or ():
                    text.append(choice["delta"].get("content") or "")
        except httpx.TransportError as exc:  # AILB ends a failed stream by closing it
            return f"stream_error:{error}" if error else f"stream_broken:{type(exc).__name__}", \
                deployment
        except (ValueError, KeyError, TypeError, AttributeError):
            return "bad_body", deployment
    if error:
        return f"stream_error:{error}", deployment
    if not done:
        return "stream_truncated", deployment
    return ("ok" if "".join(text) == REPLY else "wrong_answer"), deployment


async def client(http: httpx.AsyncClient, load: Load, index: int, tally: Tally) -> None:
    rng = random.Random(load.seed * 1_000_003 + index)
    url = f"{load.url}/v1/chat/completions"
    seq = 0
    while trio.current_time() < load.stop_at:
        seq += 1
        stream = rng.random() < 0.5
        request_id = f"soak-{load.run_id}-{index:03d}-{seq}"
        headers = {"authorization": f"Bearer {load.key}", "x-request-id": request_id}
        body = _body(rng, stream)
        started = trio.current_time()
        tally.sent += 1
        try:
            call = _stream if stream else _json
            kind, deployment = await call(http, url, body, headers)
        except httpx.TransportError as exc:
            kind, deployment = f"transport:{type(exc).__name__}", ""
        ended = trio.current_time()
        tally.finished += 1
        if kind == "ok":
            tally.served_ids.append(request_id)
            if stream:
                tally.served_stream += 1
            else:
                tally.served_json += 1
            continue
        tally.errors.append(Outcome(started - load.t0, ended - load.t0, kind, deployment,
                                    request_id))
        if kind.startswith("transport:"):
            await trio.sleep(TRANSPORT_PAUSE_S)
