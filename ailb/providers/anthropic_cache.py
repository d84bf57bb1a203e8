"""Prompt-caching markers from OpenAI-format requests to Anthropic blocks. Pure.

Clients of the OpenAI format mark a cache breakpoint as Anthropic does, with
``"cache_control": {"type": "ephemeral"}`` (optionally ``"ttl": "5m" | "1h"``) on:

* a content part (``text``, ``image_url``) of any message: the block made from that part
  carries it (a ``tool`` message's marker goes on its ``tool_result`` block);
* a message itself (string content): the last block made from that message carries it;
* a tool (``{"type": "function", "function": {...}, "cache_control": {...}}``, or inside
  ``function``): the Anthropic tool carries it.

AILB never adds a marker of its own. Anthropic accepts at most 4; a request with more is
refused with 400 in Anthropic's words rather than trimmed, since which prefixes to cache is the
client's decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ailb.errors import InvalidRequest

MAX_MARKERS: Final = 4
_TTLS: Final = ("5m", "1h")


def marker(holder: Any, where: str) -> dict[str, Any] | None:
    """The Anthropic ``cache_control`` for ``holder``'s marker (None when unmarked). Raises
    InvalidRequest for a marker Anthropic would refuse."""
    raw = holder.get("cache_control") if isinstance(holder, Mapping) else None
    if raw is None:
        return None
    param = f"{where}.cache_control"
    if not isinstance(raw, Mapping) or raw.get("type") != "ephemeral":
        raise InvalidRequest(f"'{param}' must be {{\"type\": \"ephemeral\"}}.", param=param)
    out: dict[str, Any] = {"type": "ephemeral"}
    ttl = raw.get("ttl")
    if ttl is not None:
        if ttl not in _TTLS:
            raise InvalidRequest(f"'{param}.ttl' must be \"5m\" or \"1h\".", param=f"{param}.ttl")
        out["ttl"] = ttl
    return out


def mark(block: dict[str, Any], control: Mapping[str, Any] | None) -> dict[str, Any]:
    """``block`` with ``control`` as its ``cache_control`` (unchanged without one)."""
    if control is not None:
        block["cache_control"] = dict(control)
    return block


def mark_last(blocks: list[dict[str, Any]], control: Mapping[str, Any] | None) -> None:
    if control is not None and blocks:
        mark(blocks[-1], control)


def _blocks(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def count_markers(body: Mapping[str, Any]) -> int:
    """Blocks of an Anthropic request body that carry ``cache_control``."""
    blocks: list[Any] = [*_blocks(body.get("tools")), *_blocks(body.get("system"))]
    for message in _blocks(body.get("messages")):
        for block in _blocks(message.get("content") if isinstance(message, Mapping) else None):
            blocks.append(block)
            if isinstance(block, Mapping):
                blocks.extend(_blocks(block.get("content")))  # a tool_result's own blocks
    return sum(1 for block in blocks
               if isinstance(block, Mapping) and block.get("cache_control") is not None)


def check_markers(body: Mapping[str, Any]) -> None:
    """Refuse a request with more markers than Anthropic accepts, as Anthropic does."""
    found = count_markers(body)
    if found > MAX_MARKERS:
        raise InvalidRequest(f"A maximum of {MAX_MARKERS} blocks with cache_control may be "
                             f"provided. Found {found}.", param="messages")
