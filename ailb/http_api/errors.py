"""Errors on the HTTP wire, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

The one place where the exception tree meets HTTP statuses and headers.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Response
from werkzeug.exceptions import HTTPException

from ailb.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge
from ailb.http_api.anthropic_ingress import error_object as anthropic_error_object
from ailb.pipeline.notes import error_headers


def error_object(exc: GatewayError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param,
                      "code": exc.code}}


def error_body(exc: GatewayError) -> bytes:
    """The error's JSON body in OpenAI's shape."""
    return json.dumps(error_object(exc), separators=(",", ":")).encode()


def anthropic_error_body(exc: GatewayError) -> bytes:
    """The error's JSON body in Anthropic's shape."""
    return json.dumps(anthropic_error_object(exc), separators=(",", ":")).encode()


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(exc), status=exc.status, content_type="application/json",
                    headers={**error_headers(exc), **(headers or {})})


def anthropic_error_response(exc: GatewayError,
                             headers: dict[str, str] | None = None) -> Response:
    """The same error in Anthropic's shape (``/v1/messages`` and the Anthropic SDK's calls)."""
    return Response(anthropic_error_body(exc), status=exc.status,
                    content_type="application/json",
                    headers={**error_headers(exc), **(headers or {})})


def body_timeout() -> GatewayError:
    """408: the request body did not arrive within ``SERVER.body_read_timeout_s``."""
    return InvalidRequest("The request body did not arrive in time "
                          "(SERVER.body_read_timeout_s).", code="request_timeout", status=408)


def body_too_large() -> GatewayError:
    """413: the request body is over the route's limit."""
    return PayloadTooLarge("The request body is larger than this gateway accepts "
                           "(SERVER.max_body_bytes; RAG documents: RAG.max_upload_bytes).")


def from_http_exception(exc: HTTPException) -> GatewayError:
    """Werkzeug's routing and body errors, translated into the tree."""
    code = exc.code or 500
    if code == 404:
        return NotFound("Unknown request URL. Please check the URL for typos, or see the API "
                        "reference at /v1/models and /v1/chat/completions.", code="unknown_url")
    if code == 405:
        return InvalidRequest("This method is not allowed for this URL.",
                              code="method_not_allowed", status=405)
    if code == 408:
        return body_timeout()
    if code == 413:
        return body_too_large()
    if code < 500:
        return InvalidRequest(exc.description or "Bad request.", status=code)
    return GatewayError("The server had an error while processing your request.")


def from_protocol_status(status: int) -> GatewayError:
    """Hypercorn's answer to a request h11 could not parse, by h11's status hint: 431 for a
    header section over the limit; anything else (a malformed request line, header or chunk;
    a transfer coding other than chunked, for which h11 hints 501) is the client's: 400."""
    if status == 431:
        return InvalidRequest("The request's header section is larger than this gateway "
                              "accepts.", code="request_header_fields_too_large", status=431)
    return InvalidRequest("The request is not valid HTTP/1.1.", code="bad_http_request")
