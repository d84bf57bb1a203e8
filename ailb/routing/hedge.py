"""Hedged attempts: if the first attempt has not answered within the hedge delay, a second one
starts on another deployment; the first to succeed wins and the other is cancelled at once.

Structured: both attempts run in one nursery owned by :func:`race`; the loser is cancelled by
that nursery's cancel scope (which closes its upstream connection), and a loser that succeeded
in the same instant is handed to ``discard`` so that nothing it opened stays open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from ailb.errors import GatewayError
from ailb.routing.table import Target

T = TypeVar("T")


class Outcome(Generic[T]):
    __slots__ = ("error", "target", "value")

    def __init__(self, target: Target, value: T | None, error: GatewayError | None) -> None:
        self.target = target
        self.value = value
        self.error = error


async def race(
    first: Target,
    delay_s: float,
    pick_second: Callable[[], Target | None],
    attempt: Callable[[Target], Awaitable[T]],
    discard: Callable[[T], Awaitable[None]],
    on_hedge: Callable[[Target], None],
) -> tuple[Target, T]:
    """Run ``attempt(first)``; after ``delay_s`` without an answer, also ``attempt(second)``.

    Returns the first success. Raises the first attempt's error when every attempt failed
    (or when the first failed before the delay: retrying is the caller's business).
    """
    send, receive = trio.open_memory_channel[Outcome[T]](2)
    errors: list[GatewayError] = []
    winner: Outcome[T] | None = None

    async def run(target: Target) -> None:
        try:
            value = await attempt(target)
        except GatewayError as exc:
            send.send_nowait(Outcome(target, None, exc))
        else:
            send.send_nowait(Outcome(target, value, None))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, first)
            running = 1
            with trio.move_on_after(delay_s):
                outcome = await receive.receive()
                running -= 1
                if outcome.error is None:
                    winner = outcome
                else:
                    errors.append(outcome.error)  # failed before the hedge delay: no hedge,
                    # the caller's retry rules decide what comes next
            if winner is None and not errors:
                second = pick_second()
                if second is not None:
                    on_hedge(second)
                    nursery.start_soon(run, second)
                    running += 1
            while winner is None and running:
                outcome = await receive.receive()
                running -= 1
                if outcome.error is None:
                    winner = outcome
                else:
                    errors.append(outcome.error)
            nursery.cancel_scope.cancel()
    except BaseException:
        # Cancelled (or failed) while the loser was being cleaned up: nobody will use the
        # winner either, so close it too, with everything still queued.
        if winner is not None and winner.value is not None:
            with trio.CancelScope(shield=True):
                await discard(winner.value)
        winner = None
        raise
    finally:
        with trio.CancelScope(shield=True):
            while True:  # a loser that succeeded just before it was cancelled
                try:
                    late = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                if late.error is None and late.value is not None:
                    await discard(late.value)
    if winner is None or winner.value is None:
        raise errors[0]
    return winner.target, winner.value
