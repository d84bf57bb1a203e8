"""The OpenAPI 3.1 document of the HTTP API, made from the declared shapes. Pure.

:data:`OPERATIONS` lists every route with its request and answer shapes and the errors it may
give; :func:`document` turns it into the JSON served at ``/openapi.json``. A test holds the list
to the application's routes, so a new route without its entry fails the suite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec

from ailb import __version__
from ailb.schemas import admin, anthropic, openai, rag, responses, responses_api
from ailb.schemas.common import CollectionName, ErrorBody, SessionId

_REF: Final = "#/components/schemas/{name}"
_STATUS_TEXT: Final = {
    400: "The request is invalid; `param` names the field.",
    401: "No key, or a wrong one.",
    402: "The key's budget is spent.",
    403: "The key may not do this (model, collection, admin API).",
    404: "Not found (unknown model, key, collection, document or session).",
    405: "This method is not allowed for this URL.",
    408: "The request body did not arrive in time.",
    409: "Conflict (e.g. a collection made with another embedder).",
    413: "The request body is larger than the gateway accepts.",
    429: "A rate limit: `Retry-After` says when to try again.",
    431: "The request's headers are too large.",
    500: "A bug in the gateway (logged under the request id).",
    502: "The upstream failed.",
    503: "No deployment can serve, the gateway is draining, or a store is unreachable.",
    504: "The upstream timed out.",
}
_CALL: Final = (400, 401, 402, 403, 404, 408, 413, 429, 500, 502, 503, 504)
_ADMIN: Final = (400, 401, 403, 404, 408, 413, 429, 500, 503)
_READ: Final = (400, 401, 403, 404, 429, 500, 503)


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    body: type | None = None
    answer: type | None = None
    status: int = 200
    errors: tuple[int, ...] = _READ
    auth: bool = True
    error_shape: type = ErrorBody
    streams: bool = False
    multipart: bool = False
    also: tuple[tuple[int, type, str], ...] = ()  # other success answers: status, shape, why
    media: str | None = None  # an answer that is not JSON: its content type (a page, a script)


_KEY = "/admin/keys/{key_id}"
_TEAM = "/admin/teams/{team_id}"
_COLL = "/v1/rag/collections"
_RESP = "/v1/responses/{response_id}"
OPERATIONS: Final = (
    Operation("post", "/v1/chat/completions", "createChatCompletion",
              "Chat completion (OpenAI), JSON or SSE stream", "chat",
              openai.ChatCompletionRequest, responses.ChatCompletion, errors=_CALL,
              streams=True),
    Operation("post", "/v1/messages", "createMessage",
              "Message (Anthropic Messages API), JSON or SSE stream", "chat",
              anthropic.MessagesRequest, responses.AnthropicMessageAnswer, errors=_CALL,
              error_shape=responses.AnthropicError, streams=True),
    Operation("post", "/v1/responses", "createResponse",
              "Response (OpenAI Responses API), JSON or SSE stream, on every provider",
              "responses", responses_api.ResponsesRequest, responses_api.ResponseObject,
              errors=_CALL, streams=True),
    Operation("get", _RESP, "getResponse", "A stored response (the key's own)", "responses",
              answer=responses_api.ResponseObject),
    Operation("delete", _RESP, "deleteResponse", "Delete a stored response", "responses",
              answer=responses_api.ResponseDeleted),
    Operation("get", f"{_RESP}/input_items", "listResponseInputItems",
              "A stored response's input items", "responses",
              answer=responses_api.InputItemList),
    Operation("post", "/v1/messages/count_tokens", "countMessageTokens",
              "Count a Message's input tokens (Anthropic's count, or AILB's estimate: see the "
              "x-ailb-token-count header)", "chat", anthropic.CountTokensRequest,
              responses.TokenCount, errors=_CALL, error_shape=responses.AnthropicError),
    Operation("post", "/v1/completions", "createCompletion",
              "Legacy text completion (OpenAI), answered through chat; JSON or SSE stream",
              "chat", openai.CompletionRequest, responses.TextCompletion, errors=_CALL,
              streams=True),
    Operation("post", "/v1/embeddings", "createEmbedding", "Embeddings (OpenAI)", "embeddings",
              openai.EmbeddingRequest, responses.EmbeddingList, errors=_CALL),
    Operation("get", "/v1/models", "listModels", "The models this gateway routes (Anthropic's "
              "shape with the anthropic-version header)", "models",
              answer=responses.ModelList, errors=(400, 401, 429, 500)),
    Operation("get", "/v1/models/{model_id}", "retrieveModel", "One model (Anthropic's shape "
              "with the anthropic-version header)", "models", answer=responses.ModelInfo,
              errors=(401, 404, 429, 500)),
    Operation("get", "/api/routing/stats", "routingStats", "Per-deployment routing state",
              "operations", errors=(401, 429, 500)),
    Operation("post", "/admin/keys", "createKey", "Create a virtual key (admin)", "admin",
              admin.KeyCreate, admin.KeyCreated, 201, _ADMIN),
    Operation("get", "/admin/keys", "listKeys", "List virtual keys (admin)", "admin",
              answer=admin.KeyList, errors=_ADMIN),
    Operation("get", _KEY, "getKey", "One virtual key (admin)", "admin",
              answer=admin.KeyView, errors=_ADMIN),
    Operation("patch", _KEY, "updateKey", "Change a key's fields (admin)", "admin",
              admin.KeyUpdate, admin.KeyView, errors=_ADMIN),
    Operation("delete", _KEY, "revokeKey", "Revoke a key (admin)", "admin",
              answer=admin.KeyView, errors=_ADMIN),
    Operation("post", f"{_KEY}/rotate", "rotateKey", "A new secret for a key (admin)", "admin",
              answer=admin.KeyCreated, errors=_ADMIN),
    Operation("get", f"{_KEY}/usage", "keyUsage", "A key's spend this period (admin)", "admin",
              answer=admin.KeyUsage, errors=_ADMIN),
    Operation("get", "/admin/audit", "listAudit", "The audit log of admin actions, newest "
              "first (admin)", "admin", answer=admin.AuditList, errors=_READ),
    Operation("post", "/admin/teams", "createTeam", "Create a team (admin)", "admin",
              admin.TeamCreate, admin.TeamView, 201, (*_ADMIN, 409)),
    Operation("get", "/admin/teams", "listTeams", "List teams (admin)", "admin",
              answer=admin.TeamList, errors=_ADMIN),
    Operation("get", _TEAM, "getTeam", "One team (admin)", "admin", answer=admin.TeamView,
              errors=_ADMIN),
    Operation("patch", _TEAM, "updateTeam", "Change a team's fields (admin)", "admin",
              admin.TeamUpdate, admin.TeamView, errors=_ADMIN),
    Operation("delete", _TEAM, "deleteTeam", "Delete a team that has no active key (admin)",
              "admin", answer=admin.TeamDeleted, errors=(*_ADMIN, 409)),
    Operation("get", f"{_TEAM}/usage", "teamUsage", "A team's spend this period (admin)",
              "admin", answer=admin.TeamUsage, errors=_ADMIN),
    Operation("get", "/admin/spend", "spendReport", "Spend per key, team, model or day over "
              "a date range, JSON or CSV (format=csv) (admin)", "admin",
              answer=admin.SpendReport, errors=_ADMIN),
    Operation("get", "/admin/requests/recent", "recentRequests",
              "Every worker's last finished requests, metadata only (admin)", "admin",
              answer=admin.RecentRequestList, errors=_ADMIN),
    Operation("delete", "/admin/console/sessions", "revokeConsoleSessions",
              "End every web console session, on every gateway sharing the store (admin)",
              "admin", answer=admin.ConsoleSessionsRevoked, errors=_ADMIN),
    Operation("get", "/admin/config", "effectiveConfig",
              "The effective configuration, secrets masked (admin)", "admin", errors=_ADMIN),
    Operation("post", "/console/session", "consoleSignIn",
              "Sign in to the web console with the admin key (sets the session cookie)",
              "console", admin.ConsoleSignIn, admin.ConsoleSession,
              errors=(400, 401, 403, 408, 413, 429, 500, 503), auth=False),
    Operation("get", "/console/session", "consoleSession",
              "The console session's CSRF token (with the session cookie)", "console",
              answer=admin.ConsoleSession, errors=(401, 500, 503), auth=False),
    Operation("delete", "/console/session", "consoleSignOut",
              "Sign out of the web console (ends the session everywhere)", "console",
              answer=admin.ConsoleSignedOut, errors=(401, 403, 500, 503), auth=False),
    Operation("get", "/console", "console", "The web console", "console", errors=(),
              auth=False, media="text/html"),
    Operation("get", "/console/app.css", "consoleStyle", "The web console's style", "console",
              errors=(), auth=False, media="text/css"),
    Operation("get", "/console/app.js", "consoleScript", "The web console's script", "console",
              errors=(), auth=False, media="text/javascript"),
    Operation("get", "/v1/memory/sessions", "listSessions", "The key's memory sessions",
              "memory", answer=rag.ObjectList),
    Operation("get", "/v1/memory/{session_id}", "getSession", "A session's remembered turns",
              "memory"),
    Operation("delete", "/v1/memory/{session_id}", "forgetSession", "Forget a session",
              "memory"),
    Operation("post", _COLL, "createCollection", "Create a RAG collection", "rag",
              rag.CollectionCreate, rag.Collection, 201, (*_ADMIN, 409)),
    Operation("get", _COLL, "listCollections", "List RAG collections", "rag",
              answer=rag.ObjectList),
    Operation("get", f"{_COLL}/{{name}}", "getCollection", "One RAG collection", "rag",
              answer=rag.Collection),
    Operation("delete", f"{_COLL}/{{name}}", "dropCollection", "Drop a RAG collection", "rag"),
    Operation("post", f"{_COLL}/{{name}}/documents", "addDocuments",
              "Add documents (JSON, or multipart/form-data files)", "rag", rag.DocumentsAdd,
              rag.ObjectList, 201, (*_ADMIN, 409), multipart=True,
              also=((202, rag.IngestJob, "Accepted as an ingest job (a body over "
                     "RAG.sync_max_bytes, or async=true): follow it at /v1/rag/jobs/{id}."),)),
    Operation("get", "/v1/rag/jobs/{job_id}", "getIngestJob", "An ingest job's status", "rag",
              answer=rag.IngestJob),
    Operation("get", f"{_COLL}/{{name}}/documents", "listDocuments", "List documents", "rag",
              answer=rag.ObjectList),
    Operation("get", f"{_COLL}/{{name}}/documents/{{doc_id}}", "getDocument",
              "One document and its chunks", "rag"),
    Operation("delete", f"{_COLL}/{{name}}/documents/{{doc_id}}", "dropDocument",
              "Remove a document", "rag"),
    Operation("post", f"{_COLL}/{{name}}/query", "queryCollection",
              "Retrieve passages for a query", "rag", rag.QueryRequest, rag.ObjectList,
              errors=(*_READ, 408, 413)),
    Operation("get", "/healthz", "healthz", "Liveness and each deployment's health",
              "operations", answer=responses.Health, errors=(), auth=False),
    Operation("get", "/readyz", "readyz", "Readiness (503 while it cannot serve)",
              "operations", answer=responses.Ready, errors=(503,), auth=False),
    Operation("get", "/metrics", "metrics", "Prometheus metrics", "operations", errors=(),
              auth=False),
    Operation("get", "/openapi.json", "openapi", "This document", "operations", errors=(),
              auth=False),
    Operation("get", "/docs", "docs", "This document, rendered", "operations", errors=(),
              auth=False),
)
_PATH_PARAMS: Final[dict[str, Any]] = {
    "key_id": Annotated[str, msgspec.Meta(min_length=1, max_length=200)],
    "team_id": Annotated[str, msgspec.Meta(min_length=1, max_length=200)],
    "model_id": Annotated[str, msgspec.Meta(min_length=1, max_length=200)],
    "session_id": SessionId, "name": CollectionName, "doc_id": rag.DocumentId,
    "response_id": responses_api.ResponseId,
    "job_id": Annotated[str, msgspec.Meta(min_length=1, max_length=200)]}
_QUERY: Final = {
    "listDocuments": (("limit", 1, 1000), ("offset", 0, 10**9)),
    "listResponseInputItems": (("limit", 1, 100),),
    "listAudit": (("limit", 1, 500), ("before", 1, 2**63 - 1)),
}
_TEXT_QUERY: Final = {
    "listAudit": (("action", "Only entries of this action (e.g. key.create)."),
                  ("target", "Only entries about this target (e.g. a key id).")),
    "spendReport": (("start", "The first day, YYYY-MM-DD (UTC; default: the month's first)."),
                    ("end", "The last day, YYYY-MM-DD (included; default: today)."),
                    ("group_by", "Comma-separated: key, team, model, day (default: day)."),
                    ("format", "json (default) or csv (text/csv, a header row)."),
                    ("key_id", "Only this key's rows."), ("team", "Only this team's rows."),
                    ("model", "Only this model's rows.")),
}


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for part in operation.path.split("/"):
        if part.startswith("{"):
            params.append({"name": part[1:-1], "in": "path", "required": True,
                           "schema": msgspec.json.schema(_PATH_PARAMS[part[1:-1]])})
    for name, low, high in _QUERY.get(operation.operation_id, ()):
        params.append({"name": name, "in": "query", "required": False,
                       "schema": {"type": "integer", "minimum": low, "maximum": high}})
    for name, description in _TEXT_QUERY.get(operation.operation_id, ()):
        params.append({"name": name, "in": "query", "required": False,
                       "description": description,
                       "schema": {"type": "string", "maxLength": 200}})
    if operation.operation_id == "addDocuments":
        params.append({"name": "async", "in": "query", "required": False,
                       "description": "true: run as an ingest job (202); false: answer when "
                       "done, whatever the size (default: a job above RAG.sync_max_bytes).",
                       "schema": {"type": "string", "enum": ["true", "false"]}})
    if operation.tag == "memory":
        params.append({"name": "key_id", "in": "query", "required": False,
                       "description": "Another key's sessions (admin key only).",
                       "schema": {"type": "string"}})
    return params


def _content(schema: dict[str, Any], operation: Operation, status: int) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if operation.streams and status == operation.status:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return content


def _operation(operation: Operation, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK"}
    if operation.answer is not None:
        ok["content"] = _content(refs[operation.answer], operation, operation.status)
    elif operation.operation_id == "metrics":
        ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    elif operation.media is not None:
        ok["content"] = {operation.media: {"schema": {"type": "string"}}}
    elif operation.operation_id == "docs":
        ok["content"] = {"text/html": {"schema": {"type": "string"}}}
    else:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    if operation.operation_id == "spendReport":  # format=csv
        ok["content"]["text/csv"] = {"schema": {"type": "string"}}
    answers: dict[str, Any] = {str(operation.status): ok}
    for status, shape, why in operation.also:
        answers[str(status)] = {"description": why,
                                "content": {"application/json": {"schema": refs[shape]}}}
    for status in operation.errors:
        answers[str(status)] = {"description": _STATUS_TEXT[status], "content": {
            "application/json": {"schema": refs[operation.error_shape]}}}
    out: dict[str, Any] = {"operationId": operation.operation_id, "summary": operation.summary,
                           "tags": [operation.tag], "responses": answers}
    if operation.body is not None:
        body: dict[str, Any] = {"application/json": {"schema": refs[operation.body]}}
        if operation.multipart:
            body["multipart/form-data"] = {"schema": {
                "type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "metadata": {"type": "string", "description": "A JSON object."},
                    "id": {"type": "string",
                           "description": "The document id: one per file, in order."}}}}
        out["requestBody"] = {"required": True, "content": body}
    params = _parameters(operation)
    if params:
        out["parameters"] = params
    if not operation.auth:
        out["security"] = []
    return out


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a new dict each call)."""
    shapes: list[type] = []
    for operation in OPERATIONS:
        for shape in (operation.body, operation.answer, operation.error_shape,
                      *(also[1] for also in operation.also)):
            if shape is not None and shape not in shapes:
                shapes.append(shape)
    schemas, components = msgspec.json.schema_components(shapes, ref_template=_REF)
    refs = dict(zip(shapes, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = _operation(operation, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "AILB", "version": __version__, "description": (
            "AILB, an AI load balancer: OpenAI- and Anthropic-compatible APIs routed to "
            "OpenAI-compatible servers, Anthropic and Ollama. Authenticate with "
            "`Authorization: Bearer <key>` (or `x-api-key`). Fields a shape does not name "
            "pass through to OpenAI-compatible upstreams.")},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
        "security": [{"bearer": []}, {"apiKey": []}],
        "tags": [{"name": name} for name in
                 ("chat", "responses", "embeddings", "models", "memory", "rag", "admin", "console",
                  "operations")],
    }
