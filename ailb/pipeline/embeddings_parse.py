"""OpenAI's ``/v1/embeddings`` shapes: request validation and the response body. Pure."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from ailb.errors import InvalidRequest
from ailb.model import EmbeddingRequest, Usage
from ailb.schemas import openai
from ailb.schemas.check import conform


def parse_embeddings(body: Mapping[str, Any], request_id: str) -> EmbeddingRequest:
    """Validate an embeddings body. Raises InvalidRequest naming the field."""
    conform(body, openai.EmbeddingRequest)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    raw = body.get("input")
    if isinstance(raw, str):
        inputs: tuple[str, ...] = (raw,)
    elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        inputs = tuple(raw)
    elif isinstance(raw, list) and raw:
        raise InvalidRequest("'input' must be a string or an array of strings (token arrays "
                             "are not supported by every provider).", param="input")
    else:
        raise InvalidRequest("'input' must be a non-empty string or array of strings.",
                             param="input")
    if any(not text for text in inputs):
        raise InvalidRequest("'input' cannot contain an empty string.", param="input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.",
                             param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(
            dimensions, bool) or dimensions < 1):
        raise InvalidRequest("'dimensions' must be a positive integer.", param="dimensions")
    return EmbeddingRequest(body=body, model=model, inputs=inputs, encoding_format=encoding,
                            request_id=request_id)


def encode_vector(vector: Sequence[float], encoding: str) -> list[float] | str:
    """``float``: the list; ``base64``: little-endian float32, as OpenAI sends it."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return [float(v) for v in vector]


def embedding_body(vectors: Sequence[Sequence[float]], model: str, prompt_tokens: int,
                   encoding: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def usage_of(body: Mapping[str, Any]) -> Usage:
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else 0
    return Usage(prompt_tokens=tokens if isinstance(tokens, int) else 0)
