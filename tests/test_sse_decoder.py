"""The incremental SSE decoder, fed the way networks deliver bytes: in arbitrary pieces."""

from __future__ import annotations

import pytest

from ailb.providers.sse import SSEDecoder, SSEEvent

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a":1}\n\n'
    b"event: message_start\r\ndata: first\r\ndata: second\r\n\r\n"
    b"data:no-space\r\rdata: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent('{"a":1}'),
    SSEEvent("first\nsecond", "message_start"),
    SSEEvent("no-space"),
    SSEEvent("[DONE]"),
]


def test_whole_stream() -> None:
    assert SSEDecoder().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_any_split_gives_the_same_events(size: int) -> None:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start:start + size])
    assert events == EXPECTED
    assert not decoder.has_partial


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r\n") == [SSEEvent("x")]


def test_unterminated_event_is_partial_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"cut": tr') == []
    assert decoder.has_partial
    decoder.feed(b"ue}\n")
    assert decoder.has_partial  # a data line without the blank line that dispatches it
    assert decoder.close() == []


def test_utf8_split_inside_a_character() -> None:
    text = "data: héllo ☃\n\n".encode()
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for byte in text:
        events += decoder.feed(bytes([byte]))
    assert events == [SSEEvent("héllo ☃")]
