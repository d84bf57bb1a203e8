"""The one exception tree. Each request-level error knows its HTTP status, OpenAI error ``type``
and ``code``, and gRPC status name; only ``http_api`` and ``grpc_api`` turn them into wire bodies.

::

    AILBError
    ├── ConfigError                 bad configuration: the process exits with code 2
    │   └── ConfigErrors            several at once (``errors``: each of them)
    └── GatewayError                one request failed; carries status/type/code/param
        ├── InvalidRequest          400  invalid_request_error        (param names the field)
        ├── AuthenticationFailed    401  authentication_error         invalid_api_key
        ├── BudgetExceeded          402  insufficient_quota           budget_exceeded
        ├── PermissionDenied        403  permission_error
        ├── NotFound                404  invalid_request_error        (model_not_found, ...)
        ├── Conflict                409  invalid_request_error        (embedder_mismatch, ...)
        │   └── EmbedderMismatch                                      embedder_mismatch
        ├── PayloadTooLarge         413  invalid_request_error        request_too_large
        ├── RateLimited             429  rate_limit_error             (retry_after_s)
        │   └── AuthThrottled                                         too_many_auth_failures
        ├── InternalError           500  server_error                 (a bug: no detail shown)
        ├── NoHealthyDeployment     503  service_unavailable          no_healthy_deployment
        ├── ShuttingDown            503  service_unavailable          server_shutting_down
        ├── StoreUnavailable        503  service_unavailable          vector_store_unavailable,
        │                                                             key_store_unavailable,
        │                                                             shared_state_unavailable
        └── UpstreamError           an upstream call failed; ``retryable``: may another try help
            ├── UpstreamStatusError the upstream answered an error: 4xx passed on as is, 5xx as 502
            ├── UpstreamUnavailable 502  upstream_error               connect/protocol failure
            ├── UpstreamStreamCut   502  upstream_error               the stream broke mid-way
            └── UpstreamTimeout     504  timeout                      connect/read/first token

Each class names its gRPC status (a ``grpclib.const.Status`` member name) in ``grpc_status``.

Foreign exceptions are translated at their edge module, ``from`` the original: httpx in
``providers/http.py``, sqlite in ``keys/store.py``, chromadb in ``vectors/chroma.py``, dynaconf
in ``config/settings.py``, coredis (Redis/Valkey) in ``shared/redis.py``; grpclib's ``GRPCError``
is made only at the gRPC door (``grpc_api/metadata.py``), and these errors become HTTP bodies
only in ``http_api/errors.py``.
"""

from __future__ import annotations

from collections.abc import Sequence


class AILBError(Exception):
    """Root of every error AILB raises on purpose."""


class ConfigError(AILBError):
    """A configuration value is wrong; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key = key
        self.problem = problem


class MissingSecret(ConfigError):
    """A variable the configuration names for a secret (a provider's ``api_key_env``, a
    declared key's ``key_env``) is not set. The server refuses to start without it; tools that
    need no provider (``ailb keys``, ``ailb db``) load the configuration without it."""


class ConfigErrors(ConfigError):
    """Several configuration values are wrong: ``errors`` holds each, in the order found
    (``key`` and ``problem`` are the first's)."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.key, first.problem)
        self.errors = tuple(errors)
        self.args = (f"{len(errors)} configuration errors: "
                     + "; ".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class CommandFailed(AILBError):
    """A command line tool could not do what it was asked (``ailb keys``: the server did not
    answer, or refused the admin key); ``exit_code`` is the process's."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class GatewayError(AILBError):
    """One request failed in a way the client should hear about."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    grpc_status: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after_s = retry_after_s
        self.headers: dict[str, str] = {}  # extra response headers (e.g. a key's rate limits)


class InternalError(GatewayError):
    """Something went wrong that the client cannot fix (a bug); the details go to the log only."""

    status = 500
    type = "server_error"
    grpc_status = "INTERNAL"

    def __init__(self) -> None:
        super().__init__("The server had an error while processing your request.")


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    grpc_status = "INVALID_ARGUMENT"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    grpc_status = "UNAUTHENTICATED"


class BudgetExceeded(GatewayError):
    """A key's budget for the period has no room for the request (waiting will not help)."""

    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"
    grpc_status = "RESOURCE_EXHAUSTED"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    grpc_status = "PERMISSION_DENIED"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    grpc_status = "NOT_FOUND"


class Conflict(GatewayError):
    """The request clashes with the state of a resource (it exists, or was built differently)."""

    status = 409
    type = "invalid_request_error"
    grpc_status = "FAILED_PRECONDITION"


class EmbedderMismatch(Conflict):
    """A vector collection was filled by another embedder than the one configured now."""

    code = "embedder_mismatch"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    grpc_status = "RESOURCE_EXHAUSTED"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    grpc_status = "RESOURCE_EXHAUSTED"


class AuthThrottled(RateLimited):
    """Too many failed authentications from the client's address lately: refused before any
    key is looked at, until ``retry_after_s`` has passed."""

    code = "too_many_auth_failures"


class ShuttingDown(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "server_shutting_down"
    grpc_status = "UNAVAILABLE"


class StoreUnavailable(GatewayError):
    """A store failed or cannot be reached: the vector store (ChromaDB), the key store
    (keys, spend, reservations, ledger; ``code`` ``key_store_unavailable``), or the shared
    state in Redis/Valkey (``code`` ``shared_state_unavailable``)."""

    status = 503
    type = "service_unavailable"
    code = "vector_store_unavailable"
    grpc_status = "UNAVAILABLE"


class NoHealthyDeployment(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "no_healthy_deployment"
    grpc_status = "UNAVAILABLE"


class UpstreamError(GatewayError):
    """An upstream call failed. ``retryable`` tells routing whether another deployment may help."""

    type = "upstream_error"
    grpc_status = "UNAVAILABLE"
    retryable: bool = True
    kind: str = "error"  # label of the ailb_upstream_errors_total metric


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; the client gets that status and message."""

    kind = "status"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        upstream_status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, status=status,
                         retry_after_s=retry_after_s)
        self.upstream_status = status if upstream_status is None else upstream_status
        self.type = error_type or ("invalid_request_error" if status < 500 else "upstream_error")
        self.retryable = self.upstream_status in (408, 409, 429) or self.upstream_status >= 500
        self.grpc_status = _grpc_for_http(status)


class UpstreamUnavailable(UpstreamError):
    status = 502
    code = "upstream_unavailable"
    kind = "connect"


class UpstreamStreamCut(UpstreamError):
    status = 502
    code = "upstream_stream_cut"
    kind = "stream_cut"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"
    grpc_status = "DEADLINE_EXCEEDED"
    kind = "timeout"


def _grpc_for_http(status: int) -> str:
    return {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        408: "DEADLINE_EXCEEDED",
        409: "ABORTED",
        413: "RESOURCE_EXHAUSTED",
        422: "INVALID_ARGUMENT",
        429: "RESOURCE_EXHAUSTED",
    }.get(status, "UNAVAILABLE" if status >= 500 else "UNKNOWN")
