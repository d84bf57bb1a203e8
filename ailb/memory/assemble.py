"""How remembered turns are put in front of a request. Pure.

The messages the upstream receives, in order:

1. the client's own leading ``system``/``developer`` messages, as sent;
2. when older turns were recalled by semantic search, one ``system`` message::

       <ailb-memory>
       Earlier parts of this conversation that may be relevant (recalled by AILB, oldest first):
       [2026-11-20 10:04 UTC]
       user: ...
       assistant: ...
       </ailb-memory>

3. the most recent turns of the session, as the real ``user``/``assistant``/``tool`` messages
   they were, oldest first, as many as fit ``MEMORY.recent_tokens``;
4. the rest of the client's messages.

A client that sends its own history (any ``assistant`` message) gets no replay of recent turns,
only the recalled block: the conversation would otherwise appear twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ailb.memory.turns import Message, Turn, message_text

OPEN: Final = "<ailb-memory>"
CLOSE: Final = "</ailb-memory>"
_HEADER: Final = ("Earlier parts of this conversation that may be relevant "
                  "(recalled by AILB, oldest first):")


def recent_window(turns: Sequence[Turn], budget_tokens: int) -> list[Turn]:
    """The newest turns whose tokens fit ``budget_tokens``, oldest first. ``turns`` sorted."""
    window: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        if used + turn.tokens > budget_tokens:
            break
        window.append(turn)
        used += turn.tokens
    window.reverse()
    return window


def recall_block(turns: Sequence[Turn]) -> Message:
    lines = [OPEN, _HEADER]
    for turn in sorted(turns, key=lambda t: t.seq):
        stamp = datetime.fromtimestamp(turn.at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"[{stamp}]")
        lines.extend(f"{m.get('role', '?')}: {message_text(m)}" for m in turn.messages)
    lines.append(CLOSE)
    return {"role": "system", "content": "\n".join(lines)}


def _replayable(turns: Sequence[Turn], next_role: str | None) -> list[Message]:
    messages = [dict(m) for turn in turns for m in turn.messages]
    # A window cut by the token budget may start with tool results whose call is gone, or end
    # with tool calls the client's next message does not answer: providers refuse both.
    while messages and messages[0].get("role") == "tool":
        messages.pop(0)
    if messages and messages[-1].get("tool_calls") and next_role != "tool":
        messages.pop()
    return messages


def prompt_end(messages: Sequence[Mapping[str, Any]]) -> int:
    """How many leading messages are the client's prompt (system/developer messages)."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in ("system", "developer"):
        lead += 1
    return lead


def inject(client: Sequence[Mapping[str, Any]], recent: Sequence[Turn],
           recalled: Sequence[Turn]) -> list[Message]:
    """The request's messages with the session's memory in front (see the module docstring)."""
    lead = prompt_end(client)
    head = [dict(m) for m in client[:lead]]
    rest = [dict(m) for m in client[lead:]]
    if recalled:
        head.append(recall_block(recalled))
    own_history = any(m.get("role") == "assistant" for m in client)
    if recent and not own_history:
        head.extend(_replayable(recent, rest[0].get("role") if rest else None))
    return head + rest
