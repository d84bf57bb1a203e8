"""The admin API's shapes: virtual keys (``/admin/keys``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from ailb.schemas.common import JSON_SAFE_MAX, JsonObject, NonEmpty, Shape, Strict, matching

MAX_BUDGET_USD = 1e15
Name = Annotated[str, msgspec.Meta(max_length=200)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=JSON_SAFE_MAX,
                                    description="1 to 2^53, or null for no limit.")]
Budget = Annotated[float, msgspec.Meta(ge=0, le=MAX_BUDGET_USD)]
Grant = Annotated[str, matching(r"^[A-Za-z0-9._\-*?\[\]!]{1,100}(?!\n)$")]
When = Annotated[str, msgspec.Meta(description="An RFC 3339 time with a timezone.")]


class KeyUpdate(Strict):
    """``PATCH /admin/keys/{id}``: only the fields given change."""

    name: Name | UnsetType = UNSET
    owner: Name | UnsetType = UNSET
    team: Name | UnsetType = UNSET
    expires_at: When | UnsetType | None = UNSET
    active: bool | UnsetType = UNSET
    allowed_models: list[NonEmpty] | UnsetType | None = UNSET
    rpm_limit: Limit | UnsetType | None = UNSET
    tpm_limit: Limit | UnsetType | None = UNSET
    max_parallel_requests: Limit | UnsetType | None = UNSET
    monthly_budget_usd: Budget | UnsetType | None = UNSET
    metadata: JsonObject | UnsetType = UNSET
    rag_collections: list[Grant] | UnsetType | None = UNSET


class KeyCreate(KeyUpdate):
    """``POST /admin/keys``: ``name`` is required."""

    name: Name


class KeyView(Shape):
    """A key as the admin API shows it (never its secret)."""

    id: str
    name: str
    owner: str | None
    team: str | None
    created_at: str
    expires_at: str | None
    active: bool
    allowed_models: list[str]
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None
    monthly_budget_usd: float | None
    metadata: JsonObject
    rag_collections: list[str]
    source: str


class KeyCreated(KeyView):
    """A new or rotated key: ``key`` is its secret, shown this once."""

    key: str


class KeyList(Shape):
    object: str
    data: list[KeyView]


class KeyUsage(Shape):
    key_id: str
    period: str
    spend_usd: float
    budget_usd: float | None
    budget_remaining_usd: float | None
    requests: int
    by_day_and_model: list[dict[str, Any]]


class ConsoleSignIn(Strict):
    """``POST /console/session``: the admin key, for a console session (a cookie)."""

    admin_key: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class ConsoleSession(Shape):
    """A console session's CSRF token (send it in ``csrf_header`` with every change) and
    lifetimes."""

    object: str
    csrf_token: str
    csrf_header: str
    idle_s: float
    max_s: float


class ConsoleSignedOut(Shape):
    object: str
    signed_out: bool


class RecentRequest(Shape):
    """One finished request (metadata only), as this worker process saw it."""

    request_id: str
    at: str
    key_id: str
    team: str | None
    model: str
    deployment: str | None
    provider: str | None
    stream: bool
    status: int
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None


class RecentRequestList(Shape):
    object: str
    data: list[RecentRequest]
