"""Provider-neutral values that flow between the HTTP/gRPC edges, routing and providers.

AILB speaks OpenAI's chat format inside: a request keeps the client's JSON body (so every field,
unknown ones included, reaches OpenAI-compatible upstreams untouched), and providers of other
formats translate to and from it. These values are immutable; a stream chunk keeps the exact JSON
text it will be sent as, so relaying a stream costs one parse per chunk and no re-encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, as the upstream reported them (or counted from a cut stream).

    ``prompt_tokens`` counts every prompt token; ``cached_tokens`` of them were read from the
    provider's prompt cache and ``cache_write_tokens`` written to it (Anthropic reports both;
    OpenAI reports reads only). Each is priced at its own rate (see ``pricing.Price``).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, raw: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; None when absent or not an object."""
        if not isinstance(raw, Mapping):
            return None
        details = raw.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
        return cls(
            prompt_tokens=_count(raw.get("prompt_tokens")),
            completion_tokens=_count(raw.get("completion_tokens")),
            cached_tokens=_count(cached),
            # what AILB itself reports for an Anthropic deployment (see to_openai)
            cache_write_tokens=_count(raw.get("cache_creation_input_tokens")),
        )

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's usage object. Cache writes have no field there: they are added as
        ``cache_creation_input_tokens`` (as LiteLLM does) when there were any."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }
        if self.cache_write_tokens:
            out["cache_creation_input_tokens"] = self.cache_write_tokens
        return out


def content_text(content: Any, separator: str = " ") -> str:
    """The text of a message ``content``: a string, or the ``text`` parts of a list (OpenAI
    parts and Anthropic blocks alike) joined by ``separator``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return separator.join(str(part.get("text", "")) for part in content
                        if isinstance(part, Mapping) and part.get("type") == "text")
    return ""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One validated chat completion request.

    ``body`` is the client's JSON object exactly as received; ``model`` is the public model name
    (or alias) it asked for. ``include_usage`` records whether the *client* asked for the usage
    chunk; AILB always asks upstream for it.
    """

    body: Mapping[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    request_id: str
    # The client's Anthropic Messages body when it came in through /v1/messages: an Anthropic
    # deployment then receives it as it is (cache_control, thinking, top_k... survive).
    native: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole (non-streamed) answer: an OpenAI ``chat.completion`` object and its usage.

    ``raw`` holds the upstream's own bytes when they already are that object (OpenAI-compatible
    upstreams), so the answer can be relayed without encoding it again.
    """

    body: Mapping[str, Any]
    usage: Usage | None
    raw: bytes | None = None
    native: Mapping[str, Any] | None = None  # the Anthropic message, for a native request


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One ``chat.completion.chunk`` of a stream, or a block of them.

    ``data`` is the JSON text sent to the client after ``data: ``. ``usage_only`` marks the extra
    chunk (``choices: []``) that carries usage when ``stream_options.include_usage`` is on.

    A *block* (``raw`` set, ``data`` empty) is what an OpenAI-compatible upstream sent in one
    read: ``events`` complete SSE events exactly as it framed them, relayed to an OpenAI client
    as they are. ``usage`` is the last usage reported among them and ``usage_spans`` the byte
    ranges of usage-only events in ``raw``; ``last`` says the upstream's end (``[DONE]``, or
    an error event) came in the same read, so the door can send the block with its own end in
    one write. Doors that translate events read them one by one
    with :func:`ailb.providers.sse_block.events_of`.
    """

    data: str
    usage: Usage | None = None
    usage_only: bool = False
    native: bytes | None = None  # the Anthropic event itself, for a native request
    raw: bytes | None = None
    events: int = 1
    usage_spans: tuple[tuple[int, int], ...] = ()
    last: bool = False  # the upstream ended (or failed) in the same read: its end goes along


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """An OpenAI ``/v1/embeddings`` request: ``inputs`` are the texts, in order."""

    body: Mapping[str, Any]
    model: str
    inputs: tuple[str, ...]
    encoding_format: str  # "float" or "base64"
    request_id: str


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """An OpenAI embeddings ``list`` object and the tokens the upstream counted."""

    body: Mapping[str, Any]
    usage: Usage
