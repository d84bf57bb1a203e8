"""The frame every API request runs in: drain accounting, auth, body parsing, errors, and the
access-log line and metrics at the end. Handlers supply only their own step.

The body is a JSON object; a handler that also takes uploads passes ``form_step`` and gets a
``multipart/form-data`` body as a :class:`Form` instead. Either way the body is read whole,
within ``SERVER.max_body_bytes`` (413 beyond) and ``SERVER.body_read_timeout_s`` (408 beyond).
An answer given before the body was read (a wrong key) needs no care here:
:mod:`ailb.http_api.connection` drains the body or closes the connection after any early answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import trio
from quart import Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder

from ailb.errors import GatewayError, InternalError, InvalidRequest
from ailb.http_api.caller import http_caller
from ailb.http_api.connection import attach_body
from ailb.http_api.errors import error_response, from_http_exception
from ailb.keys.auth import Principal
from ailb.pipeline.chat_parse import decode_json
from ailb.pipeline.frame import Frame
from ailb.pipeline.hints import route_hints
from ailb.pipeline.services import Services
from ailb.routing.router import Hints

INLINE_JSON_BYTES: Final = 1 << 20  # bodies up to this size are decoded on the event loop


class StreamBody(Protocol):
    """A streamed answer's body: the pieces to send, and ``aclose`` that ends the request
    (idempotent; to be called however the response ends)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HandOff:
    """A 200 answer whose body finishes the request itself (a stream): it closes the frame.
    ``headers`` are the response's, its content type included. Not tied to Quart: the fast
    door (:mod:`ailb.http_api.fast_door`) sends it on ASGI, :func:`run_request` as a Quart
    response."""

    body: StreamBody
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Upload:
    """One file of a multipart/form-data body."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Form:
    """A multipart/form-data body: its text fields (name, value) and its files, in order."""

    fields: tuple[tuple[str, str], ...]
    files: tuple[Upload, ...]

    def field(self, name: str) -> str | None:
        """The first value of text field ``name`` (None if absent)."""
        return next((value for key, value in self.fields if key == name), None)


MAX_PARTS = 1000  # fields and files of one multipart/form-data body
# a step answers a Response, a stream (HandOff) or a 200 JSON body as bytes
Step = Callable[[Frame, dict[str, Any], Principal, Hints], Awaitable[Response | HandOff | bytes]]
FormStep = Callable[[Frame, Form, Principal, Hints], Awaitable[Response | HandOff | bytes]]
ErrorRenderer = Callable[[GatewayError, dict[str, str]], Response]


def json_bytes(body: Mapping[str, Any] | bytes) -> bytes:
    """A JSON answer's body; bytes are relayed as they are."""
    if isinstance(body, bytes):
        return body
    return json.dumps(body, separators=(",", ":")).encode()


def json_response(body: Mapping[str, Any] | bytes) -> Response:
    """A 200 JSON answer (the frame adds AILB's headers); bytes are relayed as they are."""
    return Response(json_bytes(body), status=200, content_type="application/json")


def quart_stream(hand_off: HandOff) -> Response:
    """A stream as Quart's response; its body is closed when the request ends, however it
    ends (:func:`ailb.http_api.connection.attach_body`)."""
    attach_body(cast(Any, request)._get_current_object(), hand_off.body)  # the proxied object
    response = Response(hand_off.body, status=200, headers=hand_off.headers)
    response.timeout = None  # Quart would cut streams after RESPONSE_TIMEOUT
    return response


def parse_form(data: bytes, content_type: str) -> Form:
    """A multipart/form-data body, read whole. Raises InvalidRequest if it is malformed."""
    _, options = parse_options_header(content_type)
    boundary = options.get("boundary", "")
    if not boundary:
        raise InvalidRequest("A multipart/form-data body needs a boundary.")
    decoder = MultipartDecoder(boundary.encode("latin-1", "replace"))
    fields: list[tuple[str, str]] = []
    files: list[Upload] = []
    part: Field | File | None = None
    chunks: list[bytes] = []
    try:
        decoder.receive_data(data)
        decoder.receive_data(None)
        while not isinstance(event := decoder.next_event(), Epilogue):
            if isinstance(event, Field | File):
                if len(fields) + len(files) >= MAX_PARTS:
                    raise InvalidRequest(f"A multipart/form-data body may have at most "
                                         f"{MAX_PARTS} parts.")
                part, chunks = event, []
            elif isinstance(event, Data) and part is not None:
                chunks.append(event.data)
                if event.more_data:
                    continue
                body = b"".join(chunks)
                if isinstance(part, File):
                    files.append(Upload(part.name or "", part.filename,
                                        part.headers.get("content-type", ""), body))
                else:
                    fields.append((part.name or "", body.decode("utf-8", "replace")))
                part = None
    except ValueError:  # werkzeug's word for a malformed body (decode errors included)
        raise InvalidRequest("The multipart/form-data body is malformed.") from None
    return Form(tuple(fields), tuple(files))


async def decoded(data: bytes) -> dict[str, Any]:
    """The JSON object of a body; a large one (RAG takes up to ``RAG.max_upload_bytes``) is
    decoded in a thread, so the loop keeps its turns. Raises InvalidRequest."""
    if len(data) <= INLINE_JSON_BYTES:  # cheap: a thread would cost more than it saves
        return decode_json(data)
    return await trio.to_thread.run_sync(decode_json, data)


async def run_request(services: Services, step: Step,
                      render_error: ErrorRenderer = error_response, *,
                      form_step: FormStep | None = None) -> Response:
    """Run ``step`` on the request's JSON body (or ``form_step`` on a multipart/form-data
    body, when given) inside the request's :class:`Frame`. Returns the response; never raises
    GatewayError."""
    frame = Frame(services, request.headers)
    try:
        try:
            principal = frame.open(request.headers, http_caller())
            try:
                data = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            except HTTPException as exc:
                raise from_http_exception(exc) from exc
            hints = route_hints(request.headers)
            if form_step is not None and request.mimetype == "multipart/form-data":
                # pure-Python CPU work over up to max_body_bytes: in a thread, the loop keeps
                # its turns (the GIL's switch interval)
                form = await trio.to_thread.run_sync(parse_form, data,
                                                     request.content_type or "")
                outcome = await form_step(frame, form, principal, hints)
            else:
                body = {} if not data and request.method in ("GET", "DELETE") \
                    else await decoded(data)
                outcome = await step(frame, body, principal, hints)
        except GatewayError as exc:
            return render_error(exc, await frame.failed(exc))
        except Exception:  # a bug of ours: answer 500 under this request's id, and log it
            return render_error(InternalError(), frame.crashed())
        if isinstance(outcome, HandOff):
            frame.hand_off()
            return quart_stream(outcome)
        response = json_response(outcome) if isinstance(outcome, bytes) else outcome
        # charged before it leaves: the key's headers are final
        response.headers.update(await frame.succeeded(response.status_code))
        return response
    finally:
        if not frame.handed_off:
            await frame.close()
