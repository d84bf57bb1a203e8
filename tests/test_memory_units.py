"""Conversation memory's pure parts: turns, the stream accumulator, and assembly."""

from __future__ import annotations

import pytest

from ailb.errors import InvalidRequest
from ailb.memory.assemble import CLOSE, OPEN, inject, recent_window
from ailb.memory.turns import (
    AnswerAccumulator,
    Turn,
    answer_message,
    new_messages,
    session_of,
)


def turn(n: int, user: str, answer: str, tokens: int = 10) -> Turn:
    return Turn(id=f"t{n}", session="s", seq=n, at=1_700_000_000.0 + n,
                messages=({"role": "user", "content": user},
                          {"role": "assistant", "content": answer}), tokens=tokens)


def test_session_id_from_header_or_body() -> None:
    assert session_of("h-1", {"session_id": "b-1"}) == "h-1"
    assert session_of(None, {"session_id": "b-1"}) == "b-1"
    assert session_of(None, {}) is None
    with pytest.raises(InvalidRequest) as bad:
        session_of(None, {"session_id": "has space"})
    assert bad.value.param == "session_id"
    with pytest.raises(InvalidRequest):
        session_of("x" * 129, {})
    with pytest.raises(InvalidRequest):
        session_of(None, {"session_id": 12})
    with pytest.raises(InvalidRequest, match="reserved"):
        session_of("sessions", {})


def test_new_messages_are_those_after_the_last_answer() -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    assert new_messages(messages) == [{"role": "user", "content": "c"}]
    assert new_messages(messages[:2]) == [{"role": "user", "content": "a"}]


def test_turn_round_trips_through_its_metadata() -> None:
    original = turn(1, "hello", "hi there")
    again = Turn.from_record(original.id, original.metadata())
    assert again == original
    assert original.text == "user: hello\nassistant: hi there"
    with pytest.raises(KeyError):
        Turn.from_record("x", {"session": "s"})


def test_answer_of_a_completion_keeps_tool_calls() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": calls}}]}
    assert answer_message(body) == {"role": "assistant", "content": None, "tool_calls": calls}
    assert answer_message({"choices": []}) is None


def test_accumulator_rebuilds_text_and_tool_calls_from_chunks() -> None:
    acc = AnswerAccumulator()
    acc.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]})
    acc.add({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    acc.add({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_", "arguments": "{\"ci"}}]}}]})
    acc.add({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"name": "weather", "arguments": "ty\":1}"}}]}}]})
    acc.add({"choices": [{"index": 1, "delta": {"content": "other choice"}}]})
    acc.add({"choices": [], "usage": {"prompt_tokens": 1}})
    assert acc.message() == {"role": "assistant", "content": "Hello", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":1}"}}]}
    assert AnswerAccumulator().message() == {"role": "assistant", "content": None}


def test_recent_window_fits_the_budget_newest_first() -> None:
    turns = [turn(i, f"q{i}", f"a{i}", tokens=10) for i in range(5)]
    assert [t.seq for t in recent_window(turns, 25)] == [3, 4]
    assert recent_window(turns, 5) == []
    assert len(recent_window(turns, 1000)) == 5


def test_inject_order_and_delimiters() -> None:
    client = [{"role": "system", "content": "You are terse."},
              {"role": "user", "content": "and now?"}]
    out = inject(client, [turn(2, "q2", "a2")], [turn(1, "my dog is Rex", "noted")])
    assert [m["role"] for m in out] == ["system", "system", "user", "assistant", "user"]
    assert out[0] == client[0]
    block = out[1]["content"]
    assert block.startswith(OPEN) and block.endswith(CLOSE)
    assert "user: my dog is Rex" in block and "assistant: noted" in block
    assert out[2:4] == [{"role": "user", "content": "q2"},
                        {"role": "assistant", "content": "a2"}]
    assert out[-1] == client[-1]


def test_a_client_with_its_own_history_gets_no_replay() -> None:
    client = [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
              {"role": "user", "content": "q3"}]
    assert inject(client, [turn(2, "q2", "a2")], []) == client


def test_replay_drops_orphan_tool_messages_at_the_window_edges() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    first = Turn("a", "s", 1, 1.0, ({"role": "tool", "tool_call_id": "c0", "content": "r"},
                                    {"role": "assistant", "content": "ok"}), 5)
    last = Turn("b", "s", 2, 2.0, ({"role": "user", "content": "go"},
                                   {"role": "assistant", "content": None,
                                    "tool_calls": [call]}), 5)
    out = inject([{"role": "user", "content": "new question"}], [first, last], [])
    assert [m["role"] for m in out] == ["assistant", "user", "user"]
    # answering the tool call: the call stays in front of its result
    result = {"role": "tool", "tool_call_id": "c", "content": "42"}
    out = inject([result], [last], [])
    assert out[-2].get("tool_calls") == [call] and out[-1] == result
