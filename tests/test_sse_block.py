"""The block scanner against the per-event decoder: for any stream and any split into reads it
finds exactly the events SSEDecoder finds, relays their bytes as they came, finds the usage,
and cutting the usage-only event out leaves every other byte."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ailb.errors import UpstreamStatusError
from ailb.model import StreamChunk, Usage
from ailb.providers.openai import parse_chunk
from ailb.providers.sse import SSEDecoder
from ailb.providers.sse_block import BlockScanner, events_of, without_spans

EOLS = [b"\n", b"\r\n", b"\r"]
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def content(i: int) -> str:
    return json.dumps({"id": "c", "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {"content": f"w{i} "},
                                    "finish_reason": None}]}, separators=(",", ":"))


USAGE_ONLY = json.dumps({"id": "c", "choices": [], "usage": USAGE})
WITH_USAGE = json.dumps({"id": "c", "choices": [{"index": 0, "delta": {}}], "usage": USAGE})


@st.composite
def event_bytes(draw: st.DrawFn, data: str) -> bytes:
    """One event of ``data`` in any legal framing: line ends, data split over several lines,
    no space after the colon, comment and event-name lines, extra empty lines before it."""
    eol = draw(st.sampled_from(EOLS))
    lines = data.split("\n")
    if draw(st.booleans()) and len(data) > 2:  # JSON may break between tokens: at a comma
        cut = data.find(",")
        if cut > 0:
            lines = [data[:cut + 1], data[cut + 1:]]
    out = b""
    if draw(st.booleans()):
        out += b": keep-alive" + draw(st.sampled_from(EOLS))
    if draw(st.booleans()):
        out += b"event: message" + eol
    for line in lines:
        out += (b"data:" if draw(st.booleans()) else b"data: ") + line.encode() + eol
    # the empty line: any line end, but a LF right after a CR would only finish a CRLF
    out += draw(st.sampled_from(EOLS[1:] if eol == b"\r" else EOLS))
    if draw(st.booleans()):
        out += b": ping" + eol + eol  # a comment-only "event"
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A chat stream (content events, maybe the usage chunk, [DONE]) and a split into reads."""
    payloads = [content(i) for i in range(draw(st.integers(0, 6)))]
    if draw(st.booleans()):
        payloads.append(WITH_USAGE)
    if draw(st.booleans()):
        payloads.insert(draw(st.integers(0, len(payloads))), USAGE_ONLY)
    payloads.append("[DONE]")
    body = b"".join(draw(event_bytes(p)) for p in payloads)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=12))))
    reads = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if a < b]
    return body, reads


def scan(reads: list[bytes]) -> tuple[list[StreamChunk], BlockScanner]:
    scanner = BlockScanner()
    blocks: list[StreamChunk] = []
    for read in reads:
        block = scanner.feed(read)
        if block is not None:
            blocks.append(block)
        if scanner.done or scanner.error is not None:
            break
    return blocks, scanner


def decoded(data: bytes) -> list[str]:
    return [event.data for event in SSEDecoder().feed(data)]


@settings(max_examples=400, deadline=None)
@given(streams())
def test_blocks_hold_exactly_the_decoders_events(stream: tuple[bytes, list[bytes]]) -> None:
    body, reads = stream
    expected = decoded(body)
    assert expected[-1] == "[DONE]"
    blocks, scanner = scan(reads)
    assert scanner.done
    relayed = b"".join(block.raw or b"" for block in blocks)
    # the relayed bytes are the upstream's, up to [DONE] (which the door sends itself)
    assert body.startswith(relayed)
    assert decoded(relayed) == expected[:-1]
    assert sum(block.events for block in blocks) == len(expected) - 1
    # every block holds an event, but the last (before [DONE]) may hold only what came
    # between the last event and [DONE] (a comment, a CRLF's LF left from a read)
    assert all(block.events > 0 for block in blocks[:-1])
    assert not blocks or blocks[-1].events > 0 or blocks[-1].last
    assert [e.data for b in blocks for e in events_of(b)] == expected[:-1]
    usages = [parse_chunk(d).usage for d in expected[:-1]]
    found = [u for u in usages if u is not None]
    assert [b.usage for b in blocks if b.usage is not None][-1:] == found[-1:]


@settings(max_examples=400, deadline=None)
@given(streams())
def test_cutting_the_usage_chunk_leaves_every_other_byte(
        stream: tuple[bytes, list[bytes]]) -> None:
    _, reads = stream
    blocks, _ = scan(reads)
    kept = [without_spans(b.raw or b"", b.usage_spans) for b in blocks]
    all_events = [e for b in blocks for e in events_of(b)]
    assert decoded(b"".join(kept)) == [e.data for e in all_events if not e.usage_only]
    for block, rest in zip(blocks, kept, strict=True):
        raw = block.raw or b""
        assert len(raw) - len(rest) == sum(b - a for a, b in block.usage_spans)
        if not block.usage_spans:
            assert rest is raw or rest == raw


def test_one_read_of_many_events_is_one_block() -> None:
    events = [f"data: {content(i)}\n\n".encode() for i in range(5)]
    usage = f"data: {USAGE_ONLY}\n\n".encode()
    block = BlockScanner().feed(b"".join(events) + usage + b"data: [DONE]\n\n")
    assert block is not None
    assert block.events == 6
    assert block.raw == b"".join(events) + usage
    assert block.usage == Usage(7, 3)
    assert without_spans(block.raw, block.usage_spans) == b"".join(events)


def test_partial_event_waits_for_its_end() -> None:
    scanner = BlockScanner()
    assert scanner.feed(b'data: {"a":') is None
    assert scanner.has_partial
    block = scanner.feed(b"1}\n\ndata: {")
    assert block is not None and block.raw == b'data: {"a":1}\n\n' and block.events == 1
    assert scanner.has_partial


def test_comments_alone_make_no_block_and_travel_with_the_next_event() -> None:
    scanner = BlockScanner()
    assert scanner.feed(b": OPENROUTER PROCESSING\n\n") is None
    block = scanner.feed(b"data: {}\n\n")
    assert block is not None and block.events == 1
    assert block.raw == b": OPENROUTER PROCESSING\n\ndata: {}\n\n"


def test_an_error_event_ends_the_block_before_it() -> None:
    scanner = BlockScanner()
    error = json.dumps({"error": {"message": "overloaded", "type": "server_error"}})
    block = scanner.feed(f"data: {content(0)}\n\ndata: {error}\n\ndata: {content(1)}\n\n"
                         .encode())
    assert block is not None and block.events == 1
    assert block.raw == f"data: {content(0)}\n\n".encode()
    assert isinstance(scanner.error, UpstreamStatusError)
    assert "overloaded" in str(scanner.error)


def test_crlf_split_after_a_complete_event() -> None:
    scanner = BlockScanner()
    first = scanner.feed(b"data: a\r\n\r")
    assert first is not None and first.raw == b"data: a\r\n\r"
    second = scanner.feed(b"\ndata: b\r\n\r\n")  # the LF completes the CRLF: relayed
    assert second is not None and second.raw == b"\ndata: b\r\n\r\n" and second.events == 1


@pytest.mark.parametrize("usage_only", [True, False])
def test_events_of_a_block_classify_like_parse_chunk(usage_only: bool) -> None:
    payload = USAGE_ONLY if usage_only else WITH_USAGE
    block = BlockScanner().feed(f"data: {content(0)}\n\ndata: {payload}\n\n".encode())
    assert block is not None
    assert events_of(block) == [parse_chunk(content(0)), parse_chunk(payload)]
    assert bool(block.usage_spans) is usage_only


@pytest.mark.parametrize("cut", [b"data: a\r\n\r", b"data: a\r\n\r\ndata: b\r\n\r"])
def test_a_crlf_split_between_reads_is_relayed_whole(cut: bytes) -> None:
    """The LF of a CRLF that ends one read's last event starts the next read: it is relayed
    (a client whose parser looks for CRLF CRLF would otherwise see two events run together),
    also when the next read holds only [DONE]."""
    body = b"data: a\r\n\r\ndata: b\r\n\r\ndata: [DONE]\r\n\r\n"
    blocks, scanner = scan([cut, body[len(cut):]])
    assert scanner.done
    relayed = b"".join(block.raw or b"" for block in blocks)
    assert relayed == b"data: a\r\n\r\ndata: b\r\n\r\n"
    assert sum(block.events for block in blocks) == 2


def test_a_first_read_of_a_comment_and_done_is_no_block() -> None:
    """A stream whose first read holds no event before [DONE] yields nothing: it is a stream
    without a chunk (the router fails over), not an empty success charged -1 chunks."""
    blocks, scanner = scan([b": ping\n\ndata: [DONE]\n\n"])
    assert scanner.done and blocks == []
