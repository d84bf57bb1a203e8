"""Decode a request body and hold it to its shape. Pure.

msgspec does both in C: the body is decoded once to plain Python values (what the pipeline
keeps and passes upstream, unknown fields included) and converted against the route's Struct,
which checks every declared field's type and range at once. Strings are well-formed by
construction: the decoder refuses invalid UTF-8 and lone UTF-16 surrogates, which would
otherwise fail much later, when the body is encoded again for the upstream, as a 500."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec

from ailb.errors import InvalidRequest
from ailb.schemas.common import PATTERNS

T = TypeVar("T")

_DECODER: Final = msgspec.json.Decoder()
_AT: Final = re.compile(r"^(?P<detail>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING: Final = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_INDEX: Final = re.compile(r"\[(\d+)\]")
_WORDS: Final = {"int": "integer", "float": "number", "str": "string", "bool": "boolean",
                 "null": "null", "array": "array", "object": "object"}
_TYPE: Final = re.compile(r"`([^`]+)`")
_REGEX: Final = re.compile(r"string matching regex '(?P<regex>.*)'$")

PathStyle = Callable[[str], str]


def openai_path(path: str) -> str:
    """msgspec's ``.messages[0].role`` as OpenAI names a field: ``messages[0].role``."""
    return path.lstrip(".")


def anthropic_path(path: str) -> str:
    """msgspec's ``.messages[0].role`` as Anthropic names a field: ``messages.0.role``."""
    return _INDEX.sub(r".\1", path).lstrip(".")


def decode_object(data: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object. Raises InvalidRequest."""
    if not data.strip():
        raise InvalidRequest("The request body is empty: send a JSON object.")
    try:
        body = _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        # the slow re-read only where a lone surrogate is a likely cause (msgspec's words)
        text = str(exc)
        where = _lone_surrogate(data) if "truncated" in text or "surrogate" in text else None
        if where is not None:
            raise InvalidRequest(f"'{where or 'body'}' holds a lone UTF-16 surrogate (e.g. "
                                 "\"\\ud800\"), which is not text.", param=where or None) from None
        detail = "it is nested too deeply" if isinstance(exc, RecursionError) else \
            str(exc).split(" - at ")[0]
        if "truncated" in detail:
            detail = "it is malformed or holds a string that is not valid Unicode"
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({detail}). (HINT: This likely "
            "means you aren't using your HTTP library correctly.)") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def conform(value: Any, shape: type[T], style: PathStyle = openai_path,
            prefix: str = "") -> T:
    """``value`` held to ``shape``. Raises InvalidRequest naming the field and what is
    allowed there (``param`` is the field's path, ``prefix`` put in front of it)."""
    try:
        return msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        raise invalid(str(exc), style, prefix) from None


def invalid(text: str, style: PathStyle = openai_path, prefix: str = "") -> InvalidRequest:
    """msgspec's validation message as an InvalidRequest in the door's words."""
    match = _AT.match(text)
    detail = match["detail"] if match else text
    path = style(prefix + ((match["path"] or "") if match else ""))
    missing = _MISSING.match(detail)
    if missing:
        field = f"{path}.{missing['field']}" if path else missing["field"]
        if style is anthropic_path:  # Anthropic's own words
            return InvalidRequest(f"{field}: Field required", param=field)
        return InvalidRequest(f"Missing required parameter: '{field}'.", param=field)
    unknown = _UNKNOWN.match(detail)
    if unknown:
        field = f"{path}.{unknown['field']}" if path else unknown["field"]
        return InvalidRequest(f"Unknown field '{field}'.", param=field)
    detail = _TYPE.sub(_words, detail[0].lower() + detail[1:]) if detail else "invalid value"
    regex = _REGEX.search(detail)
    if regex and regex["regex"].replace("\\\\", "\\") in PATTERNS:
        detail = detail[:regex.start()] + PATTERNS[regex["regex"].replace("\\\\", "\\")]
    if not path:
        return InvalidRequest(f"Invalid request body: {detail}.")
    if style is anthropic_path:
        return InvalidRequest(f"{path}: {detail[0].upper()}{detail[1:]}", param=path)
    return InvalidRequest(f"Invalid value for '{path}': {detail}.", param=path)


def _words(match: re.Match[str]) -> str:
    """msgspec's ``int | null`` in plain words: ``integer or null``."""
    return " or ".join(_WORDS.get(part.strip(), part.strip()) for part in match[1].split("|"))


def _lone_surrogate(data: bytes) -> str | None:
    """Where a body that msgspec refused holds a lone surrogate (``""`` for a key at the top),
    or None if that is not why. The slow path of an error only: JSON allows ``"\\ud800"``,
    and the stdlib decoder reads it, so the field can be named."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return _find_surrogate(value, "")


def _find_surrogate(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        for key, item in value.items():
            if _find_surrogate(key, path) is not None:  # a bad key: name the object
                return path
            found = _find_surrogate(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_surrogate(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
