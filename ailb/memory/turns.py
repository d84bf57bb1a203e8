"""Conversation turns as values: what a request adds to a session, and the answer it got. Pure.

A *turn* is the messages a request brought that the session does not have yet (everything after
the last assistant message of the client's list, system messages excepted: those belong to the
client's prompt, not to the conversation) followed by the assistant's answer, tool calls
included. A streamed answer is rebuilt from its chunks by :class:`AnswerAccumulator`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ailb.errors import InvalidRequest
from ailb.model import content_text
from ailb.pricing import estimate_prompt_tokens

SESSION_ID: Final = re.compile(r"^[A-Za-z0-9._:@-]{1,128}\Z")
RESERVED: Final = "sessions"  # a path of the memory API, so never a session id
_PROMPT_ROLES: Final = frozenset({"system", "developer"})

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """One stored exchange of a session. ``seq`` orders turns (nanoseconds since the epoch);
    ``at`` is when it was stored (seconds since the epoch)."""

    id: str
    session: str
    seq: int
    at: float
    messages: tuple[Message, ...]
    tokens: int

    @property
    def text(self) -> str:
        """The turn as plain text (what is embedded and shown when recalled)."""
        return "\n".join(f"{m.get('role', '?')}: {message_text(m)}" for m in self.messages)

    def encoded(self) -> str:
        return json.dumps(list(self.messages), separators=(",", ":"), ensure_ascii=False)

    def metadata(self) -> dict[str, str | int | float]:
        return {"session": self.session, "seq": self.seq, "at": self.at,
                "tokens": self.tokens, "messages": self.encoded()}

    @classmethod
    def from_record(cls, record_id: str, metadata: Mapping[str, Any]) -> Turn:
        """Rebuild a stored turn. Raises ValueError for a record that is not one of ours."""
        messages = json.loads(str(metadata["messages"]))
        if not isinstance(messages, list):
            raise ValueError("messages is not a list")
        return cls(id=record_id, session=str(metadata["session"]), seq=int(metadata["seq"]),
                   at=float(metadata["at"]), messages=tuple(messages),
                   tokens=int(metadata.get("tokens", 0)))


def turn_id(seq: int, unique: str) -> str:
    """A turn's id: its order first (zero-padded), so ids sort like the turns they name."""
    return f"{seq:020d}-{unique}"


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text: its content (text parts of a list) and any tool calls it made."""
    text = content_text(message.get("content"))
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        functions = [c.get("function") or {} for c in calls if isinstance(c, Mapping)]
        names = [f"{f.get('name', '?')}({f.get('arguments', '')})" for f in functions
                 if isinstance(f, Mapping)]
        text = (text + " " if text else "") + "[tool calls: " + "; ".join(names) + "]"
    return text


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message (what memory and RAG search with); "" if none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def session_of(header: str | None, body: Mapping[str, Any]) -> str | None:
    """The session id from ``X-Session-ID`` or the body's ``session_id`` (the header wins).
    Raises InvalidRequest for a malformed id."""
    raw = header if header is not None else body.get("session_id")
    if raw is None or raw == "":
        return None
    param = "x-session-id" if header is not None else "session_id"
    if not isinstance(raw, str) or not SESSION_ID.match(raw):
        raise InvalidRequest("A session id must be 1-128 of A-Z a-z 0-9 . _ : @ -.",
                             param=param)
    if raw == RESERVED:
        raise InvalidRequest(f"'{RESERVED}' is reserved (GET /v1/memory/{RESERVED} lists "
                             "sessions); choose another session id.", param=param)
    return raw


def new_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """The messages of a request that the session does not hold yet: those after the client's
    last assistant message, without system/developer messages."""
    last_assistant = -1
    for index, message in enumerate(messages):
        if message.get("role") == "assistant":
            last_assistant = index
    return [dict(m) for m in messages[last_assistant + 1:] if m.get("role") not in _PROMPT_ROLES]


def turn_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    return estimate_prompt_tokens({"messages": list(messages)})


def answer_message(body: Mapping[str, Any]) -> Message | None:
    """The assistant message of a ``chat.completion`` body (its first choice)."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        return None
    out: Message = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


class AnswerAccumulator:
    """Rebuilds the assistant message of a stream from its ``chat.completion.chunk`` objects
    (first choice only): content deltas are joined, tool calls are assembled by index."""

    __slots__ = ("_calls", "_content")

    def __init__(self) -> None:
        self._content: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Mapping[str, Any]) -> None:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, Mapping):
                continue
            if isinstance(delta.get("content"), str):
                self._content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                if isinstance(call, Mapping):
                    self._add_call(call)

    def _add_call(self, call: Mapping[str, Any]) -> None:
        index = call.get("index", 0)
        slot = self._calls.setdefault(index if isinstance(index, int) else 0, {
            "id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function")
        if isinstance(function, Mapping):
            if function.get("name"):
                slot["function"]["name"] += str(function["name"])
            if function.get("arguments"):
                slot["function"]["arguments"] += str(function["arguments"])

    def message(self) -> Message:
        out: Message = {"role": "assistant",
                        "content": "".join(self._content) if self._content else None}
        if self._calls:
            out["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        return out
