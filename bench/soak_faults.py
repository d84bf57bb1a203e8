"""Faults injected in one of the two fake deployments, in phases of equal length, cycled: the
knobs of tests/fakes/openai_upstream.py (latency, error status, 429 with Retry-After, streams
cut before or after their first chunk), and the server stopped outright ("down": connections
refused, and its streams in flight cut) then brought back on the same port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
from soak_check import Window

from tests.fakes.openai_upstream import FakeOpenAI, start_fake


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    knobs: dict[str, Any] = field(default_factory=dict)


PHASES = (
    Phase("healthy"),
    Phase("slow", {"latency_s": 0.25, "first_token_delay_s": 0.1}),
    Phase("http_500", {"status": 500}),
    Phase("http_429_retry_after", {"status": 429, "retry_after": 1}),
    Phase("cut_before_first_chunk", {"cut_after_chunks": 0}),
    Phase("cut_mid_stream", {"cut_after_chunks": 3}),
    Phase("down"),
)
_CALM = {"latency_s": 0.0, "first_token_delay_s": 0.0, "status": None, "retry_after": None,
         "cut_after_chunks": None}


async def _restart(nursery: trio.Nursery, app: FakeOpenAI, port: int) -> None:
    """Serve ``app`` on ``port`` again (the old listener may take a moment to let go)."""
    for _ in range(50):
        try:
            await start_fake(nursery, app, port=port)
            return
        except OSError:
            await trio.sleep(0.1)
    await start_fake(nursery, app, port=port)


async def cycle(nursery: trio.Nursery, app: FakeOpenAI, port: int, phase_s: float,
                t0: float, stop_at: float, timeline: list[Window]) -> None:
    """Run the phases in turn until ``stop_at``; each one's actual time goes to ``timeline``
    (seconds since ``t0``). ``nursery`` serves the fake."""
    index = 0
    while trio.current_time() < stop_at:
        phase = PHASES[index % len(PHASES)]
        index += 1
        start = trio.current_time()
        for name, value in {**_CALM, **phase.knobs}.items():
            setattr(app, name, value)
        if phase.name == "down":
            app.shutdown.set()
        await trio.sleep_until(min(start + phase_s, stop_at))
        for name, value in _CALM.items():
            setattr(app, name, value)
        if phase.name == "down":
            await _restart(nursery, app, port)
        timeline.append(Window(start - t0, trio.current_time() - t0, phase.name))
