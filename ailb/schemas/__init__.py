"""The shapes of every public request body, declared once (msgspec Structs).

The same declarations validate requests at the doors (:mod:`ailb.schemas.check`) and make the
OpenAPI document (:mod:`ailb.schemas.openapi`). A shape checks types, ranges and required fields;
fields it does not name are left alone, so new OpenAI parameters still pass through to
OpenAI-compatible upstreams untouched (the door keeps the body as the client sent it)."""
