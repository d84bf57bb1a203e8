"""The Quart-Trio application: routes bound to one ``Services`` object, errors in OpenAI shape."""

from __future__ import annotations

import logging
from functools import partial

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ailb import logs
from ailb.errors import GatewayError
from ailb.http_api import (
    admin,
    admin_ops,
    admin_teams,
    chat,
    completions,
    console,
    count_tokens,
    docs_page,
    embeddings,
    memory,
    messages,
    models,
    ops,
    rag,
    rag_jobs,
    responses,
)
from ailb.http_api.connection import BODY_LIMITS, ClosingHTTPConnection
from ailb.http_api.errors import (
    anthropic_error_body,
    error_body,
    error_response,
    from_http_exception,
)
from ailb.http_api.fast_door import Door, FastDoors
from ailb.pipeline.request_log import request_id
from ailb.pipeline.services import Services

_log = logging.getLogger("ailb.http")


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("ailb")
    app.asgi_http_class = ClosingHTTPConnection
    app.config["MAX_CONTENT_LENGTH"] = services.settings.server.max_body_bytes
    app.config[BODY_LIMITS] = rag_jobs.body_limits(services)  # RAG uploads: RAG.max_upload_bytes
    app.config["BODY_TIMEOUT"] = services.settings.server.body_read_timeout_s  # then 408
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["JSON_SORT_KEYS"] = False

    app.add_url_rule("/v1/chat/completions", "chat_completions",
                     partial(chat.chat_completions, services), methods=["POST"])
    app.add_url_rule("/v1/messages", "messages", partial(messages.messages, services),
                     methods=["POST"])
    app.add_url_rule("/v1/messages/count_tokens", "count_tokens",
                     partial(count_tokens.count_tokens, services), methods=["POST"])
    app.add_url_rule("/v1/completions", "completions",
                     partial(completions.completions, services), methods=["POST"])
    app.add_url_rule("/v1/embeddings", "embeddings", partial(embeddings.embeddings, services),
                     methods=["POST"])
    app.add_url_rule("/v1/models", "models", partial(models.models, services), methods=["GET"])
    app.add_url_rule("/v1/models/<path:model_id>", "model", partial(models.model, services),
                     methods=["GET"])
    app.add_url_rule("/api/routing/stats", "routing_stats",
                     partial(ops.routing_stats, services), methods=["GET"])
    for rule, endpoint, view, methods in (*admin.routes(services), *admin_teams.routes(services),
                                          *admin_ops.routes(services),
                                          *console.routes(services), *memory.routes(services),
                                          *responses.routes(services),
                                          *rag.routes(services), *rag_jobs.routes(services),
                                          *docs_page.routes()):
        app.add_url_rule(rule, endpoint, view, methods=methods)
    app.add_url_rule("/healthz", "healthz", partial(ops.healthz, services), methods=["GET"])
    app.add_url_rule("/readyz", "readyz", partial(ops.readyz, services), methods=["GET"])
    app.add_url_rule("/metrics", "metrics", partial(ops.metrics, services), methods=["GET"])

    async def stamp_request_id(response: Response) -> Response:
        # Chat responses carry their own id (also sent upstream); the rest get one here.
        if "x-request-id" not in response.headers:
            response.headers["x-request-id"] = request_id(request.headers)
        return response

    app.after_request(stamp_request_id)

    async def on_http_exception(exc: HTTPException) -> Response:
        return error_response(from_http_exception(exc))

    async def on_gateway_error(exc: GatewayError) -> Response:
        return error_response(exc)

    async def on_unexpected(exc: Exception) -> Response:
        logs.event(_log, "unhandled error", logging.ERROR, error=type(exc).__name__)
        _log.exception("unhandled error in a request handler")
        return error_response(GatewayError("The server had an error while processing your "
                                           "request."))

    app.register_error_handler(HTTPException, on_http_exception)
    app.register_error_handler(GatewayError, on_gateway_error)
    app.register_error_handler(Exception, on_unexpected)
    # POST /v1/chat/completions and /v1/messages on raw ASGI; every other request to Quart
    app.asgi_app = FastDoors(app.asgi_app, services, {  # type: ignore[method-assign]
        "/v1/chat/completions": Door(partial(chat.chat_step, services), error_body),
        "/v1/messages": Door(partial(messages.messages_step, services), anthropic_error_body),
    })
    return app
