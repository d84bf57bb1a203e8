"""The effective configuration as plain JSON-able data, every secret masked (``ailb config``,
``GET /admin/config``, the console's Configuration page, gRPC ``GetConfig``).

What counts as a secret: every :class:`~ailb.config.values.Secret`; every field or mapping key
whose name is a secret's by the audit log's rule (:func:`ailb.audit.entry.is_secret`: a YAML
key's ``secret_hash``, ``password``, ``token``... in a key's ``metadata`` too); header values
(they often carry credentials); and in every text that is a URL (a deployment's ``base_url``,
the OTLP ``tracing.endpoint``, ``chroma_url``, any URL inside metadata), the user information's
password (a user name alone is hidden too: it is often a token) and secret-named query
parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ailb.audit.entry import is_secret
from ailb.config.schema import DeploymentSettings
from ailb.config.values import Secret

HIDDEN: Final = "***"
_URL_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def without_password(url: str) -> str:
    """``url`` with no credential: ``user:***@`` for a password, ``***@`` for a user name
    alone, ``***`` for the value of a secret-named query parameter. Text that is not a URL
    comes back as it is."""
    if not _URL_RE.match(url):
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:  # not a URL after all (a bad port): show nothing of it past the scheme
        return url.split("://", 1)[0] + "://" + HIDDEN
    if "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:{HIDDEN}" if parts.password is not None else HIDDEN
        parts = parts._replace(netloc=f"{user}@{host}")
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(is_secret(name) for name, _ in pairs):
            parts = parts._replace(query=urlencode(
                [(name, HIDDEN if is_secret(name) else value) for name, value in pairs],
                safe="*"))
    return urlunsplit(parts)


def _field(name: str, value: Any) -> Any:
    """One named value: hidden when the name is a secret's (and it holds something)."""
    if is_secret(name) and not isinstance(value, Secret) and value not in ("", None):
        return HIDDEN
    return masked(value)


def masked(value: Any) -> Any:
    """Settings as plain JSON-able data, every secret masked (see the module's text)."""
    if isinstance(value, Secret):
        return value.masked()
    if isinstance(value, DeploymentSettings):
        shown = {name: _field(name, getattr(value, name)) for name in value.__dataclass_fields__}
        shown["headers"] = {name: HIDDEN for name in value.headers}
        return shown
    if hasattr(value, "__dataclass_fields__"):
        return {name: _field(name, getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [masked(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _field(str(k), v) for k, v in value.items()}
    if isinstance(value, str):
        return without_password(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return str(value)
