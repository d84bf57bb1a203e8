"""Coercion of configuration values into the types they must have, with errors that name the key.

Values from the environment arrive parsed as TOML by Dynaconf (``HTTP_PORT=8080`` is an int,
``OPENAI_API_KEY=123456`` too), so every field is coerced here. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ailb.errors import ConfigError

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that never shows itself in ``repr``, logs or ``ailb config``."""

    value: str

    def __bool__(self) -> bool:
        return bool(self.value)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    def masked(self) -> str:
        """``sk-...abcd``-style hint that is safe to print."""
        if not self.value:
            return ""
        if len(self.value) < 20:
            return "***"
        return f"***{self.value[-4:]}"



def as_int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(key, f"must be an integer from {lo} to {hi}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(key, f"must be an integer from {lo} to {hi}, got {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(key, f"must be an integer from {lo} to {hi}, got {number}")
    return number


def as_float(key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"must be a number from {lo} to {hi}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(key, f"must be a number from {lo} to {hi}, got {value!r}") from None
    if not lo <= number <= hi:
        raise ConfigError(key, f"must be a number from {lo} to {hi}, got {number}")
    return number


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(key, f"must be true or false, got {value!r}")


def as_str(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise ConfigError(key, f"must be a string, got {type(value).__name__}")
    return str(value).strip()


def as_choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    text = as_str(key, value).lower()
    if text not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(allowed)}, got {value!r}")
    return text


def as_name(key: str, value: Any) -> str:
    text = as_str(key, value)
    if not _NAME_RE.match(text):
        raise ConfigError(key, f"must be 1-64 of [A-Za-z0-9._:-], got {value!r}")
    return text


def as_url(key: str, value: Any) -> str:
    text = as_str(key, value).rstrip("/")
    if not re.match(r"^https?://[^\s/]+", text):
        raise ConfigError(key, f"must be an http:// or https:// URL, got {value!r}")
    return text


def as_models(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[Any] = [part for part in value.split(",")]
    elif isinstance(value, list | tuple):
        items = list(value)
    elif value is None:
        items = []
    else:
        raise ConfigError(key, f"must be a comma-separated list or a list, got {value!r}")
    names = tuple(as_str(key, item) for item in items if as_str(key, item))
    for name in names:
        if any(ch.isspace() for ch in name):
            raise ConfigError(key, f"model names cannot contain spaces, got {name!r}")
    return names


