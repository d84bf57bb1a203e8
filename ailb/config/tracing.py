"""OpenTelemetry tracing settings, read from the standard ``OTEL_*`` variables (pure).

Tracing is off unless an OTLP endpoint is given (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
turn it off even then. Only OTLP over HTTP with protobuf bodies is spoken. The variables are
the OpenTelemetry SDK's own (same names, units and defaults), so an operator's usual
environment works as it is:

=================================================  ==============================================
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``             the full URL spans are POSTed to
``OTEL_EXPORTER_OTLP_ENDPOINT``                    a base URL: ``/v1/traces`` is appended
``OTEL_EXPORTER_OTLP[_TRACES]_HEADERS``            ``k=v,k2=v2`` (values URL-encoded)
``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT``            ms per export (10000)
``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL``           ``http/protobuf`` only
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``  the resource (service.name ``ailb``)
``OTEL_TRACES_SAMPLER`` / ``_ARG``                 always_on, always_off, traceidratio,
                                                   parentbased_* (parentbased_always_on)
``OTEL_BSP_MAX_QUEUE_SIZE``                        spans buffered (2048); more are dropped
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``                 spans per POST (512)
``OTEL_BSP_SCHEDULE_DELAY``                        ms between exports (5000)
=================================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

from ailb.config.values import Secret
from ailb.errors import ConfigError

SAMPLERS: Final = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
                   "parentbased_always_off", "parentbased_traceidratio")
_TRUE: Final = ("true", "1", "yes", "on")


@dataclass(frozen=True, slots=True)
class TracingSettings:
    endpoint: str = ""  # empty: tracing is off
    headers: Mapping[str, Secret] = field(default_factory=dict)  # often an auth token
    timeout_s: float = 10.0
    service_name: str = "ailb"
    resource: Mapping[str, str] = field(default_factory=dict)
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0  # the ratio of the traceidratio samplers
    max_queue: int = 2048
    max_batch: int = 512
    schedule_delay_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


def _get(environ: Mapping[str, str], *names: str) -> str:
    """The first of ``names`` that is set and not blank ("" otherwise)."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return ""


def _pairs(name: str, raw: str) -> dict[str, str]:
    """``k=v,k2=v2`` (the W3C Baggage-like list OTEL_* variables use), values URL-decoded."""
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(name, f"must be a list of key=value pairs (got {item.strip()!r})")
        pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _number(environ: Mapping[str, str], names: tuple[str, ...], default: float,
            low: float) -> float:
    raw = _get(environ, *names)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(names[0], f"must be a number (got {raw!r})") from None
    if not value >= low:
        raise ConfigError(names[0], f"must be at least {low:g} (got {raw!r})")
    return value


def _endpoint(environ: Mapping[str, str]) -> str:
    name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    url = _get(environ, name)
    if not url:
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        base = _get(environ, name)
        url = f"{base.rstrip('/')}/v1/traces" if base else ""
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(name, f"must be an http:// or https:// URL (got {url!r})")
    return url


def parse_tracing(environ: Mapping[str, str]) -> TracingSettings:
    """Tracing settings from the environment. Raises ConfigError naming a bad variable."""
    endpoint = _endpoint(environ)
    disabled = _get(environ, "OTEL_SDK_DISABLED").lower() in _TRUE
    exporter = _get(environ, "OTEL_TRACES_EXPORTER").lower() or "otlp"
    if exporter not in ("otlp", "none"):
        raise ConfigError("OTEL_TRACES_EXPORTER", f"must be otlp or none (got {exporter!r})")
    protocol = _get(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        raise ConfigError("OTEL_EXPORTER_OTLP_PROTOCOL",
                          f"must be http/protobuf, the one AILB speaks (got {protocol!r})")
    sampler = _get(environ, "OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        raise ConfigError("OTEL_TRACES_SAMPLER", f"must be one of {', '.join(SAMPLERS)} "
                          f"(got {sampler!r})")
    ratio = 1.0
    if sampler.endswith("traceidratio"):
        ratio = _number(environ, ("OTEL_TRACES_SAMPLER_ARG",), 1.0, 0.0)
        if ratio > 1:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", f"must be between 0 and 1 (got {ratio})")
    resource = _pairs("OTEL_RESOURCE_ATTRIBUTES", _get(environ, "OTEL_RESOURCE_ATTRIBUTES"))
    service = _get(environ, "OTEL_SERVICE_NAME") or resource.pop("service.name", "") or "ailb"
    resource.pop("service.name", None)
    headers_name = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS"
                    if _get(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                    else "OTEL_EXPORTER_OTLP_HEADERS")
    headers = _pairs(headers_name, _get(environ, headers_name))
    max_queue = int(_number(environ, ("OTEL_BSP_MAX_QUEUE_SIZE",), 2048, 1))
    max_batch = int(_number(environ, ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), 512, 1))
    return TracingSettings(
        endpoint="" if disabled or exporter == "none" else endpoint,
        headers={k: Secret(v) for k, v in headers.items()},
        timeout_s=_number(environ, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                                    "OTEL_EXPORTER_OTLP_TIMEOUT"), 10_000, 1) / 1000,
        service_name=service,
        resource=resource,
        sampler=sampler,
        sampler_arg=ratio,
        max_queue=max_queue,
        max_batch=min(max_batch, max_queue),
        schedule_delay_s=_number(environ, ("OTEL_BSP_SCHEDULE_DELAY",), 5000, 0) / 1000,
    )
