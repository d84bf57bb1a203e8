"""The admin API's shapes: virtual keys (``/admin/keys``), teams (``/admin/teams``) and the
spend report (``/admin/spend``)."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

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
TEAM_ID: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(?!\n)$"
TeamId = Annotated[str, msgspec.Meta(
    pattern=TEAM_ID, description="A team id: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter "
                                 "or digit.")]
Description = Annotated[str, msgspec.Meta(max_length=1000)]


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


class AuditEntryView(Shape):
    """One admin action (``GET /admin/audit``). ``changes`` never holds a secret: a field
    named like one shows ``"[redacted]"``."""

    id: int
    at: Annotated[str, msgspec.Meta(description="RFC 3339, UTC.")]
    actor: Annotated[str, msgspec.Meta(
        description="admin-key, admin-key (cli:<user>) (the client's own word), signal, "
                    "cli:<user>, ...")]
    door: Literal["http", "grpc", "cli", "console", "process"]
    address: Annotated[str, msgspec.Meta(description="The client's address, when known.")]
    action: Annotated[str, msgspec.Meta(description="key.create, routes.update, ...")]
    target: str
    changes: dict[str, Any]
    outcome: Literal["ok", "refused"]


class AuditList(Shape):
    object: str
    data: list[AuditEntryView]
    has_more: bool


class TeamUpdate(Strict):
    """``PATCH /admin/teams/{id}``: only the fields given change."""

    description: Description | UnsetType = UNSET
    rpm_limit: Limit | UnsetType | None = UNSET
    tpm_limit: Limit | UnsetType | None = UNSET
    max_parallel_requests: Limit | UnsetType | None = UNSET
    monthly_budget_usd: Budget | UnsetType | None = UNSET
    metadata: JsonObject | UnsetType = UNSET


class TeamCreate(TeamUpdate, kw_only=True):
    """``POST /admin/teams``: ``id`` is required."""

    id: TeamId


class TeamView(Shape):
    """A team as the admin API shows it: ``spend_usd`` is the current period's, ``keys`` the
    number of keys that name it."""

    object: str
    id: str
    description: str
    created_at: str
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None
    monthly_budget_usd: float | None
    metadata: JsonObject
    spend_usd: float
    keys: int


class TeamDeleted(Shape):
    object: str
    id: str
    deleted: bool


class TeamList(Shape):
    object: str
    data: list[TeamView]


class TeamUsage(Shape):
    team: str
    period: str
    spend_usd: float
    budget_usd: float | None
    budget_remaining_usd: float | None
    requests: int
    by_day_and_model: list[dict[str, Any]]


class SpendTotals(Shape):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class SpendRow(SpendTotals):
    """One group: the ``group_by`` fields it is grouped by, then its sums."""

    day: str | UnsetType = UNSET
    key_id: str | UnsetType = UNSET
    key_name: str | UnsetType = UNSET
    team: str | UnsetType = UNSET
    model: str | UnsetType = UNSET


class SpendReport(Shape):
    """``GET /admin/spend`` (``format=json``)."""

    object: str
    start: str
    end: str
    group_by: list[str]
    data: list[SpendRow]
    totals: SpendTotals


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


class ConsoleSessionsRevoked(Shape):
    """``DELETE /admin/console/sessions``: every console session ended."""

    object: str
    revoked: int


class RecentRequest(Shape):
    """One finished request (metadata only), as the worker process that served it saw it."""

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
