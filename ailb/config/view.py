"""The effective configuration as plain JSON-able data, every secret masked (``ailb config``,
gRPC ``GetConfig``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ailb.config.schema import DeploymentSettings
from ailb.config.values import Secret


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def masked(value: Any) -> Any:
    """Settings as plain JSON-able data, every secret masked: keys, header values (they often
    carry credentials) and passwords inside URLs."""
    if isinstance(value, Secret):
        return value.masked()
    if isinstance(value, DeploymentSettings):
        shown = {name: masked(getattr(value, name)) for name in value.__dataclass_fields__}
        shown["headers"] = {name: "***" for name in value.headers}
        shown["base_url"] = _without_password(value.base_url)
        return shown
    if hasattr(value, "__dataclass_fields__"):
        return {name: masked(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [masked(v) for v in value]
    if isinstance(value, dict):
        return {str(k): masked(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
