"""The one error tree: every request error knows its HTTP and gRPC status, and both doors map
every one of them; the gRPC door turns anything else into INTERNAL without leaking details."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from grpclib import GRPCError, Status
from grpclib.const import Cardinality, Handler

from ailb import errors
from ailb.errors import GatewayError, InternalError, NotFound, UpstreamStatusError
from ailb.grpc_api.metadata import Guarded, grpc_error, guarded
from ailb.http_api.errors import error_response


def _all_subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found: list[type[GatewayError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


TREE: list[type[GatewayError]] = [GatewayError, *_all_subclasses(GatewayError)]


def _instance(cls: type[GatewayError]) -> GatewayError:
    name = cls.__name__
    if cls is InternalError:
        return InternalError()
    if issubclass(cls, UpstreamStatusError):
        return cls("the upstream said no", status=422)
    return cls(f"a {name}")


def test_every_error_class_lives_in_the_one_tree() -> None:
    names = {cls.__name__ for cls in TREE}
    assert {"BudgetExceeded", "InternalError", "InvalidRequest", "UpstreamTimeout"} <= names
    assert all(cls.__module__ == "ailb.errors" for cls in TREE)
    budget = errors.BudgetExceeded("over")
    assert (budget.status, budget.type, budget.code, budget.grpc_status) == (
        402, "insufficient_quota", "budget_exceeded", "RESOURCE_EXHAUSTED")
    internal = InternalError()
    assert (internal.status, internal.grpc_status) == (500, "INTERNAL")
    assert internal.message == "The server had an error while processing your request."


@pytest.mark.parametrize("cls", TREE, ids=lambda cls: cls.__name__)
def test_every_error_has_an_http_status_and_a_grpc_status(cls: type[GatewayError]) -> None:
    exc = _instance(cls)
    assert isinstance(exc.status, int) and 400 <= exc.status <= 599
    assert isinstance(exc.type, str) and exc.type
    assert exc.grpc_status in Status.__members__
    assert exc.grpc_status != "OK"


@pytest.mark.parametrize("cls", TREE, ids=lambda cls: cls.__name__)
async def test_both_doors_map_every_error(cls: type[GatewayError]) -> None:
    exc = _instance(cls)
    response = error_response(exc)
    assert response.status_code == exc.status
    body = json.loads(await response.get_data())
    assert body["error"]["message"] == exc.message and body["error"]["type"] == exc.type
    mapped = grpc_error(exc)
    assert mapped.status == Status[exc.grpc_status]
    assert mapped.message == exc.message


class _Stream:
    metadata: dict[str, str] = {"x-request-id": "req-1"}


async def test_the_grpc_door_maps_ours_and_hides_bugs(caplog: pytest.LogCaptureFixture) -> None:
    async def not_found(stream: Any) -> None:
        raise NotFound("no such route", param="route_id")

    async def bug(stream: Any) -> None:
        raise RuntimeError("secret detail: /var/lib/ailb/ailb.db")

    async def already_grpc(stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "not here")

    with pytest.raises(GRPCError) as mapped:
        await guarded(not_found)(_Stream())
    assert (mapped.value.status, mapped.value.message) == (Status.NOT_FOUND, "no such route")
    with caplog.at_level(logging.ERROR, logger="ailb.grpc"):
        with pytest.raises(GRPCError) as internal:
            await guarded(bug)(_Stream())
    assert internal.value.status == Status.INTERNAL
    assert "secret" not in str(internal.value.message)
    assert internal.value.message == InternalError().message
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)
    with pytest.raises(GRPCError) as passed:
        await guarded(already_grpc)(_Stream())
    assert passed.value.status == Status.UNIMPLEMENTED


async def test_guarded_wraps_every_handler_of_a_servicer() -> None:
    async def boom(stream: Any) -> None:
        raise NotFound("gone")

    class Servicer:
        def __mapping__(self) -> dict[str, Handler]:
            return {"/x.Y/Z": Handler(boom, Cardinality.UNARY_UNARY, None, None)}

    handler = Guarded(Servicer()).__mapping__()["/x.Y/Z"]
    assert handler.cardinality == Cardinality.UNARY_UNARY
    with pytest.raises(GRPCError) as mapped:
        await handler.func(_Stream())
    assert mapped.value.status == Status.NOT_FOUND
